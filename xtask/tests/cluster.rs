//! End-to-end tests of the local cluster harness: real netns, veths, routes and
//! cgroups (needs root). Each test builds its own cluster under its own prefix.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use mesh_common::model::k8s::ENROLL_ANNOTATION;
use mesh_common::model::{Resource, parse_documents};
use xtask::harness::{self, Cluster, ClusterOptions, LOCAL_CGROUP_ANNOTATION, LOCAL_NETNS_ANNOTATION};

const TOPOLOGY: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2, labels: {zone: b}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: n1, serviceAccountName: client-sa}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: shop, labels: {app: server}}
spec: {nodeName: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: neighbour, namespace: other, annotations: {mesh.io/local-ip: 198.18.1.50}}
spec: {nodeName: n1}
"#;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one connection on a listener made in `pod`'s netns: replies with
/// `<peer ip>|` followed by the bytes it got.
fn echo_once(cluster: &Cluster, ns: &str, pod: &str) -> (SocketAddr, std::thread::JoinHandle<std::io::Result<()>>) {
    let listener = cluster.listen_in_pod(ns, pod, 0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ip = cluster.pod(ns, pod).unwrap().ip;
    let handle = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept()?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf)?;
        conn.write_all(format!("{}|", peer.ip()).as_bytes())?;
        conn.write_all(&buf[..n])
    });
    (SocketAddr::from((ip, port)), handle)
}

fn exchange(cluster: &Cluster, ns: &str, pod: &str, to: SocketAddr) -> String {
    let mut stream: TcpStream = cluster.connect_from_pod(ns, pod, to, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"hello over the fabric").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// Asserts that `result` failed with an error containing `expected`.
fn assert_fails<T: std::fmt::Debug>(result: Result<T, harness::HarnessError>, expected: &str) {
    let err = result.expect_err("should fail").to_string();
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

fn assert_exits(guard: &mut harness::ProcessGuard, what: &str) {
    let status = guard.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(status.is_some(), "{what}: process {} still running", guard.pid());
}

fn wait_gone(pid: u32) -> bool {
    // A zombie (killed, not yet reaped by its guard) counts as gone.
    harness::wait_until("process to be gone", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z'))
        })
    })
    .is_ok()
}

