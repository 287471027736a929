use mesh_common::model::{ConfigError, Resource, parse_documents};

use super::*;
use crate::route::{RequestInfo, Source};

/// Compiles the HTTPRoute documents of `yaml` (bookinfo namespace unless set), giving
/// the operator's message for the first that fails.
fn compile_all(yaml: &str) -> std::result::Result<Vec<CompiledRoute>, String> {
    parse_documents("t.yaml", yaml)
        .into_iter()
        .map(|doc| {
            let doc = doc.map_err(|e| e.to_string())?;
            let Resource::HttpRoute(h) = &doc else {
                panic!("not an HTTPRoute")
            };
            compile(h).map_err(|e| {
                ConfigError::Invalid {
                    object: doc.object_ref(),
                    error: e,
                }
                .to_string()
            })
        })
        .collect()
}

fn route(name: &str, parent: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: bookinfo}}\n\
         spec:\n  parentRefs: [{parent}]\n  rules:\n{rules}"
    )
}

const REVIEWS: &str = "{group: '', kind: Service, name: reviews, port: 9080}";

fn table(yaml: &str) -> RouteTable {
    let mut t = tables(&compile_all(yaml).unwrap());
    assert_eq!(t.len(), 1, "one Service");
    t.remove(0)
}

/// The route a request selects, by name.
fn select(
    t: &RouteTable,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    port: u16,
    ns: &str,
) -> Option<String> {
    let method: http::Method = method.parse().unwrap();
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let (path, query) = path_and_query
        .split_once('?')
        .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
    let source = Source {
        namespace: Some(ns.to_owned()),
        ..Source::default()
    };
    let gateways = ["mesh".to_owned()];
    let info = RequestInfo {
        method: &method,
        scheme: "http",
        authority: "reviews:9080",
        path,
        query,
        headers: &map,
        port,
        source: &source,
        gateways: &gateways,
    };
    t.select(&info).map(|s| s.route.name.clone())
}

#[test]
fn bookinfo_jason_and_split_compile_to_one_table_for_the_service() {
    let t = table(&route(
        "reviews",
        REVIEWS,
        "  - matches: [{headers: [{name: End-User, value: jason}]}]\n    backendRefs: [{name: reviews-v2, port: 9080}]\n\
         \x20 - backendRefs: [{name: reviews-v1, port: 9080, weight: 50}, {name: reviews-v3, port: 9080, weight: 50}]\n",
    ));
    assert_eq!(
        t.hosts,
        vec![HostPattern::Exact("reviews.bookinfo.svc.cluster.local".into())]
    );
    assert_eq!(t.gateways, ["mesh"]);
    let jason = select(&t, "GET", "/reviews/0", &[("end-user", "jason")], 9080, "bookinfo");
    assert_eq!(jason.as_deref(), Some("bookinfo/reviews.rules[0].matches[0]"));
    let other = select(&t, "GET", "/reviews/0", &[], 9080, "bookinfo");
    assert_eq!(other.as_deref(), Some("bookinfo/reviews.rules[1].matches[0]"));
    let Action::Forward(split) = &t.http[1].action else {
        panic!("forward")
    };
    let d: Vec<(&str, u32, Option<u16>)> = split
        .destinations
        .iter()
        .map(|d| (d.destination.host.as_str(), d.weight, d.destination.port))
        .collect();
    assert_eq!(
        d,
        [
            ("reviews-v1.bookinfo.svc.cluster.local", 1, Some(9080)),
            ("reviews-v3.bookinfo.svc.cluster.local", 1, Some(9080))
        ],
        "50/50 is dealt as 1/1"
    );
    // Unmatched on the parent's port: 404; another port: the Service itself.
    let Action::Direct(d) = &t.http[t.http.len() - 2].action else {
        panic!("404")
    };
    assert_eq!(d.status, StatusCode::NOT_FOUND);
}

