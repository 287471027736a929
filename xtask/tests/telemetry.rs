//! e2e: Istio's request metrics at the waypoint and the ingress gateway (issue 16) in
//! the Bookinfo lab: real node daemons, eBPF capture, HBONE between every hop. Counts
//! are compared as deltas around a known number of requests (the lab's own start-up
//! requests are in the totals). Needs root; RAII teardown, also on failure.

use std::net::SocketAddr;
use std::time::Duration;

use xtask::bookinfo::{
    self, GATEWAY_POD, Lab, LabOptions, NAMESPACE, STATS_PORT, WAYPOINT_ADMIN, WAYPOINT_POD, prometheus,
};
use xtask::harness::{Cluster, wait_for};
use xtask::mesh::http_get_from_pod;

const N: usize = 20;
const JASON: &[(&str, &str)] = &[("end-user", "jason")];

fn stats(c: &Cluster, pod: (&str, &str)) -> String {
    let admin = SocketAddr::from(([127, 0, 0, 1], WAYPOINT_ADMIN));
    let r = http_get_from_pod(c, pod, admin, "/stats/prometheus", &[], Duration::from_secs(5)).expect("stats");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn requests(text: &str, filters: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{") && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The count of `filters` after minus before, printed as a figure.
fn delta(what: &str, before: &str, after: &str, filters: &[&str]) -> u64 {
    let d = requests(after, filters) - requests(before, filters);
    eprintln!("FIGURE {what}: {d}");
    d
}

#[test]
fn request_metrics_count_every_request_with_istios_labels() {
    let c = bookinfo::cluster().expect("bookinfo cluster");
    let opts = LabOptions {
        prometheus: true,
        ..LabOptions::default()
    };
    let lab = Lab::start(&c, opts).expect("bookinfo lab");
    for f in ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"] {
        lab.apply_sample(&c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let waypoint = (NAMESPACE, WAYPOINT_POD);
    let (gw0, wp0) = (stats(&c, GATEWAY_POD), stats(&c, waypoint));
    let t = bookinfo::tally(&bookinfo::pages(&c, N, 4, &[]));
    assert_eq!(t.get("reviews-v1"), Some(&N), "{t:?}");
    let (gw1, wp1) = (stats(&c, GATEWAY_POD), stats(&c, waypoint));

    let at_gateway = [
        "reporter=\"source\"",
        "destination_service=\"productpage.bookinfo.svc.cluster.local\"",
        "destination_service_name=\"productpage\"",
        "destination_service_namespace=\"bookinfo\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
    ];
    assert_eq!(delta("gateway productpage 200", &gw0, &gw1, &at_gateway), N as u64);
    let reviews = [
        "reporter=\"waypoint\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"bookinfo\"",
        "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "source_canonical_service=\"productpage\"",
        "source_canonical_revision=\"v1\"",
        "destination_workload=\"reviews-v1\"",
        "destination_workload_namespace=\"bookinfo\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v1\"",
        "destination_canonical_service=\"reviews\"",
        "destination_canonical_revision=\"v1\"",
        "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
        "destination_service_name=\"reviews\"",
        "response_code=\"200\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    assert_eq!(delta("waypoint reviews-v1 200", &wp0, &wp1, &reviews), N as u64);
    let other_versions = [
        "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
        "destination_version=\"v2\"",
    ];
    assert_eq!(delta("waypoint reviews-v2", &wp0, &wp1, &other_versions), 0);
    let productpage = [
        "reporter=\"waypoint\"",
        "destination_service=\"productpage.bookinfo.svc.cluster.local\"",
        "source_principal=\"spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway\"",
        "destination_workload=\"productpage-v1\"",
        "response_code=\"200\"",
    ];
    assert_eq!(
        delta("waypoint productpage from the gateway", &wp0, &wp1, &productpage),
        N as u64
    );
    let details = [
        "destination_service=\"details.bookinfo.svc.cluster.local\"",
        "response_code=\"200\"",
    ];
    assert_eq!(delta("waypoint details", &wp0, &wp1, &details), N as u64);

    // The real Prometheus, scraping both proxies, answers Istio's query with the same count.
    let query =
        "sum(istio_requests_total{reporter=\"waypoint\",destination_service=~\"reviews.*\"}) by (destination_version)";
    // The lab's start-up page may have gone to any version: compare v1's series.
    let want = requests(
        &wp1,
        &[
            "reporter=\"waypoint\"",
            "destination_service=\"reviews.bookinfo",
            "destination_version=\"v1\"",
        ],
    ) as f64;
    let seen = wait_for(
        "Prometheus to scrape the waypoint's counts",
        Duration::from_secs(30),
        || {
            let answer = prometheus::query(&c, query).ok()?;
            let got = prometheus::samples(&answer, "destination_version");
            got.contains(&("v1".to_owned(), want)).then_some(got)
        },
    )
    .expect("Prometheus answers with the waypoint's count");
    eprintln!("FIGURE prometheus {query}: {seen:?}");

    // A fault: jason's reviews (v2) call ratings, which the VirtualService aborts (FI).
    for f in [
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-abort.yaml",
    ] {
        lab.apply_sample(&c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let before = stats(&c, waypoint);
    let pages = bookinfo::pages(&c, 5, 1, JASON);
    assert!(
        pages.iter().all(|p| p.status == 200),
        "{:?}",
        pages.iter().map(|p| p.status).collect::<Vec<_>>()
    );
    let after = stats(&c, waypoint);
    let aborted = [
        "destination_service=\"ratings.bookinfo.svc.cluster.local\"",
        "response_code=\"500\"",
        "response_flags=\"FI\"",
        "source_workload=\"reviews-v2\"",
    ];
    assert_eq!(delta("waypoint ratings aborted (FI)", &before, &after, &aborted), 5);

    // Prometheus scrapes the stats port on the pod's address: the same series.
    let ip = c.pod(NAMESPACE, WAYPOINT_POD).expect("waypoint pod").ip;
    let r = http_get_from_pod(
        &c,
        waypoint,
        SocketAddr::from((ip, STATS_PORT)),
        "/stats/prometheus",
        &[],
        Duration::from_secs(5),
    )
    .expect("stats port");
    assert_eq!(
        requests(&r.body, &reviews),
        requests(&after, &reviews),
        "stats port and admin agree"
    );
    let dump = http_get_from_pod(
        &c,
        waypoint,
        SocketAddr::from((ip, STATS_PORT)),
        "/config_dump",
        &[],
        Duration::from_secs(5),
    )
    .expect("stats port");
    assert_eq!(dump.status, 404, "the stats port serves metrics only");

    // Issue 15: the waypoint's and the gateway's own certificate, as the node daemon
    // reports its pods': CA requests by result and seconds left on the stats port, the
    // certificate (identity, serial, expiry) in /config_dump.
    let waypoint_dump = bookinfo::waypoint_dump(&c).expect("waypoint config_dump");
    let gateway_dump = bookinfo::gateway_dump(&c).expect("gateway config_dump");
    for (pod, dump, sa) in [
        (waypoint, waypoint_dump, "/ns/bookinfo/sa/"),
        (GATEWAY_POD, gateway_dump, "/ns/istio-system/sa/"),
    ] {
        let ip = c.pod(pod.0, pod.1).expect("pod").ip;
        let text = http_get_from_pod(
            &c,
            pod,
            SocketAddr::from((ip, STATS_PORT)),
            "/metrics",
            &[],
            Duration::from_secs(5),
        )
        .expect("stats port")
        .body;
        certificate_reported(pod.1, &text, &dump["certificate"], sa);
    }
}

/// `text` (a stats page) counts issued CA requests and gives the certificate of `cert`
/// (a `/config_dump` section) a positive number of seconds left.
fn certificate_reported(pod: &str, text: &str, cert: &serde_json::Value, sa: &str) {
    let identity = cert["identity"]
        .as_str()
        .unwrap_or_else(|| panic!("{pod}: no certificate in config_dump: {cert}"));
    assert!(
        identity.starts_with("spiffe://cluster.local") && identity.contains(sa),
        "{pod}: {cert}"
    );
    assert!(cert["serial"].as_str().is_some_and(|s| !s.is_empty()), "{pod}: {cert}");
    assert!(cert["expiry_unix"].as_u64().is_some_and(|e| e > 0), "{pod}: {cert}");
    let issued: f64 = text
        .lines()
        .filter(|l| l.starts_with("mesh_ca_requests_total{result=\"issued\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(issued >= 1.0, "{pod}: no issued CA request in:\n{text}");
    let left: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("mesh_certificate_expiry_seconds{") && l.contains(&format!("identity=\"{identity}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    eprintln!(
        "FIGURE {pod}: certificate {identity} serial {} expires in {left:?} s",
        cert["serial"]
    );
    assert!(
        left.len() == 1 && left[0] > 0.0,
        "{pod}: expiry gauge {left:?} in:\n{text}"
    );
}
