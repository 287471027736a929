//! e2e: the Bookinfo traffic shifts written as Gateway API HTTPRoutes attached to the
//! reviews Service (GAMMA, mesh mode; `samples/bookinfo/gateway-api/`) behave as the
//! VirtualService versions do (`bookinfo.rs`, same assertions), and win over a
//! VirtualService for the same host. Real node daemons, eBPF capture, the waypoint in
//! its own pod over HBONE. Needs root; RAII teardown, also on failure.

use std::collections::BTreeMap;

use mesh_common::model::ObjectRef;
use xtask::bookinfo::{self, Lab, LabOptions, pages, tally, waypoint_dump};
use xtask::harness::Cluster;

const JASON: &[(&str, &str)] = &[("end-user", "jason")];

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
fn bookinfo_shifts_as_http_routes_follow_the_virtual_service_results() {
    let cluster = bookinfo::cluster().expect("bookinfo cluster");
    let lab = Lab::start(&cluster, LabOptions::default()).expect("bookinfo lab");
    let c = &cluster;
    // A VirtualService sends reviews to v1; the HTTPRoutes below take precedence.
    apply(c, &lab, &["destination-rule-all.yaml", "virtual-service-all-v1.yaml"]);
    apply(
        c,
        &lab,
        &["platform/bookinfo-versions.yaml", "gateway-api/route-reviews-v1.yaml"],
    );
    let t = tally(&pages(c, 200, 8, &[]));
    eprintln!("FIGURE httproute reviews-v1: {t:?}");
    assert_eq!(t, only("reviews-v1", 200), "route-reviews-v1");

    apply(c, &lab, &["gateway-api/route-reviews-50-v3.yaml"]);
    let t = tally(&pages(c, 200, 8, &[]));
    eprintln!("FIGURE httproute reviews-50-v3: {t:?}");
    assert_eq!(
        t.values().sum::<usize>(),
        t.get("reviews-v1").unwrap_or(&0) + t.get("reviews-v3").unwrap_or(&0),
        "only v1 and v3, no errors: {t:?}"
    );
    for v in ["reviews-v1", "reviews-v3"] {
        let s = share(&t, v, 200);
        assert!((42.0..=58.0).contains(&s), "{v} got {s:.1}% (50 ± 8): {t:?}");
    }

    apply(c, &lab, &["gateway-api/route-reviews-v3.yaml"]);
    let t = tally(&pages(c, 200, 8, &[]));
    eprintln!("FIGURE httproute reviews-v3 (VirtualService says v1): {t:?}");
    assert_eq!(t, only("reviews-v3", 200), "the HTTPRoute wins over the VirtualService");
    let dump = waypoint_dump(c).expect("waypoint config_dump");
    let warnings = dump["warnings"].to_string();
    assert!(
        warnings.contains("VirtualService bookinfo/reviews: spec.hosts[0]: `reviews.bookinfo.svc.cluster.local` is also routed by HTTPRoutes"),
        "{warnings}"
    );
    eprintln!("FIGURE route tables: {}", dump["routeTables"]);

    apply(c, &lab, &["gateway-api/route-reviews-test-v2.yaml"]);
    let t = tally(&pages(c, 200, 8, JASON));
    eprintln!("FIGURE httproute test-v2, jason: {t:?}");
    assert_eq!(t, only("reviews-v2", 200), "jason on v2");
    let t = tally(&pages(c, 200, 8, &[]));
    eprintln!("FIGURE httproute test-v2, others: {t:?}");
    assert_eq!(t, only("reviews-v1", 200), "everyone else on v1");

    // Without the HTTPRoute the VirtualService routes reviews again.
    apply(c, &lab, &["virtual-service-reviews-v3.yaml"]);
    assert_eq!(
        tally(&pages(c, 100, 8, &[])),
        only("reviews-v1", 100),
        "the HTTPRoute still wins"
    );
    lab.delete_object(c, &ObjectRef::new("HTTPRoute", Some("bookinfo"), "reviews"))
        .expect("delete the HTTPRoute");
    let t = tally(&pages(c, 200, 8, &[]));
    eprintln!("FIGURE after deleting the HTTPRoute (VirtualService v3): {t:?}");
    assert_eq!(t, only("reviews-v3", 200), "the VirtualService applies again");
}
