//! e2e: Bookinfo on the local mesh (issues 6 and 8), Istio's traffic-management tasks
//! with Istio's own YAML. Real node daemons and eBPF capture, the waypoint in its own
//! pod speaking HBONE, one process per app pod. Needs root; each test builds its own
//! cluster (RAII teardown, also on failure).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use xtask::bookinfo::{self, Lab, LabOptions, Page, pages, tally};
use xtask::harness::{Cluster, FabricCapture, metric_sum, wait_for};

const JASON: &[(&str, &str)] = &[("end-user", "jason")];

/// Not being root fails the test with the harness's reason, it never passes silently.
fn lab() -> (Cluster, Lab) {
    let cluster = bookinfo::cluster().expect("bookinfo cluster");
    let lab = Lab::start(&cluster, LabOptions::default()).expect("bookinfo lab");
    (cluster, lab)
}

fn apply(c: &Cluster, lab: &Lab, files: &[&str]) {
    for f in files {
        lab.apply_sample(c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

fn only(version: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(version.to_owned(), n)])
}

fn share(t: &BTreeMap<String, usize>, version: &str, total: usize) -> f64 {
    100.0 * *t.get(version).unwrap_or(&0) as f64 / total as f64
}

#[test]
fn traffic_shifting_and_request_routing_follow_istios_samples() {
    let (c, lab) = lab();
    // The waypoint and the gateway asked the CA for their own identities (issue 15).
    let log = lab.mesh.ca.log();
    for (caller, identity) in [
        ("bookinfo/waypoint", "spiffe://cluster.local/ns/bookinfo/sa/waypoint"),
        (
            "istio-system/istio-ingressgateway",
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
        ),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("certificate issued") && l.contains(&format!("caller={caller}")))
            .unwrap_or_else(|| panic!("no certificate issued to {caller}:\n{log}"));
        assert!(line.contains(identity), "{line}");
        eprintln!("FIGURE CA: {line}");
    }
    apply(&c, &lab, &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    let t = tally(&pages(&c, 200, 8, &[]));
    eprintln!("FIGURE all-v1: {t:?}");
    assert_eq!(t, only("reviews-v1", 200), "all-v1");

    apply(&c, &lab, &["virtual-service-reviews-v2-v3.yaml"]);
    let t = tally(&pages(&c, 200, 8, &[]));
    eprintln!("FIGURE reviews-v2-v3: {t:?}");
    assert_eq!(t.get("reviews-v1"), None, "no v1 and no errors: {t:?}");
    for v in ["reviews-v2", "reviews-v3"] {
        let s = share(&t, v, 200);
        assert!((42.0..=58.0).contains(&s), "{v} got {s:.1}% (50 ± 8): {t:?}");
    }

    apply(&c, &lab, &["virtual-service-reviews-v3.yaml"]);
    assert_eq!(tally(&pages(&c, 200, 8, &[])), only("reviews-v3", 200), "reviews-v3");

    apply(&c, &lab, &["virtual-service-reviews-test-v2.yaml"]);
    assert_eq!(tally(&pages(&c, 200, 8, JASON)), only("reviews-v2", 200), "jason on v2");
    assert_eq!(
        tally(&pages(&c, 200, 8, &[])),
        only("reviews-v1", 200),
        "everyone else on v1"
    );

    // ratings-test-abort: jason's ratings calls get 500; others (on v3) see their stars.
    apply(
        &c,
        &lab,
        &[
            "virtual-service-reviews-v3.yaml",
            "virtual-service-ratings-test-abort.yaml",
        ],
    );
    let jason = pages(&c, 200, 8, JASON);
    assert!(
        jason
            .iter()
            .all(|p| p.ok() && p.body.contains("Ratings service is currently unavailable")),
        "jason sees ratings unavailable: {:?}",
        first_bad(&jason, |p| p.body.contains("Ratings service is currently unavailable"))
    );
    let others = pages(&c, 200, 8, &[]);
    assert!(
        others.iter().all(|p| p.ok() && p.body.contains("stars-red")),
        "others see red stars: {:?}",
        first_bad(&others, |p| p.body.contains("stars-red"))
    );

    apply(&c, &lab, &["virtual-service-reviews-95-5.yaml"]);
    let t = tally(&pages(&c, 2000, 16, &[]));
    eprintln!("FIGURE reviews-95-5 over 2000: {t:?}");
    assert_eq!(
        t.values().sum::<usize>(),
        t.get("reviews-v2").unwrap_or(&0) + t.get("reviews-v3").unwrap_or(&0),
        "only v2 and v3: {t:?}"
    );
    let s = share(&t, "reviews-v3", 2000);
    assert!((3.5..=6.5).contains(&s), "new version got {s:.2}% (5 ± 1.5): {t:?}");
}

fn first_bad(pages: &[Page], good: impl Fn(&Page) -> bool) -> Option<String> {
    pages.iter().find(|p| !(p.ok() && good(p))).map(|p| {
        format!(
            "status {} reviews {:?}: {}",
            p.status,
            p.reviews,
            p.body.chars().take(600).collect::<String>()
        )
    })
}

#[test]
fn ratings_delay_for_jason_trips_productpages_timeout_while_others_stay_fast() {
    let (c, lab) = lab();
    apply(
        &c,
        &lab,
        &[
            "destination-rule-all.yaml",
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-test-v2.yaml",
            "virtual-service-ratings-test-delay.yaml",
        ],
    );
    // 7 s per ratings call: many clients at once keep the test short.
    let jason = pages(&c, 200, 50, JASON);
    let slowest_fast = jason.iter().map(|p| p.took).min().unwrap_or_default();
    eprintln!("FIGURE ratings-test-delay: jason's fastest page took {slowest_fast:?}");
    for p in &jason {
        assert_eq!(
            p.status, 200,
            "productpage answers even when reviews time out: {}",
            p.body
        );
        assert!(p.took >= Duration::from_secs(7), "jason's page took {:?}", p.took);
        assert!(
            p.body.contains("Sorry, product reviews are currently unavailable"),
            "the real Bookinfo's error: {}",
            p.body
        );
    }
    let others = pages(&c, 200, 8, &[]);
    let slowest = others.iter().map(|p| p.took).max().unwrap_or_default();
    eprintln!("FIGURE ratings-test-delay: others' slowest page took {slowest:?}");
    assert_eq!(tally(&others), only("reviews-v1", 200));
    assert!(
        slowest < Duration::from_secs(7),
        "the delay applies to jason only; others' slowest {slowest:?}"
    );
}

#[test]
fn blocking_and_restoring_a_version_under_load_fails_no_request() {
    let (c, lab) = lab();
    apply(
        &c,
        &lab,
        &[
            "destination-rule-all.yaml",
            "virtual-service-all-v1.yaml",
            "virtual-service-reviews-v2-v3.yaml",
        ],
    );
    let stop = AtomicBool::new(false);
    let during = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut all = Vec::new();
            // Bounded: stops when told, or after 3,000 pages.
            while !stop.load(Ordering::Relaxed) && all.len() < 3000 {
                all.extend(pages(&c, 8, 8, &[]));
            }
            all
        });
        let blocked = lab.block(&c, "reviews", "v3");
        let after_block = blocked.as_ref().ok().map(|_| tally(&pages(&c, 100, 8, &[])));
        let restored = lab.restore(&c, "reviews");
        let after_restore = restored.as_ref().ok().map(|_| tally(&pages(&c, 200, 8, &[])));
        stop.store(true, Ordering::Relaxed);
        let all = load.join().expect("load thread");
        (blocked, after_block, restored, after_restore, all)
    });
    let (blocked, after_block, restored, after_restore, all) = during;
    blocked.expect("block reviews v3");
    restored.expect("restore reviews");
    let after_block = after_block.unwrap_or_default();
    eprintln!(
        "FIGURE block v3: after block {after_block:?}; after restore {after_restore:?}; {} pages under load",
        all.len()
    );
    assert_eq!(
        after_block.get("reviews-v3"),
        None,
        "v3 gets nothing once blocked: {after_block:?}"
    );
    assert!(
        after_block.get("reviews-v2").is_some_and(|n| *n == 100),
        "v2 takes all: {after_block:?}"
    );
    assert!(
        after_restore
            .unwrap_or_default()
            .get("reviews-v3")
            .is_some_and(|n| *n > 0),
        "v3 serves again after restore"
    );
    let failed: Vec<&Page> = all.iter().filter(|p| !p.ok()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the changes, first: {:?}",
        failed.len(),
        all.len(),
        failed.first().map(|p| &p.body)
    );
}

