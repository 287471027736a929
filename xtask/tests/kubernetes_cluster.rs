//! e2e: Kubernetes mode across nodes (issue 14). Three `mesh-node --kubernetes`
//! daemons, the waypoint and the ingress gateway in `--kubernetes` mode, all reading
//! the workspace's test API server (`xtask::apiserver`: the real HTTP list/watch
//! protocol; it stands in for a real API server, which cannot be installed here) on
//! the cluster's fabric. Bookinfo spread over three nodes so that the waypoint and
//! every Service's endpoints sit on other nodes than their clients. Needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use xtask::apiserver::ApiServer;
use xtask::bookinfo::{self, Lab, LabOptions, Page, pages, tally};
use xtask::harness::{Cluster, FABRIC_SERVICE_IP, FabricCapture, wait_for};
use xtask::mesh::MeshOptions;

const API_PORT: u16 = 6443;
/// Clients of the API server: three node daemons, the waypoint, the ingress gateway.
const CLIENTS: u64 = 5;
/// `reviews` pods on node2 and node3 only, served without the waypoint: from
/// productpage (node1) every endpoint is remote.
const REVIEWS_REMOTE: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews-remote, namespace: bookinfo, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: 198.19.0.14, selector: {app: reviews, placement: remote}, ports: [{name: http, port: 9080}]}
";

/// The sample topology on three nodes: the waypoint alone on node3 with reviews-v3,
/// reviews-v2 and ratings on node2, productpage, details, reviews-v1 and the gateway
/// on node1.
fn three_nodes() -> String {
    let path = bookinfo::samples_dir().join("platform/topology.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let moved = |text: String, pod: &str, from: &str, to: &str, extra: &str| {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("name: {pod},")))
            .unwrap_or_else(|| panic!("no pod {pod} in the sample topology"))
            .to_owned();
        let relabelled = line.replacen("labels: {", &format!("labels: {{{extra}"), 1);
        let spec_line = format!("spec: {{nodeName: {from},");
        let at = text.find(&line).expect("line present");
        let (head, tail) = text.split_at(at);
        let tail = tail
            .replacen(&line, &relabelled, 1)
            .replacen(&spec_line, &format!("spec: {{nodeName: {to},"), 1);
        format!("{head}{tail}")
    };
    let text = text.replacen(
        "kind: Node\nmetadata: {name: node2}\n",
        "kind: Node\nmetadata: {name: node2}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node3}\n",
        1,
    );
    let text = moved(text, "waypoint", "node1", "node3", "");
    let text = moved(text, "reviews-v3", "node2", "node3", "placement: remote, ");
    moved(text, "reviews-v2", "node2", "node2", "placement: remote, ")
}

struct Setup {
    cluster: Cluster,
    api: Arc<ApiServer>,
    lab: Lab,
}

fn setup() -> Setup {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this e2e test needs root (netns, cgroups, eBPF); run it as root"
    );
    let cluster = Cluster::from_yaml(&three_nodes()).expect("three-node cluster");
    let bind = cluster.fabric_binder(API_PORT).expect("fabric address");
    let api = Arc::new(ApiServer::start(bind).expect("test API server"));
    assert_eq!(api.addr(), (FABRIC_SERVICE_IP, API_PORT).into());
    let log_dir = std::env::var_os("MESH_E2E_LOG_DIR").map(std::path::PathBuf::from);
    let options = LabOptions {
        mesh: MeshOptions {
            api_server: Some(api.clone()),
            ..MeshOptions::default()
        },
        log_dir,
        ..LabOptions::default()
    };
    let lab = Lab::start(&cluster, options).expect("Bookinfo on the API server");
    Setup { cluster, api, lab }
}

fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn all_ok(pages: &[Page]) -> Result<(), String> {
    match pages.iter().find(|p| !p.ok()) {
        None => Ok(()),
        Some(p) => Err(format!(
            "{} of {} pages failed; first: status {} {}",
            pages.iter().filter(|p| !p.ok()).count(),
            pages.len(),
            p.status,
            p.body.chars().take(400).collect::<String>()
        )),
    }
}