#[test]
fn precedence_is_by_match_not_by_position_across_routes() {
    let yaml = format!(
        "{}---\n{}",
        route(
            "a",
            REVIEWS,
            "  - backendRefs: [{name: reviews, port: 9080}]\n\
             \x20 - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: reviews, port: 9080}]\n\
             \x20 - matches: [{path: {type: RegularExpression, value: '/api/v[0-9]+/.*'}}]\n    backendRefs: [{name: reviews, port: 9080}]\n",
        ),
        route(
            "b",
            REVIEWS,
            "  - matches: [{path: {type: Exact, value: /api/v1}}, {path: {type: PathPrefix, value: /api/v1/}}]\n    backendRefs: [{name: reviews, port: 9080}]\n\
             \x20 - matches: [{path: {value: /api}, method: POST}, {path: {value: /api}, headers: [{name: x, value: y}, {name: z, type: RegularExpression, value: '.+'}]}]\n    backendRefs: [{name: reviews, port: 9080}]\n",
        ),
    );
    let t = table(&yaml);
    let s = |m: &str, p: &str, h: &[(&str, &str)]| select(&t, m, p, h, 9080, "bookinfo").unwrap();
    assert_eq!(
        s("GET", "/api/v1", &[]),
        "bookinfo/b.rules[0].matches[0]",
        "exact first"
    );
    assert_eq!(
        s("GET", "/api/v1/x", &[]),
        "bookinfo/b.rules[0].matches[1]",
        "longest prefix"
    );
    assert_eq!(
        s("POST", "/api/x", &[]),
        "bookinfo/b.rules[1].matches[0]",
        "method before headers"
    );
    assert_eq!(
        s("GET", "/api/x", &[("x", "y"), ("z", "1")]),
        "bookinfo/b.rules[1].matches[1]"
    );
    assert_eq!(s("GET", "/api/x", &[]), "bookinfo/a.rules[1].matches[0]");
    assert_eq!(
        s("GET", "/apix", &[]),
        "bookinfo/a.rules[0].matches[0]",
        "PathPrefix is element-wise"
    );
    // Istio ranks a regex below every prefix, `/` included: this one is shadowed.
    assert_eq!(s("GET", "/api/v2/x", &[]), "bookinfo/a.rules[1].matches[0]");
}

#[test]
fn query_method_and_regex_header_matches() {
    let t = table(&route(
        "q",
        REVIEWS,
        "  - matches: [{queryParams: [{name: v, value: '2'}], method: GET, headers: [{name: Agent, type: RegularExpression, value: 'cur.*'}]}]\n    backendRefs: [{name: reviews, port: 9080}]\n",
    ));
    assert!(
        select(&t, "GET", "/x?v=2", &[("agent", "curl/8")], 9080, "bookinfo")
            .unwrap()
            .contains("rules[0]")
    );
    for (m, p, h) in [
        ("GET", "/x?v=3", "curl"),
        ("PUT", "/x?v=2", "curl"),
        ("GET", "/x?v=2", "wget"),
    ] {
        let got = select(&t, m, p, &[("agent", h)], 9080, "bookinfo").unwrap();
        assert!(got.contains("no HTTPRoute match"), "{m} {p} {h}: {got}");
    }
}

#[test]
fn filters_compile_to_the_engine_features() {
    let t = table(&route(
        "f",
        REVIEWS,
        "  - matches: [{path: {value: /old}}]\n    filters:\n\
         \x20   - {type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}, hostname: example.com}}\n\
         \x20 - matches: [{path: {value: /v1}}]\n    filters:\n\
         \x20   - {type: URLRewrite, urlRewrite: {hostname: reviews.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}\n\
         \x20   - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: '1'}], add: [{name: x-b, value: '2'}], remove: [x-c]}}\n\
         \x20   - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-r, value: '3'}]}}\n\
         \x20   - {type: RequestMirror, requestMirror: {backendRef: {name: ratings, port: 9080}, fraction: {numerator: 1, denominator: 4}}}\n\
         \x20   - {type: RequestMirror, requestMirror: {backendRef: {name: details, port: 9080}}}\n\
         \x20   backendRefs: [{name: reviews, port: 9080, filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-v, value: v1}]}}]}]\n\
         \x20   timeouts: {request: 10s, backendRequest: 2s}\n",
    ));
    let Action::Redirect(r) = &t.http[0].action else {
        panic!("redirect")
    };
    assert_eq!(r.code, StatusCode::FOUND);
    assert_eq!(
        r.location("http", "reviews", 9080, "/old/a?q=1"),
        "http://example.com:9080/new/a?q=1"
    );
    let rw = &t.http[1];
    assert_eq!(
        rw.rewrite
            .as_ref()
            .unwrap()
            .path("/v1/items", rw.matches[0].uri.as_ref(), false),
        "/v2/items"
    );
    assert_eq!(
        rw.rewrite.as_ref().unwrap().authority.as_deref(),
        Some("reviews.internal")
    );
    assert_eq!(rw.headers.request.set[0].0.as_str(), "x-a");
    assert_eq!((rw.headers.request.add.len(), rw.headers.request.remove.len()), (1, 1));
    assert_eq!(rw.headers.response.set.len(), 1);
    assert_eq!(rw.mirrors.len(), 2);
    assert_eq!(rw.mirrors[0].destination.host, "ratings.bookinfo.svc.cluster.local");
    assert_eq!(rw.mirrors[0].percentage, Percentage::new(25.0).unwrap());
    assert_eq!(rw.mirrors[1].percentage, Percentage::ALL);
    assert_eq!(rw.timeout, Some(std::time::Duration::from_secs(10)));
    assert_eq!(rw.retries.per_try_timeout, Some(std::time::Duration::from_secs(2)));
    let Action::Forward(split) = &rw.action else {
        panic!("forward")
    };
    assert_eq!(split.destinations[0].headers.response.add.len(), 1);
}

