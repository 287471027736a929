//! Table-driven tests of every match field and route option, against real hyper
//! backends (reviews v1/v2/v3 on their own loopback addresses) through a real waypoint.

mod support;

use std::time::Duration;

use support::{Lab, Reply, reviews_vs};

/// One request of a case and what must hold for its reply.
struct Probe {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Last octet of the source address inside the lab block (`None`: 127.0.0.1).
    from: Option<u8>,
    expect: &'static str,
    check: fn(&Reply) -> bool,
}

const fn get(
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expect: &'static str,
    check: fn(&Reply) -> bool,
) -> Probe {
    Probe {
        method: "GET",
        host: "reviews:9080",
        path,
        headers,
        from: None,
        expect,
        check,
    }
}

fn v(r: &Reply, version: &str) -> bool {
    r.status == 200 && r.version() == version
}

fn cases() -> Vec<(&'static str, String, Vec<Probe>)> {
    let to = |subset: &str| format!("    route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n");
    let fallback = "  - route: [{destination: {host: reviews, subset: v1}}]\n".to_string();
    let rule = |m: &str| format!("  - match: [{m}]\n{}{fallback}", to("v2"));
    vec![
        ("uri exact", rule("{uri: {exact: /exact}}"), vec![
            get("/exact", &[], "v2", |r| v(r, "v2")),
            get("/exact/more", &[], "v1", |r| v(r, "v1")),
        ]),
        ("uri prefix", rule("{uri: {prefix: /pre}}"), vec![
            get("/prefix/x", &[], "v2", |r| v(r, "v2")),
            get("/other", &[], "v1", |r| v(r, "v1")),
        ]),
        ("uri regex (whole path, query ignored)", rule("{uri: {regex: '/re/[0-9]+'}}"), vec![
            get("/re/42?x=1", &[], "v2", |r| v(r, "v2")),
            get("/re/42a", &[], "v1", |r| v(r, "v1")),
        ]),
        ("ignoreUriCase", rule("{uri: {prefix: /CASE}, ignoreUriCase: true}"), vec![
            get("/case/x", &[], "v2", |r| v(r, "v2")),
        ]),
        ("scheme", rule("{scheme: {exact: http}}"), vec![get("/", &[], "v2", |r| v(r, "v2"))]),
        ("method", rule("{method: {exact: POST}}"), vec![
            Probe { method: "POST", ..get("/", &[], "v2", |r| v(r, "v2")) },
            get("/", &[], "v1", |r| v(r, "v1")),
        ]),
        ("authority", rule("{authority: {regex: 'reviews(:9080)?'}}"), vec![
            get("/", &[], "v2", |r| v(r, "v2")),
            Probe { host: "reviews.bookinfo.svc.cluster.local:9080", ..get("/", &[], "v1", |r| v(r, "v1")) },
        ]),
        ("headers exact, case-insensitive name", rule("{headers: {End-User: {exact: jason}}}"), vec![
            get("/", &[("end-user", "jason")], "v2", |r| v(r, "v2")),
            get("/", &[("end-user", "Jason")], "v1", |r| v(r, "v1")),
            get("/", &[], "v1", |r| v(r, "v1")),
        ]),
        ("headers prefix and regex", rule("{headers: {x-a: {prefix: ab}, x-b: {regex: '[0-9]{3}'}}}"), vec![
            get("/", &[("x-a", "abc"), ("x-b", "123")], "v2", |r| v(r, "v2")),
            get("/", &[("x-a", "abc"), ("x-b", "1234")], "v1", |r| v(r, "v1")),
        ]),
        ("headers presence", rule("{headers: {x-present: {}}}"), vec![
            get("/", &[("x-present", "anything")], "v2", |r| v(r, "v2")),
            get("/", &[], "v1", |r| v(r, "v1")),
        ]),
        ("withoutHeaders", rule("{withoutHeaders: {x-skip: {}}}"), vec![
            get("/", &[], "v2", |r| v(r, "v2")),
            get("/", &[("X-Skip", "1")], "v1", |r| v(r, "v1")),
        ]),
        ("queryParams", rule("{queryParams: {user: {exact: jason}, id: {regex: '[0-9]+'}}}"), vec![
            get("/p?user=jason&id=7", &[], "v2", |r| v(r, "v2")),
            get("/p?user=jason&id=x", &[], "v1", |r| v(r, "v1")),
        ]),
        ("port", rule("{port: 9080}"), vec![
            get("/", &[], "v2", |r| v(r, "v2")),
            Probe { host: "reviews:9999", ..get("/", &[], "v1", |r| v(r, "v1")) },
        ]),
        ("sourceLabels", rule("{sourceLabels: {app: productpage}}"), vec![
            Probe { from: Some(50), ..get("/", &[], "v2", |r| v(r, "v2")) },
            Probe { from: Some(51), ..get("/", &[], "v1", |r| v(r, "v1")) },
        ]),
        ("sourceNamespace", rule("{sourceNamespace: bookinfo}"), vec![
            Probe { from: Some(50), ..get("/", &[], "v2", |r| v(r, "v2")) },
            get("/", &[], "v1", |r| v(r, "v1")),
        ]),
        ("gateways: a block bound to another gateway does not apply to the mesh", rule("{gateways: [ingress], uri: {prefix: /}}"), vec![
            get("/", &[], "v1", |r| v(r, "v1")),
        ]),
        ("match blocks OR'ed", format!("  - match: [{{uri: {{exact: /a}}}}, {{headers: {{x-b: {{exact: '1'}}}}}}]\n{}{fallback}", to("v2")), vec![
            get("/a", &[], "v2", |r| v(r, "v2")),
            get("/z", &[("x-b", "1")], "v2", |r| v(r, "v2")),
            get("/z", &[], "v1", |r| v(r, "v1")),
        ]),
        ("fields AND'ed", rule("{uri: {prefix: /a}, headers: {x-b: {exact: '1'}}}"), vec![
            get("/a", &[("x-b", "1")], "v2", |r| v(r, "v2")),
            get("/a", &[], "v1", |r| v(r, "v1")),
            get("/z", &[("x-b", "1")], "v1", |r| v(r, "v1")),
        ]),
        ("first route wins", format!("  - match: [{{uri: {{prefix: /}}}}]\n{}  - match: [{{uri: {{prefix: /}}}}]\n{}", to("v3"), to("v2")), vec![
            get("/", &[], "v3", |r| v(r, "v3")),
        ]),
        ("no route matches: 404 with reason", "  - match: [{uri: {exact: /only}}]\n    route: [{destination: {host: reviews}}]\n".into(), vec![
            get("/else", &[], "404 NR", |r| r.status == 404 && r.header("x-mesh-flags") == "NR" && r.header("x-mesh-reason").contains("VirtualService bookinfo/reviews")),
        ]),
        ("unknown host: 503 with reason", fallback.clone(), vec![
            Probe { host: "ratings:9080", ..get("/", &[], "503 NR", |r| r.status == 503 && r.header("x-mesh-reason").contains("ratings.bookinfo.svc.cluster.local")) },
        ]),
        ("host forms resolve to the same service", fallback.clone(), vec![
            Probe { host: "reviews.bookinfo:9080", ..get("/", &[], "v1", |r| v(r, "v1")) },
            Probe { host: "reviews.bookinfo.svc:9080", ..get("/", &[], "v1", |r| v(r, "v1")) },
            Probe { host: "reviews.bookinfo.svc.cluster.local", ..get("/", &[], "v1", |r| v(r, "v1")) },
        ]),
        ("redirect", "  - match: [{uri: {prefix: /old}}]\n    redirect: {uri: /new, authority: details, redirectCode: 308}\n".into(), vec![
            get("/old/x", &[], "308 to details/new", |r| r.status == 308 && r.header("location") == "http://details/new"),
        ]),
        ("directResponse", "  - directResponse: {status: 503, body: {string: maintenance}}\n".into(), vec![
            get("/", &[], "503 maintenance", |r| r.status == 503 && r.body == "maintenance"),
        ]),
        ("rewrite prefix and authority", "  - match: [{uri: {prefix: /api/v1}}]\n    rewrite: {uri: /v2, authority: reviews-internal}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/api/v1/items?q=1", &[], "backend sees /v2/items?q=1 on reviews-internal", |r| v(r, "v1") && r.json()["path"] == "/v2/items?q=1" && r.json()["host"] == "reviews-internal"),
        ]),
        ("rewrite uriRegexRewrite", "  - rewrite: {uriRegexRewrite: {match: '^/svc/([^/]+)(/.*)$', rewrite: '\\2/instance/\\1'}}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/svc/foo/bar", &[], "/bar/instance/foo", |r| r.json()["path"] == "/bar/instance/foo"),
        ]),
        ("route headers request/response set/add/remove", "  - headers:\n      request: {set: {x-set: s}, add: {x-add: a}, remove: [x-drop]}\n      response: {set: {x-resp: r}, remove: [x-version]}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/", &[("x-drop", "1"), ("x-set", "old"), ("x-add", "first")], "backend sees set/add/remove; client sees response ops", |r| {
                v(r, "v1") && r.echoed("x-set") == "s" && r.echoed("x-drop").is_empty() && r.echoed("x-add") == "first,a" && r.header("x-resp") == "r" && r.header("x-version").is_empty()
            }),
        ]),
        ("per-destination headers", "  - route:\n    - destination: {host: reviews, subset: v2}\n      headers: {request: {set: {x-dest: v2}}, response: {add: {x-dest-resp: yes}}}\n".into(), vec![
            get("/", &[], "x-dest on both sides", |r| v(r, "v2") && r.echoed("x-dest") == "v2" && r.header("x-dest-resp") == "yes"),
        ]),
        ("timeout", "  - timeout: 200ms\n    retries: {attempts: 0}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            // 504 itself proves the timeout fired: the held backend never answers.
            get("/?hold=1", &[], "504 UT", |r| r.status == 504 && r.header("x-mesh-flags").contains("UT")),
            get("/", &[], "fast requests pass", |r| v(r, "v1")),
        ]),
        ("perTryTimeout retried within route timeout", "  - timeout: 5s\n    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/?hold=1", &[], "504 after 3 per-try timeouts", |r| r.status == 504 && r.header("x-mesh-reason").contains("per-try timeout")),
        ]),
        ("retries on 5xx give up after attempts", "  - retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: reviews}}]\n".into(), vec![
            get("/?status=503", &[], "503 after retries (all endpoints fail)", |r| r.status == 503 && r.version() != "-"),
        ]),
        ("retryOn status code", "  - retries: {attempts: 1, retryOn: '418'}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/?status=418", &[], "418 (retried once, still 418)", |r| r.status == 418),
        ]),
        ("fault abort", "  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}\n    retries: {attempts: 0}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/", &[], "418 FI", |r| r.status == 418 && r.header("x-mesh-flags").contains("FI") && r.header("x-mesh-reason") == "fault filter abort"),
        ]),
        ("fault abort legacy-free percent 0 never aborts", "  - fault: {abort: {httpStatus: 500, percentage: {value: 0}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/", &[], "v1", |r| v(r, "v1")),
        ]),
        ("fault delay (legacy percent)", "  - fault: {delay: {fixedDelay: 300ms, percent: 100}}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/", &[], "v1 after >= 300ms, flagged DI", |r| v(r, "v1") && r.elapsed >= Duration::from_millis(300) && r.header("x-mesh-flags").contains("DI")),
        ]),
        ("fault delay bounded by route timeout", "  - timeout: 200ms\n    fault: {delay: {fixedDelay: 5s, percentage: {value: 100}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/", &[], "504 (the delay would have ended in 200)", |r| r.status == 504 && r.header("x-mesh-flags").contains("UT")),
        ]),
        ("grpc abort", "  - fault: {abort: {grpcStatus: UNAVAILABLE}}\n    retries: {attempts: 0}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            get("/", &[], "grpc-status 14", |r| r.status == 200 && r.header("grpc-status") == "14"),
        ]),
        ("corsPolicy", "  - corsPolicy: {allowOrigins: [{exact: 'https://a.example'}, {regex: 'https://.*\\.b\\.example'}], allowMethods: [GET, POST], allowHeaders: [x-h], exposeHeaders: [x-e], maxAge: 24h, allowCredentials: true}\n    route: [{destination: {host: reviews, subset: v1}}]\n".into(), vec![
            Probe { method: "OPTIONS", ..get("/", &[("origin", "https://x.b.example"), ("access-control-request-method", "POST")], "preflight answered here", |r| {
                r.status == 200 && r.header("access-control-allow-origin") == "https://x.b.example" && r.header("access-control-allow-methods") == "GET,POST" && r.header("access-control-max-age") == "86400" && r.version() == "-"
            }) },
            get("/", &[("origin", "https://a.example")], "actual request decorated", |r| v(r, "v1") && r.header("access-control-allow-origin") == "https://a.example" && r.header("access-control-expose-headers") == "x-e" && r.header("access-control-allow-credentials") == "true"),
            get("/", &[("origin", "https://evil.example")], "other origin not decorated", |r| v(r, "v1") && r.header("access-control-allow-origin").is_empty()),
        ]),
        ("destination port selector", "  - route: [{destination: {host: reviews, subset: v3, port: {number: 9080}}}]\n".into(), vec![
            get("/", &[], "v3", |r| v(r, "v3")),
        ]),
        ("undefined subset answers 503 with reason", "  - route: [{destination: {host: reviews, subset: v9}}]\n".into(), vec![
            get("/", &[], "503 naming subset v9", |r| r.status == 503 && r.header("x-mesh-reason").contains("subset `v9`")),
        ]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_field_and_route_option() {
    let lab = Lab::bookinfo().await;
    let mut failures = Vec::new();
    for (name, http, probes) in cases() {
        lab.apply("vs.yaml", &reviews_vs(&http));
        let snap = lab.waypoint.config.load();
        assert!(
            snap.rejected.is_empty(),
            "case `{name}`: config rejected: {:?}",
            snap.rejected
        );
        for p in probes {
            let mut req = lab.request(p.host, p.path).method(p.method);
            for (k, val) in p.headers {
                req = req.header(*k, *val);
            }
            let reply = match p.from {
                Some(last) => lab.send_from(lab.ip(last), req).await,
                None => lab.send(req).await,
            };
            if !(p.check)(&reply) {
                failures.push(format!(
                    "case `{name}` {} {}: expected {}; got {} {:?} {}",
                    p.method, p.path, p.expect, reply.status, reply.headers, reply.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_virtual_service_is_routed_to_itself() {
    let lab = Lab::bookinfo().await;
    let seen: std::collections::BTreeSet<String> = {
        let mut s = std::collections::BTreeSet::new();
        for _ in 0..60 {
            s.insert(lab.get("/").await.version());
        }
        s
    };
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec!["v1", "v2", "v3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_requests_with_shadow_authority() {
    let lab = Lab::bookinfo().await;
    lab.apply("vs.yaml", &reviews_vs("  - route: [{destination: {host: reviews, subset: v1}}]\n    mirror: {host: reviews, subset: v3}\n    mirrorPercentage: {value: 100}\n"));
    for _ in 0..5 {
        assert_eq!(lab.get("/m").await.version(), "v1");
    }
    let v3 = &lab.reviews[2];
    assert!(
        support::eventually(Duration::from_secs(5), || std::future::ready(v3.hits() >= 5)).await,
        "mirror got {} copies",
        v3.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancers() {
    let lab = Lab::bookinfo().await;
    let dr = |lb: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n  trafficPolicy: {{loadBalancer: {lb}}}\n"
        )
    };
    lab.apply(
        "bookinfo.yaml",
        support::bookinfo_yaml(lab.block, lab.port)
            .split("---\napiVersion: networking.istio.io")
            .next()
            .unwrap_or_default(),
    );

    lab.apply("dr.yaml", &dr("{simple: ROUND_ROBIN}"));
    let rr: Vec<String> = futures_seq(&lab, 6, &[]).await;
    assert_eq!(rr[0..3], rr[3..6], "round robin cycles: {rr:?}");
    assert_eq!(rr[0..3].iter().collect::<std::collections::BTreeSet<_>>().len(), 3);

    // Istio's default ring, an explicit ring and Maglev (a prime table).
    for algorithm in ["", ", ringHash: {minimumRingSize: 4096}", ", maglev: {tableSize: 251}"] {
        lab.apply(
            "dr.yaml",
            &dr(&format!("{{consistentHash: {{httpHeaderName: x-user{algorithm}}}}}")),
        );
        let snap = lab.waypoint.config.load();
        assert!(snap.rejected.is_empty(), "{algorithm}: {:?}", snap.rejected);
        for user in ["alice", "bob", "carol"] {
            let seen: std::collections::BTreeSet<String> =
                futures_seq(&lab, 20, &[("x-user", user)]).await.into_iter().collect();
            assert_eq!(seen.len(), 1, "{algorithm}: user {user} spread over {seen:?}");
        }
    }

    lab.apply(
        "dr.yaml",
        &dr("{consistentHash: {httpCookie: {name: sticky, ttl: 60s}}}"),
    );
    let first = lab.get("/").await;
    let cookie = first
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.starts_with("sticky="), "set-cookie minted: {:?}", first.headers);
    let seen: std::collections::BTreeSet<String> =
        futures_seq(&lab, 20, &[("cookie", Box::leak(cookie.into_boxed_str()))])
            .await
            .into_iter()
            .collect();
    assert_eq!(seen.len(), 1);

    lab.apply("dr.yaml", &dr("{consistentHash: {httpQueryParameterName: u}}"));
    let a: std::collections::BTreeSet<String> = {
        let mut s = std::collections::BTreeSet::new();
        for _ in 0..20 {
            s.insert(lab.get("/?u=42").await.version());
        }
        s
    };
    assert_eq!(a.len(), 1);

    lab.apply("dr.yaml", &dr("{consistentHash: {useSourceIp: true}}"));
    let s: std::collections::BTreeSet<String> = futures_seq(&lab, 20, &[]).await.into_iter().collect();
    assert_eq!(s.len(), 1, "one source IP, one endpoint");

    lab.apply("dr.yaml", &dr("{simple: RANDOM}"));
    let seq = futures_seq(&lab, 90, &[]).await;
    let s: std::collections::BTreeSet<&String> = seq.iter().collect();
    assert_eq!(s.len(), 3);
    // Round robin never picks the same endpoint twice in a row; random does, with
    // probability 1 - (2/3)^89 over 90 picks from 3.
    assert!(
        seq.windows(2).any(|w| w[0] == w[1]),
        "RANDOM behaved like round robin: {seq:?}"
    );

    lab.apply("dr.yaml", &dr("{simple: LEAST_REQUEST}"));
    least_request_avoids_the_busy_endpoint(&lab).await;

    lab.apply(
        "dr.yaml",
        &dr("{simple: PASSTHROUGH}").replace("host: reviews", "host: reviews-ip"),
    );
    lab.apply("vip.yaml", &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: reviews-ip, namespace: bookinfo}}\nspec:\n  clusterIP: {}\n  selector: {{app: reviews}}\n  ports: [{{port: 9080, targetPort: {}}}]\n", lab.ip(3), lab.port));
    let host = format!("{}:{}", lab.ip(3), lab.port);
    for _ in 0..10 {
        let r = lab.send(lab.request(&host, "/")).await;
        assert_eq!(r.version(), "v2", "passthrough keeps the original destination: {r:?}");
    }
}

/// Parks requests on every endpoint (`hold=1`), releases all but v1's, then sends 60
/// requests one at a time: least-request must send (almost) none to the busy v1, where
/// round robin or random would send about 20.
async fn least_request_avoids_the_busy_endpoint(lab: &Lab) {
    let held: Vec<_> = (0..9)
        .map(|_| {
            let req = lab
                .request("reviews:9080", "/?hold=1")
                .body(http_body_util::Full::new(bytes::Bytes::new()));
            tokio::spawn(lab.client.request(req.expect("request")))
        })
        .collect();
    let inflight = |i: usize| lab.reviews[i].inflight.load(std::sync::atomic::Ordering::Relaxed);
    let all_parked = support::eventually(Duration::from_secs(10), || {
        std::future::ready((0..3).map(inflight).sum::<usize>() == 9)
    })
    .await;
    assert!(
        all_parked,
        "9 held requests parked: {:?}",
        (0..3).map(inflight).collect::<Vec<_>>()
    );
    assert!(inflight(0) > 0, "least-request spreads parked requests, v1 got none");
    for i in 1..3 {
        lab.reviews[i].gate.add_permits(inflight(i));
    }
    let drained = support::eventually(Duration::from_secs(10), || {
        std::future::ready(inflight(1) + inflight(2) == 0)
    })
    .await;
    assert!(drained, "v2/v3 finished their parked requests");
    let before = lab.reviews[0].hits();
    let seq = futures_seq(lab, 60, &[]).await;
    let to_busy = lab.reviews[0].hits() - before;
    assert!(
        to_busy < 10,
        "least-request sent {to_busy} of 60 to the endpoint with parked requests: {seq:?}"
    );
    lab.reviews[0].gate.add_permits(inflight(0));
    for h in held {
        let reply = h.await.expect("task").expect("held request answered");
        assert_eq!(reply.status(), 200);
    }
}

async fn futures_seq(lab: &Lab, n: usize, headers: &[(&'static str, &'static str)]) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut req = lab.request("reviews:9080", "/");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        out.push(lab.send(req).await.version());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_mode_applies_only_virtual_services_bound_to_its_gateway() {
    let lab = Lab::bookinfo_serving(&["bookinfo-gateway"]).await;
    let vs = |name: &str, gateways: &str, subset: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  hosts: ['*']\n  gateways: {gateways}\n  http:\n  - match: [{{uri: {{prefix: /{name}}}}}]\n    route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
        )
    };
    lab.apply("edge.yaml", &vs("edge", "[bookinfo-gateway]", "v2"));
    // Named to win a tie between the two `*` hosts, were mesh-only routes considered.
    lab.apply("mesh.yaml", &vs("aaa-inside", "[mesh]", "v3"));
    let r = lab.send(lab.request("bookinfo.example.com", "/edge")).await;
    assert_eq!(r.version(), "v2", "{r:?}");
    let r = lab.send(lab.request("bookinfo.example.com", "/aaa-inside")).await;
    assert_eq!(r.status, 404, "mesh-only routes are not served at the gateway: {r:?}");
}
