//! e2e: Bookinfo on the local mesh (issues 6 and 8). Real node daemons, real eBPF
//! capture, the waypoint in its own pod speaking HBONE, the apps in their pods.
//! Needs root; each test builds its own cluster (RAII teardown, also on failure).

use std::collections::BTreeMap;
use std::time::Duration;

use xtask::bookinfo::{self, Lab, LabOptions, productpage, reviews_version};
use xtask::harness::{Cluster, wait_for};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn lab() -> Option<(Cluster, Lab)> {
    if !is_root() {
        eprintln!("skipped: needs root (netns, cgroups, eBPF)");
        return None;
    }
    let cluster = bookinfo::cluster().expect("bookinfo cluster");
    let lab = Lab::start(&cluster, LabOptions::default()).expect("bookinfo lab");
    Some((cluster, lab))
}

/// Which reviews versions rendered `n` product pages (bounded: one request at a time,
/// each with its own timeout).
fn versions(cluster: &Cluster, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let page = productpage(cluster, headers).map(|r| reviews_version(&r.body).unwrap_or_else(|| format!("status {}", r.status)));
        *seen.entry(page.unwrap_or_else(|e| format!("error: {e}"))).or_default() += 1;
    }
    seen
}

fn metric_sum(text: &str, name: &str, filters: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn namespace_traffic_goes_through_the_waypoint_over_hbone_and_obeys_l7_rules() {
    let Some((c, lab)) = lab() else { return };
    lab.apply_sample("destination-rule-all.yaml").expect("apply");
    lab.apply_sample("virtual-service-reviews-v3.yaml").expect("apply");
    lab.wait_waypoint_config(&c, "the waypoint to load reviews' VirtualService and DestinationRule", |d| {
        let has = |k: &str, v: &str| d[k].as_array().is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.contains(v))));
        has("virtualServices", "bookinfo/reviews") && has("destinationRules", "bookinfo/reviews")
    })
    .expect("waypoint config");
    // Only an L7 proxy can honour a subset: at L4, reviews' VIP spreads over v1, v2, v3.
    let seen = versions(&c, 20, &[]);
    eprintln!("FIGURE pages by reviews version through the waypoint: {seen:?}");
    assert_eq!(seen, BTreeMap::from([("reviews-v3".to_owned(), 20)]), "every page from reviews v3");
    // The source node daemon tunnelled productpage's connections to the waypoint pod...
    let m1 = lab.mesh.metrics(&c, "node1").expect("metrics node1");
    let to_waypoint = metric_sum(&m1, "istio_tcp_connections_opened_total", &["reporter=\"source\"", "destination_workload=\"waypoint\""]);
    assert!(to_waypoint > 0, "node1 opened no connection to the waypoint:\n{m1}");
    // ...and the reviews pod received them over HBONE from the waypoint's identity.
    let m2 = wait_for("reviews-v3 to count inbound from the waypoint", Duration::from_secs(10), || {
        let m = lab.mesh.metrics(&c, "node2").ok()?;
        let n = metric_sum(&m, "istio_tcp_connections_opened_total", &["reporter=\"destination\"", "destination_workload=\"reviews-v3\"", "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/waypoint\""]);
        (n > 0).then_some(m)
    });
    assert!(m2.is_ok(), "reviews-v3 saw no connection from the waypoint's identity: {:?}", lab.mesh.metrics(&c, "node2").ok());
}
