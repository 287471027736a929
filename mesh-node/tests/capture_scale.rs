//! e2e: 200 enrolled pods across 2 nodes — map entries and attach counts stay exact,
//! and after un-enrollment and `--detach-on-exit` nothing is left pinned.

#[path = "capture_support.rs"]
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use xtask::harness::Cluster;

const PER_NODE: usize = 100;

/// Entry point for the in-pod clients (does nothing in a normal test run).
#[test]
#[ignore = "not a test: the in-pod client entry point that the e2e tests start with --ignored"]
fn helper() {
    helper_main();
}

fn topology() -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: scale, annotations: {mesh.io/dataplane-mode: ambient}}\n",
    );
    for i in 0..2 * PER_NODE {
        let node = if i < PER_NODE { "n1" } else { "n2" };
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: scale}}\nspec: {{nodeName: {node}}}\n"
        );
    }
    y
}

fn summary(c: &Cluster, node: &str) -> (usize, u64, usize, usize) {
    let d = config_dump(c, node);
    let pods = d["capture"]["pods"].as_object().cloned().unwrap_or_default();
    let attached: u64 = pods
        .values()
        .map(|p| p["attached"].as_u64().unwrap_or(0) + p["adopted"].as_u64().unwrap_or(0))
        .sum();
    let maps = &d["capture"]["maps"];
    let len = |k: &str| maps[k].as_array().map(Vec::len).unwrap_or(0);
    (pods.len(), attached, len("pod_self"), len("inbound_listeners"))
}

#[test]
fn two_hundred_pods_on_two_nodes_attach_exactly_and_leave_nothing_pinned() {
    let t = Instant::now();
    let mut c = Cluster::from_yaml(&topology()).expect("cluster");
    c.write_config(&config_dir(&c)).expect("config");
    eprintln!(
        "FIGURE harness: {} pods created in {:.1} s",
        2 * PER_NODE,
        t.elapsed().as_secs_f64()
    );
    let netfilter_before = netfilter_everywhere(&c);

    let t = Instant::now();
    let mut d1 = start_daemon(&c, "n1", &["--detach-on-exit"]);
    let mut d2 = start_daemon(&c, "n2", &["--detach-on-exit"]);
    eprintln!(
        "FIGURE enrollment: 2 daemons serving with {} pods attached after {:.2} s",
        2 * PER_NODE,
        t.elapsed().as_secs_f64()
    );
    for node in ["n1", "n2"] {
        let d = config_dump(&c, node);
        eprintln!(
            "FIGURE {node}: attaching {PER_NODE} pods took {} ms",
            d["capture"]["first_reconcile_ms"]
        );
        assert_eq!(
            summary(&c, node),
            (PER_NODE, 6 * PER_NODE as u64, PER_NODE, PER_NODE),
            "{node}: {}",
            d["capture"]["errors"]
        );
        assert!(
            metrics(&c, node)
                .lines()
                .any(|l| l == format!("mesh_capture_enrolled_pods {PER_NODE}")),
            "{node} gauge"
        );
        let pins = pinned_files(&c.node(node).expect("node").bpf_dir.join("pods"));
        assert_eq!(pins.len(), 6 * PER_NODE, "{node}: one pinned link per program per pod");
    }

    // Cross-node sample: captured at the source, steered at the destination.
    let dst = c.pod("scale", &format!("p{}", 2 * PER_NODE - 1)).expect("pod");
    let _app = serve(c.listen_in_pod("scale", &dst.name, 8080).expect("listen"));
    let to = SocketAddr::from((dst.ip, 8080));
    let r = kv(&run_helper(&c, "scale", "p0", "hello", &[to.to_string()])[0]);
    assert!(r["local"].starts_with("127.0.0.1:"), "{r:?}");
    assert_eq!(r["getpeername"], to.to_string(), "{r:?}");
    let src = c.pod("scale", "p0").expect("pod");
    assert!(
        r["app_peer"].starts_with(&format!("{}:", src.ip)),
        "relayed at the destination node from the source pod's IP: {r:?}"
    );

    let t = Instant::now();
    c.set_namespace_annotation("scale", "mesh.io/dataplane-mode", None)
        .expect("annotation");
    c.write_config(&config_dir(&c)).expect("config");
    for node in ["n1", "n2"] {
        poll(
            &format!("{node} to un-enroll every pod"),
            Duration::from_secs(30),
            || (summary(&c, node) == (0, 0, 0, 0)).then_some(()),
        );
        assert!(
            pinned_files(&c.node(node).expect("node").bpf_dir.join("pods")).is_empty(),
            "{node}"
        );
    }
    eprintln!(
        "FIGURE un-enrollment of {} pods: {:.2} s",
        2 * PER_NODE,
        t.elapsed().as_secs_f64()
    );

    d1.stop().expect("stop n1");
    d2.stop().expect("stop n2");
    for node in ["n1", "n2"] {
        let left = pinned_files(&c.node(node).expect("node").bpf_dir);
        assert!(left.is_empty(), "{node}: pinned after --detach-on-exit: {left:?}");
    }
    assert_eq!(
        netfilter_everywhere(&c),
        netfilter_before,
        "no iptables/nftables state may change"
    );
}