#[test]
fn every_hop_between_pods_is_hbone_on_15008() {
    let (c, lab) = lab();
    apply(
        &c,
        &lab,
        &["destination-rule-all.yaml", "virtual-service-reviews-v2-v3.yaml"],
    );
    let entry = lab.entry(&c).expect("entry");
    let client_ip = c.pod(bookinfo::CLIENT.0, bookinfo::CLIENT.1).expect("client pod").ip;
    let capture = FabricCapture::start(&c).expect("fabric capture");
    let t = tally(&pages(&c, 50, 4, &[]));
    let (lines, _) = capture.finish().expect("fabric capture");
    assert_eq!(
        t.values().sum::<usize>(),
        t.get("reviews-v2").unwrap_or(&0) + t.get("reviews-v3").unwrap_or(&0),
        "{t:?}"
    );
    // The user's own request enters the mesh at the entry point in plaintext, as with
    // any ingress; every other packet between nodes is TLS on 15008.
    let entry_hop = |a: &str, b: &str| {
        let is = |x: &str, ip: String, port: Option<u16>| {
            x.starts_with(&format!("{ip}.")) && port.is_none_or(|p| x.ends_with(&format!(".{p}")))
        };
        (is(a, client_ip.to_string(), None) && is(b, entry.ip().to_string(), Some(entry.port())))
            || (is(b, client_ip.to_string(), None) && is(a, entry.ip().to_string(), Some(entry.port())))
    };
    let mut mesh_packets = 0;
    for l in &lines {
        let Some((a, b)) = xtask::harness::fabric::endpoints(l) else {
            continue;
        };
        if entry_hop(&a, &b) {
            continue;
        }
        assert!(
            a.ends_with(".15008") || b.ends_with(".15008"),
            "non-HBONE packet between nodes: {l}"
        );
        mesh_packets += 1;
    }
    assert!(
        mesh_packets > 0,
        "reviews on node2 must be reached across the fabric: {} lines",
        lines.len()
    );
    // The node daemons count every hop as mTLS with SPIFFE principals on both ends.
    for node in ["node1", "node2"] {
        let m = lab.mesh.metrics(&c, node).expect("metrics");
        let mtls = metric_sum(
            &m,
            "istio_tcp_connections_opened_total",
            &["connection_security_policy=\"mutual_tls\""],
        );
        eprintln!("FIGURE {node}: {mtls} mutual_tls connections opened");
        assert!(mtls > 0, "{node} counted no mTLS connection:\n{m}");
    }
    // The namespace has `istio.io/ingress-use-waypoint: "true"`: the gateway's requests
    // reach productpage through the waypoint, so productpage's peer is the waypoint.
    let m1 = lab.mesh.metrics(&c, "node1").expect("metrics");
    let via_waypoint = metric_sum(
        &m1,
        "istio_tcp_connections_opened_total",
        &[
            "reporter=\"destination\"",
            "destination_workload=\"productpage-v1\"",
            "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/waypoint\"",
        ],
    );
    assert!(
        via_waypoint > 0,
        "productpage received no HBONE connection from the waypoint's identity:\n{m1}"
    );
    let reviews_from_waypoint = wait_for(
        "reviews to count connections from the waypoint",
        Duration::from_secs(10),
        || {
            let m = lab.mesh.metrics(&c, "node2").ok()?;
            let n = metric_sum(
                &m,
                "istio_tcp_connections_opened_total",
                &[
                    "reporter=\"destination\"",
                    "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/waypoint\"",
                ],
            );
            (n > 0).then_some(n)
        },
    );
    assert!(
        reviews_from_waypoint.is_ok(),
        "node2's pods saw no connection from the waypoint's identity"
    );
}