/// Which reviews pods answered `n` requests to `url` from productpage's pod (its
/// cgroup, so the connections are captured like the app's own).
fn reviews_served_from_productpage(c: &Cluster, url: &str, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do curl -s -m 5 -D - -o /dev/null {url} | tr -d '\\r' | grep -i '^x-served-by:' || echo failed; done"
    );
    let out = c
        .run_in_pod(
            bookinfo::NAMESPACE,
            "productpage-v1",
            Command::new("sh").args(["-c", &script]),
        )
        .expect("curl in productpage's pod");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap_or(l).trim().to_owned())
        .collect()
}

#[test]
fn kubernetes_mode_meshes_traffic_across_three_nodes() {
    let Setup {
        cluster: mut c,
        api,
        lab,
    } = setup();

    // Cross-node traffic is HBONE only: every packet on the fabric is on 15008, except
    // the user's request into the gateway and the daemons' API server connections.
    let entry = lab.entry(&c).expect("entry");
    let client_ip = c.pod(bookinfo::CLIENT.0, bookinfo::CLIENT.1).expect("client").ip;
    let capture = FabricCapture::start(&c).expect("fabric capture");
    let first = pages(&c, 60, 4, &[]);
    let (lines, _) = capture.finish().expect("fabric capture");
    all_ok(&first).expect("Bookinfo through the mesh");
    // Secrets: only the gateway lists them, and only in its own namespace (the
    // daemons and the waypoint never; nobody cluster-wide).
    let secret_lists = api.lists_by_namespace("Secret");
    assert_eq!(
        secret_lists.keys().cloned().collect::<Vec<_>>(),
        vec![Some(bookinfo::GATEWAY_POD.0.to_owned())],
        "{secret_lists:?}"
    );
    let api_ip = format!("{FABRIC_SERVICE_IP}.{API_PORT}");
    let entry_ip = format!("{}.{}", entry.ip(), entry.port());
    let mut hbone = 0;
    for l in &lines {
        let Some((a, b)) = xtask::harness::fabric::endpoints(l) else {
            continue;
        };
        let user_hop = (a.starts_with(&format!("{client_ip}.")) && b == entry_ip)
            || (b.starts_with(&format!("{client_ip}.")) && a == entry_ip);
        if user_hop || a == api_ip || b == api_ip {
            continue;
        }
        assert!(
            a.ends_with(".15008") || b.ends_with(".15008"),
            "non-HBONE packet between nodes: {l}"
        );
        hbone += 1;
    }
    eprintln!(
        "FIGURE fabric: {hbone} HBONE packets of {} captured, none in plaintext",
        lines.len()
    );
    assert!(hbone > 0, "no HBONE packet crossed the fabric: {} lines", lines.len());

    // The waypoint on node3 served productpage's calls to reviews on node1 and node2.
    for node in ["node1", "node2"] {
        let m = lab.mesh.metrics(&c, node).expect("metrics");
        let from_waypoint = metric_sum(
            &m,
            "istio_tcp_connections_opened_total",
            &[
                "reporter=\"destination\"",
                "source_principal=\"spiffe://cluster.local/ns/bookinfo/sa/waypoint\"",
            ],
        );
        eprintln!("FIGURE {node}: {from_waypoint} connections from the waypoint on node3");
        assert!(from_waypoint > 0.0, "{node}'s pods got nothing from the waypoint:\n{m}");
    }

    // A Service whose endpoints are all on other nodes load-balances across them (L4,
    // by the node daemon: no waypoint for this Service).
    lab.mesh
        .apply("reviews-remote", REVIEWS_REMOTE)
        .expect("apply reviews-remote");
    let served = wait_for(
        "reviews-remote to serve from node2 and node3",
        Duration::from_secs(20),
        || {
            let served = reviews_served_from_productpage(&c, "http://198.19.0.14:9080/reviews/0", 20);
            let distinct: BTreeSet<&str> = served.iter().map(String::as_str).collect();
            (distinct == BTreeSet::from(["reviews-v2", "reviews-v3"])).then_some(served)
        },
    )
    .expect("both remote endpoints serve, and only they");
    eprintln!("FIGURE reviews-remote from node1: {served:?}");

    // A VirtualService shift applies through the API server.
    for f in ["destination-rule-all.yaml", "virtual-service-reviews-v3.yaml"] {
        lab.apply_sample(&c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let t = tally(&pages(&c, 60, 4, &[]));
    eprintln!("FIGURE reviews-v3 rule: {t:?}");
    assert_eq!(t, BTreeMap::from([("reviews-v3".to_owned(), 60)]), "reviews-v3 only");

    // An API server restart in the middle of traffic changes nothing for it; the
    // watches resume (410 Gone, relist) and later changes still apply.
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let (restarted, during) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let mut all = Vec::new();
            while !stop.load(Ordering::Relaxed) && all.len() < 4000 {
                all.extend(pages(&c, 8, 4, &[]));
                done.store(all.len(), Ordering::Relaxed);
            }
            all
        });
        let pod_lists = api.lists_served("Pod");
        let restarted = wait_for("pages before the restart", Duration::from_secs(30), || {
            (done.load(Ordering::Relaxed) >= 16).then_some(())
        })
        .map_err(|e| e.to_string())
        .and_then(|()| api.restart().map_err(|e| e.to_string()));
        // Every client (three daemons, the waypoint, the gateway) resumes its pod watch,
        // gets 410 Gone (the history is compacted) and relists.
        let relisted = wait_for("every client relisted its pods", Duration::from_secs(60), || {
            (api.lists_served("Pod") >= pod_lists + CLIENTS).then_some(())
        });
        let reconnected = wait_for("every daemon reconnected", Duration::from_secs(60), || {
            ["node1", "node2", "node3"]
                .iter()
                .all(|n| {
                    lab.mesh
                        .metrics(&c, n)
                        .is_ok_and(|m| metric_sum(&m, "mesh_config_source_connected", &[]) == 1.0)
                })
                .then_some(())
        });
        let more = pages(&c, 40, 4, &[]);
        stop.store(true, Ordering::Relaxed);
        let mut all = load.join().expect("load thread");
        all.extend(more);
        let relisted = relisted.map_err(|e| e.to_string());
        (restarted.and(relisted).and(reconnected.map_err(|e| e.to_string())), all)
    });
    restarted.expect("restart and reconnect");
    eprintln!(
        "FIGURE API server restart: {} pages during and after it, pod lists {} in all",
        during.len(),
        api.lists_served("Pod")
    );
    all_ok(&during).expect("no page fails across the API server restart");
    lab.apply_sample(&c, "virtual-service-reviews-v2-v3.yaml")
        .expect("a change after the restart applies");
    let t = tally(&pages(&c, 60, 4, &[]));
    assert!(
        t.keys().all(|k| k == "reviews-v2" || k == "reviews-v3") && t.len() == 2,
        "v2 and v3 after the restart: {t:?}"
    );

    // Enrolling a namespace by annotation enrolls its pods on their node (node2), and
    // removing the annotation un-enrolls them.
    let enrolled = |c: &Cluster, node: &str| {
        let m = lab.mesh.metrics(c, node).expect("metrics");
        metric_sum(&m, "mesh_capture_enrolled_pods", &[])
    };
    let outside_pods = c
        .pods()
        .iter()
        .filter(|p| p.namespace == "outside" && p.node == "node2")
        .count() as f64;
    assert!(outside_pods >= 1.0, "the sample topology has outside's pods on node2");
    let before = enrolled(&c, "node2");
    c.set_namespace_annotation("outside", "mesh.io/dataplane-mode", Some("ambient"))
        .expect("annotate");
    lab.mesh.sync_topology(&c).expect("namespace to the API server");
    wait_for("node2 to enroll outside's pods", Duration::from_secs(30), || {
        (enrolled(&c, "node2") == before + outside_pods).then_some(())
    })
    .expect("enrolled by annotation");
    c.set_namespace_annotation("outside", "mesh.io/dataplane-mode", None)
        .expect("remove annotation");
    lab.mesh.sync_topology(&c).expect("namespace to the API server");
    wait_for("node2 to un-enroll outside's pods", Duration::from_secs(30), || {
        (enrolled(&c, "node2") == before).then_some(())
    })
    .expect("un-enrolled when the annotation is removed");
    eprintln!(
        "FIGURE enrollment by annotation: node2 {before} → {} → {before} enrolled pods",
        before + outside_pods
    );
    all_ok(&pages(&c, 20, 4, &[])).expect("traffic after un-enrolling");
    drop(lab);
}