fn host_has_test_addresses() -> bool {
    let out = Command::new("ip").args(["-o", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(" 198.18.")
        || String::from_utf8_lossy(&out.stdout).contains(" 198.19.")
}

#[test]
fn two_nodes_three_pods_talk_over_the_fabric_and_leave_nothing_behind() {
    let cluster = Cluster::from_yaml(TOPOLOGY).unwrap();
    let prefix = cluster.prefix().to_owned();
    let client = cluster.pod("shop", "client").unwrap();
    let server = cluster.pod("shop", "server").unwrap();
    let neighbour = cluster.pod("other", "neighbour").unwrap();
    assert_eq!(client.ip, Ipv4Addr::new(198, 18, 1, 2));
    assert_eq!(server.ip, Ipv4Addr::new(198, 18, 2, 2));
    assert_eq!(neighbour.ip, Ipv4Addr::new(198, 18, 1, 50));
    assert_eq!(client.service_account, "client-sa");
    assert_eq!(cluster.node("n2").unwrap().ip, Ipv4Addr::new(198, 18, 0, 2));
    assert!(cluster.node("n1").unwrap().bpf_dir.is_dir());

    // Cross-node: client on n1 -> server on n2, the server sees the client's pod IP.
    let (addr, served) = echo_once(&cluster, "shop", "server");
    assert_eq!(
        exchange(&cluster, "shop", "client", addr),
        "198.18.1.2|hello over the fabric"
    );
    served.join().unwrap().unwrap();
    // Same node, through the node: neighbour -> client.
    let (addr, served) = echo_once(&cluster, "shop", "client");
    assert_eq!(
        exchange(&cluster, "other", "neighbour", addr),
        "198.18.1.50|hello over the fabric"
    );
    served.join().unwrap().unwrap();
    // Readiness-style polling from the node's netns, and the printed summary.
    let (addr, served) = echo_once(&cluster, "shop", "server");
    cluster.wait_tcp_on_node("n1", addr, IO_TIMEOUT).unwrap();
    drop(served);
    let summary = cluster.to_string();
    assert!(
        summary.contains("198.18.2.2") && summary.contains("pods 198.18.2.0/24"),
        "{summary}"
    );
    // A Service VIP leaves the pod and nothing answers it.
    let vip = SocketAddr::from(([198, 19, 0, 10], 80));
    assert!(
        cluster
            .connect_from_pod("shop", "client", vip, Duration::from_secs(2))
            .is_err()
    );
    assert!(
        !host_has_test_addresses(),
        "the host netns must not get harness addresses"
    );

    // A process spawned in a pod is in the pod's cgroup and netns.
    let mut sleeper = cluster
        .spawn_in_pod("shop", "server", Command::new("sleep").arg("60"))
        .unwrap();
    let cgroup = harness::cgroup_of(sleeper.pid()).unwrap();
    let root = harness::cgroup2_root().unwrap();
    assert_eq!(root.join(cgroup.trim_start_matches('/')), server.cgroup);
    assert_eq!(
        harness::netns_id_of_pid(sleeper.pid()).unwrap(),
        harness::netns_id_of_path(&server.netns_path).unwrap()
    );
    let daemon = cluster.spawn_on_node("n1", Command::new("sleep").arg("60")).unwrap();
    assert_eq!(
        root.join(harness::cgroup_of(daemon.pid()).unwrap().trim_start_matches('/')),
        cluster.node("n1").unwrap().cgroup
    );
    let out = cluster
        .run_in_pod(
            "shop",
            "client",
            Command::new("ip").args(["-o", "-4", "addr", "show", "dev", &client.iface]),
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("198.18.1.2/32"),
        "{out:?}"
    );

    // Dropping the cluster kills what still runs in it and removes every object.
    let sleeper_pid = sleeper.pid();
    drop(cluster);
    assert_exits(&mut sleeper, "pod process killed at teardown");
    assert!(wait_gone(daemon.pid()));
    assert!(wait_gone(sleeper_pid));
    assert_eq!(harness::leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn a_panic_in_the_test_body_still_cleans_up() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let cluster = Cluster::from_yaml(TOPOLOGY).unwrap();
        let guard = cluster
            .spawn_in_pod("shop", "client", Command::new("sleep").arg("60"))
            .unwrap();
        *seen.lock().unwrap() = Some((cluster.prefix().to_owned(), guard.pid()));
        std::mem::forget(guard); // only the cluster's teardown can stop it now
        panic!("test body failed");
    });
    assert!(result.is_err());
    let (prefix, pid) = seen.into_inner().unwrap().expect("cluster was created");
    assert!(wait_gone(pid), "process {pid} survived the teardown");
    assert_eq!(harness::leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn failed_creation_removes_what_was_created() {
    for steps in [0, 1, 2, 4, 6] {
        let prefix = harness::new_prefix();
        let options = ClusterOptions {
            prefix: Some(prefix.clone()),
            fail_after_steps: Some(steps),
        };
        assert_fails(Cluster::from_yaml_with(TOPOLOGY, options), "injected failure");
        assert_eq!(
            harness::leftovers(&prefix),
            Vec::<String>::new(),
            "after failing at step {steps}"
        );
    }
}

#[test]
fn bad_topology_creates_nothing() {
    let prefix = harness::new_prefix();
    let yaml = TOPOLOGY.replace("nodeName: n2", "nodeName: n3");
    let options = ClusterOptions {
        prefix: Some(prefix.clone()),
        ..ClusterOptions::default()
    };
    assert_fails(
        Cluster::from_yaml_with(&yaml, options),
        "Pod shop/server: spec.nodeName: unknown node \"n3\"",
    );
    assert_eq!(harness::leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn pods_come_and_go_and_config_follows() {
    let mut cluster = Cluster::from_yaml(TOPOLOGY).unwrap();
    let mut added = Vec::new();
    for i in 0..20 {
        let mut pod = harness::pod("batch", &format!("p{i}"), if i % 2 == 0 { "n1" } else { "n2" });
        pod.metadata.labels.insert("app".into(), "batch".into());
        added.push(cluster.add_pod(pod).unwrap());
    }
    assert_fails(
        cluster.add_pod(harness::pod("batch", "p3", "n1")),
        "Pod batch/p3: metadata.name: duplicate Pod",
    );
    assert_fails(
        cluster.add_pod(harness::pod("batch", "lost", "n7")),
        "Pod batch/lost: spec.nodeName: unknown node \"n7\"",
    );

    // Remove a pod, then reuse its name and address: the new one is reachable.
    let old = cluster.pod("batch", "p3").unwrap();
    cluster.remove_pod("batch", "p3").unwrap();
    assert!(!old.netns_path.exists() && !old.cgroup.exists());
    assert!(cluster.pod("batch", "p3").is_err());
    let again = cluster
        .add_pods_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: p3, namespace: batch}\nspec: {nodeName: n2}\n")
        .unwrap();
    assert_eq!(again[0].ip, old.ip, "freed address is reused");
    let (addr, served) = echo_once(&cluster, "batch", "p3");
    assert_eq!(
        exchange(&cluster, "batch", "p0", addr),
        format!("{}|hello over the fabric", added[0].ip)
    );
    served.join().unwrap().unwrap();

    cluster
        .set_namespace_annotation("batch", ENROLL_ANNOTATION, Some("ambient"))
        .unwrap();
    let dir = cluster.state_dir().join("config");
    let path = cluster.write_config(&dir).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<Resource> = parse_documents("written", &text)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let enrolled: Vec<_> = docs
        .iter()
        .filter_map(|d| match d {
            Resource::Namespace(n) if n.is_enrolled() => Some(n.metadata.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(enrolled, ["batch", "shop"]);
    let pods: Vec<_> = docs
        .iter()
        .filter_map(|d| if let Resource::Pod(p) = d { Some(p) } else { None })
        .collect();
    assert_eq!(pods.len(), 23);
    let p3 = pods.iter().find(|p| p.metadata.name == "p3").unwrap();
    assert_eq!(p3.ipv4(), Some(old.ip));
    assert_eq!(
        p3.metadata.annotations[LOCAL_NETNS_ANNOTATION],
        again[0].netns_path.display().to_string()
    );
    assert_eq!(
        p3.metadata.annotations[LOCAL_CGROUP_ANNOTATION],
        again[0].cgroup.display().to_string()
    );
    assert_eq!(docs.iter().filter(|d| matches!(d, Resource::Node(_))).count(), 2);

    let prefix = cluster.prefix().to_owned();
    cluster.shutdown().unwrap();
    assert_eq!(harness::leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn clean_leftovers_removes_orphaned_clusters_only() {
    let live = Cluster::from_yaml(TOPOLOGY).unwrap();
    let orphan = Cluster::from_yaml(TOPOLOGY).unwrap();
    let mut guard = orphan
        .spawn_in_pod("shop", "server", Command::new("sleep").arg("60"))
        .unwrap();
    let prefix = orphan.prefix().to_owned();
    // Simulate a killed owner: forget the cluster and point its owner record at a dead process.
    std::fs::write(orphan.state_dir().join("owner"), "1 1\n").unwrap();
    std::mem::forget(orphan);
    let report = harness::clean_leftovers().unwrap();
    assert!(report.removed.contains(&prefix), "{report:?}");
    assert!(report.skipped_live.contains(&live.prefix().to_owned()), "{report:?}");
    assert_exits(&mut guard, "orphan's process killed");
    assert_eq!(harness::leftovers(&prefix), Vec::<String>::new());
    assert!(
        live.pod("shop", "client").unwrap().netns_path.exists(),
        "live cluster untouched"
    );
}

#[test]
fn bin_path_points_into_the_target_dir() {
    assert_fails(harness::bin_path("no-such-binary"), "cargo build --workspace");
    assert_fails(harness::bin_path("no-such-binary"), "/target/");
}

#[test]
fn two_hundred_pods_are_added_reached_and_removed() {
    let mut cluster = Cluster::from_yaml(TOPOLOGY).unwrap();
    let started = Instant::now();
    for i in 0..200 {
        let node = if i < 100 { "n1" } else { "n2" };
        cluster.add_pod(harness::pod("many", &format!("p{i}"), node)).unwrap();
    }
    let added_in = started.elapsed();
    let first = cluster.pod("many", "p0").unwrap();
    let last = cluster.pod("many", "p199").unwrap();
    assert_eq!(
        (first.ip, last.ip),
        (Ipv4Addr::new(198, 18, 1, 3), Ipv4Addr::new(198, 18, 2, 102))
    );
    let (addr, served) = echo_once(&cluster, "many", "p199");
    assert_eq!(
        exchange(&cluster, "many", "p0", addr),
        "198.18.1.3|hello over the fabric"
    );
    served.join().unwrap().unwrap();
    let started = Instant::now();
    for i in 0..200 {
        cluster.remove_pod("many", &format!("p{i}")).unwrap();
    }
    eprintln!("200 pods: added in {added_in:?}, removed in {:?}", started.elapsed());
    assert_eq!(cluster.pods().len(), 3);
}

#[test]
fn processes_that_ignore_sigterm_or_fork_are_still_removed() {
    let cluster = Cluster::from_yaml(TOPOLOGY).unwrap();
    let prefix = cluster.prefix().to_owned();
    // SIG_IGN survives exec, so every `sleep` the loop forks ignores SIGTERM too.
    let script = "trap '' TERM; while :; do sleep 0.05 & sleep 0.05; done";
    let mut stubborn = cluster
        .spawn_in_pod("shop", "client", Command::new("sh").args(["-c", script]))
        .unwrap();
    let pod_cgroup = cluster.pod("shop", "client").unwrap().cgroup;
    harness::wait_until("the script to fork", IO_TIMEOUT, || {
        std::fs::read_to_string(pod_cgroup.join("cgroup.procs"))
            .unwrap()
            .lines()
            .count()
            >= 2
    })
    .unwrap();
    drop(cluster);
    assert_exits(&mut stubborn, "SIGTERM-proof process killed at teardown");
    assert_eq!(harness::leftovers(&prefix), Vec::<String>::new());
}

#[test]
fn a_pod_that_fails_to_start_leaves_nothing() {
    // 7 steps build TOPOLOGY (cluster cgroup, fabric, 2 nodes, 3 pods); the 8th fails.
    let options = ClusterOptions {
        fail_after_steps: Some(7),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::from_yaml_with(TOPOLOGY, options).unwrap();
    assert_fails(cluster.add_pod(harness::pod("shop", "late", "n2")), "injected failure");
    assert_fails(cluster.pod("shop", "late"), "no pod shop/late");
    let netns = format!("{}-pod-shop.late", cluster.prefix());
    let cgroup = cluster.cgroup_dir().join("pod-shop.late");
    assert!(!std::path::Path::new("/run/netns").join(netns).exists() && !cgroup.exists());
    assert_eq!(cluster.pods().len(), 3);
}
