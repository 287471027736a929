//! e2e: the node daemon's per-connection JSON access log (`--access-log-format json`)
//! and its `istio_tcp_*` labels for traffic that passes through the waypoint (issue
//! 16), in the Bookinfo lab: real daemons, eBPF capture, HBONE on every hop.
//! productpage opens one connection per call to reviews; its node's daemon sends it to
//! the waypoint (reporter `source`, destination workload `waypoint`, destination
//! Service reviews) and logs it when it closes. The waypoint's own connections to
//! reviews-v1 are pooled, so their daemon reports them (reporter `destination`, source
//! the waypoint) in the metrics when opened. Needs root; RAII teardown, also on failure.

use std::time::Duration;

use xtask::bookinfo::{self, Lab, LabOptions};
use xtask::harness::{Cluster, metric_sum, wait_for};
use xtask::mesh::MeshOptions;

const N: usize = 10;
const WAYPOINT_PRINCIPAL: &str = "spiffe://cluster.local/ns/bookinfo/sa/waypoint";
const PRODUCTPAGE_PRINCIPAL: &str = "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage";
const REVIEWS_SERVICE: &str = "reviews.bookinfo.svc.cluster.local";

/// Every JSON line of every node daemon's log (text log lines are skipped).
fn json_lines(log_dir: &std::path::Path) -> Vec<serde_json::Value> {
    ["node1", "node2"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(log_dir.join(format!("mesh-node-{n}.log"))).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The lines productpage's daemon wrote for its connections to reviews (via the waypoint).
fn productpage_to_reviews(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines
        .iter()
        .filter(|l| {
            l["reporter"] == "source"
                && l["source_workload"] == "productpage-v1"
                && l["destination_service"] == REVIEWS_SERVICE
        })
        .collect()
}

/// Istio's source-side TCP labels for productpage → reviews through the waypoint.
const TO_WAYPOINT: &[&str] = &[
    "reporter=\"source\"",
    "source_workload=\"productpage-v1\"",
    "source_workload_namespace=\"bookinfo\"",
    "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage\"",
    "source_app=\"productpage\"",
    "source_version=\"v1\"",
    "source_canonical_service=\"productpage\"",
    "source_canonical_revision=\"v1\"",
    "destination_workload=\"waypoint\"",
    "destination_workload_namespace=\"bookinfo\"",
    "destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/waypoint\"",
    "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
    "destination_service_name=\"reviews\"",
    "destination_service_namespace=\"bookinfo\"",
    "connection_security_policy=\"mutual_tls\"",
];

/// Istio's destination-side TCP labels for the waypoint → reviews-v1 connections.
const FROM_WAYPOINT: &[&str] = &[
    "reporter=\"destination\"",
    "source_workload=\"waypoint\"",
    "source_workload_namespace=\"bookinfo\"",
    "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/waypoint\"",
    "source_canonical_service=\"waypoint\"",
    "destination_workload=\"reviews-v1\"",
    "destination_workload_namespace=\"bookinfo\"",
    "destination_principal=\"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews\"",
    "destination_app=\"reviews\"",
    "destination_version=\"v1\"",
    "destination_canonical_service=\"reviews\"",
    "destination_canonical_revision=\"v1\"",
    "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
    "destination_service_name=\"reviews\"",
    "destination_service_namespace=\"bookinfo\"",
    "connection_security_policy=\"mutual_tls\"",
];

fn tcp_count(lab: &Lab, c: &Cluster, name: &str, labels: &[&str]) -> u64 {
    ["node1", "node2"]
        .iter()
        .map(|n| metric_sum(&lab.mesh.metrics(c, n).expect("node metrics"), name, labels))
        .sum()
}

#[test]
fn node_json_access_log_and_tcp_labels_for_traffic_through_the_waypoint() {
    let c = bookinfo::cluster().expect("bookinfo cluster");
    let logs = tempfile::tempdir().expect("log dir");
    let opts = LabOptions {
        mesh: MeshOptions {
            node_args: vec!["--access-log-format".into(), "json".into()],
            ..MeshOptions::default()
        },
        log_dir: Some(logs.path().to_owned()),
        ..LabOptions::default()
    };
    let lab = Lab::start(&c, opts).expect("bookinfo lab");
    lab.apply_sample(&c, "destination-rule-all.yaml")
        .expect("destination rules");
    lab.apply_sample(&c, "virtual-service-all-v1.yaml")
        .expect("virtual services");
    const OPENED: &str = "istio_tcp_connections_opened_total";
    let lines0 = productpage_to_reviews(&json_lines(logs.path())).len();
    let opened0 = tcp_count(&lab, &c, OPENED, TO_WAYPOINT);

    let t = bookinfo::tally(&bookinfo::pages(&c, N, 2, &[]));
    assert_eq!(t.get("reviews-v1"), Some(&N), "{t:?}");

    let all = wait_for(
        "productpage's N connections to reviews in the log",
        Duration::from_secs(20),
        || {
            let all = json_lines(logs.path());
            (productpage_to_reviews(&all).len() >= lines0 + N).then_some(all)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}", json_lines(logs.path())));
    let lines = productpage_to_reviews(&all);
    eprintln!(
        "FIGURE node access-log lines productpage → reviews: {}",
        lines.len() - lines0
    );
    for l in &lines[lines0..] {
        check_line(l);
    }
    let opened = tcp_count(&lab, &c, OPENED, TO_WAYPOINT) - opened0;
    eprintln!("FIGURE {OPENED} productpage → waypoint for reviews: {opened}");
    assert_eq!(opened, N as u64, "one connection per call");
    for name in [
        OPENED,
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ] {
        let n = tcp_count(&lab, &c, name, TO_WAYPOINT);
        assert!(n > 0, "{name} with {TO_WAYPOINT:?}: {n}");
    }
    let from_waypoint = tcp_count(&lab, &c, OPENED, FROM_WAYPOINT);
    eprintln!("FIGURE {OPENED} waypoint → reviews-v1: {from_waypoint}");
    assert!(
        from_waypoint > 0,
        "no connection from the waypoint to reviews-v1 with {FROM_WAYPOINT:?}"
    );
}

/// Every documented field is there and filled (docs: README's access-log section).
fn check_line(l: &serde_json::Value) {
    let text = |k: &str| {
        l[k].as_str()
            .filter(|s| !s.is_empty() && *s != "unknown")
            .unwrap_or_else(|| panic!("{k} missing, empty or unknown: {l}"))
            .to_owned()
    };
    let start = text("start_time");
    assert!(
        start.len() >= 20 && start.as_bytes()[10] == b'T' && start.ends_with('Z'),
        "start_time not RFC 3339 UTC: {l}"
    );
    for k in ["downstream_remote_address", "downstream_local_address", "upstream_host"] {
        text(k)
            .parse::<std::net::SocketAddr>()
            .unwrap_or_else(|e| panic!("{k} is no address ({e}): {l}"));
    }
    assert!(l["duration"].is_u64(), "duration: {l}");
    let bytes = |k: &str| l[k].as_u64().unwrap_or_else(|| panic!("{k}: {l}"));
    assert!(
        bytes("bytes_received") > 0 && bytes("bytes_sent") > 0,
        "a request and its answer crossed: {l}"
    );
    assert_eq!(text("response_flags"), "-", "{l}");
    assert_eq!(text("connection_security_policy"), "mutual_tls", "{l}");
    assert_eq!(text("source_namespace"), "bookinfo", "{l}");
    assert_eq!(text("source_principal"), PRODUCTPAGE_PRINCIPAL, "{l}");
    assert_eq!(text("destination_workload"), "waypoint", "{l}");
    assert_eq!(text("destination_namespace"), "bookinfo", "{l}");
    assert_eq!(text("destination_principal"), WAYPOINT_PRINCIPAL, "{l}");
    assert!(text("upstream_host").ends_with(":15008"), "HBONE to the waypoint: {l}");
}