#[test]
fn no_backends_or_zero_weights_answer_500_and_big_weights_are_scaled() {
    let t = table(&route(
        "w",
        REVIEWS,
        "  - matches: [{path: {value: /none}}]\n\
         \x20 - matches: [{path: {value: /zero}}]\n    backendRefs: [{name: reviews, port: 9080, weight: 0}]\n\
         \x20 - backendRefs: [{name: reviews-v1, port: 9080, weight: 999999}, {name: reviews-v2, port: 9080, weight: 1}, {name: reviews-v3, port: 9080, weight: 0}]\n",
    ));
    for i in [0, 1] {
        let Action::Direct(d) = &t.http[i].action else {
            panic!("direct")
        };
        assert_eq!(d.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    let Action::Forward(split) = &t.http[2].action else {
        panic!("forward")
    };
    let w: Vec<u32> = split.destinations.iter().map(|d| d.weight).collect();
    assert_eq!(w, [9999, 1, 0]);
}

#[test]
fn consumer_routes_match_their_own_namespace_only() {
    let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: c, namespace: shop}\n\
                spec:\n  parentRefs: [{group: '', kind: Service, name: reviews, namespace: bookinfo}]\n  rules:\n  - backendRefs: [{name: cart, port: 80}]\n";
    let t = table(yaml);
    assert_eq!(
        t.hosts,
        vec![HostPattern::Exact("reviews.bookinfo.svc.cluster.local".into())]
    );
    assert!(select(&t, "GET", "/", &[], 9080, "shop").is_some());
    assert!(
        select(&t, "GET", "/", &[], 9080, "bookinfo").is_none(),
        "no port parent: no fallback, 404"
    );
}

#[test]
fn bad_input_names_object_and_path() {
    let cases = [
        (
            "  - matches: [{path: {type: RegularExpression, value: '(unclosed'}}]\n    backendRefs: [{name: reviews, port: 9080}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].matches[0].path.value: unclosed group",
        ),
        (
            "  - matches: [{path: {type: Exact, value: /a}}]\n    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]\n    backendRefs: [{name: reviews, port: 9080}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].matches[0].path: ReplacePrefixMatch needs a PathPrefix path match",
        ),
        (
            "  - backendRefs: [{name: reviews, namespace: other, port: 9080}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].backendRefs[0].namespace: cross-namespace backends need a ReferenceGrant",
        ),
        (
            "  - backendRefs: [{name: reviews}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].backendRefs[0].port: port is required for a Service backend",
        ),
        (
            "  - backendRefs: [{name: bucket, group: storage.example.com, kind: Bucket}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].backendRefs[0].kind: only Service backends",
        ),
        (
            "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].filters[0].requestRedirect.statusCode: status code 307 is not 301 or 302",
        ),
        (
            "  - filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]\n    backendRefs: [{name: reviews, port: 9080}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].backendRefs: a RequestRedirect rule cannot have backendRefs",
        ),
        (
            "  - filters: [{type: RequestHeaderModifier}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].filters[0].requestHeaderModifier: requestHeaderModifier is required by its type",
        ),
        (
            "  - filters: [{type: Teleport}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].filters[0].type: unknown filter type `Teleport`",
        ),
        (
            "  - timeouts: {request: 1s, backendRequest: 2s}\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].timeouts.backendRequest: backendRequest must not be longer than request",
        ),
        (
            "  - matches: [{path: {value: api}}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].matches[0].path.value: a path must start with `/`",
        ),
        (
            "  - backendRefs: [{name: reviews, port: 9080, wieght: 5}]\n",
            "HTTPRoute bookinfo/bad: spec.rules[0].backendRefs[0].wieght: unknown field `wieght`",
        ),
    ];
    for (rules, want) in cases {
        let got = compile_all(&route("bad", REVIEWS, rules)).map(|_| ()).unwrap_err();
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
    }
}
