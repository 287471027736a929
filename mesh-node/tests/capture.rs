//! e2e: eBPF capture of enrolled pods (issue 4). Needs root; each test builds its own
//! netns cluster (harness RAII removes it, also on failure) and runs real mesh-node
//! daemons on it. Clients run inside pods (netns + cgroup) as this test binary's
//! `helper` entry, so the pods' cgroup programs apply to them.

#[path = "capture_support.rs"]
mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;
use xtask::harness::{self, Cluster};

const ENROLL: &str = "mesh.io/dataplane-mode";

/// Entry point for the in-pod clients (does nothing in a normal test run).
#[test]
#[ignore = "not a test: the in-pod client entry point that the e2e tests start with --ignored"]
fn helper() {
    helper_main();
}

const TOPOLOGY: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: plain}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: srv, namespace: plain}
spec: {nodeName: n1}
";

/// A cluster for one test. Not being root fails the test with the harness's reason
/// (it needs network namespaces, cgroups and eBPF), it never passes silently.
fn cluster(yaml: &str) -> Cluster {
    let c = Cluster::from_yaml(yaml).expect("cluster");
    c.write_config(&config_dir(&c)).expect("config");
    c
}

fn ip(c: &Cluster, ns: &str, pod: &str) -> Ipv4Addr {
    c.pod(ns, pod).expect("pod").ip
}

fn hello(c: &Cluster, ns: &str, pod: &str, to: SocketAddr) -> std::collections::BTreeMap<String, String> {
    kv(&run_helper(c, ns, pod, "hello", &[to.to_string()])[0])
}

fn host(addr: &str) -> String {
    addr.rsplit_once(':').map(|(h, _)| h.to_owned()).unwrap_or_default()
}

#[test]
fn outbound_is_captured_with_original_destination_and_bytes_intact() {
    let c = cluster(TOPOLOGY);
    let netfilter_before = netfilter_everywhere(&c);
    let daemon = start_daemon(&c, "n1", &[]);
    let srv = serve(c.listen_in_pod("plain", "srv", 8080).expect("listen"));
    let srv_addr = SocketAddr::from((ip(&c, "plain", "srv"), 8080));
    let a_ip = ip(&c, "shop", "a");

    // Enrolled client: lands on 127.0.0.1:15001, sees the original peer, and the daemon's
    // upstream leaves from the pod's own IP to the original destination.
    let r = hello(&c, "shop", "a", srv_addr);
    assert_eq!(
        host(&r["local"]),
        "127.0.0.1",
        "captured connect must land on the pod-local listener: {r:?}"
    );
    assert_eq!(r["getpeername"], srv_addr.to_string(), "{r:?}");
    assert_eq!(
        r["app_local"],
        srv_addr.to_string(),
        "upstream went to the original destination: {r:?}"
    );
    assert_eq!(
        host(&r["app_peer"]),
        a_ip.to_string(),
        "upstream leaves from the pod IP: {r:?}"
    );

    // A dual-stack socket dialing the v4-mapped address is captured too (connect6).
    let mapped = SocketAddr::from((ip(&c, "plain", "srv").to_ipv6_mapped(), 8080));
    let r = hello(&c, "shop", "a", mapped);
    assert_eq!(
        r["local"].split(']').next(),
        Some("[::ffff:127.0.0.1"),
        "v4-mapped connect captured: {r:?}"
    );
    assert_eq!(r["getpeername"], mapped.to_string(), "{r:?}");
    assert_eq!(r["app_local"], srv_addr.to_string(), "{r:?}");

    // Non-enrolled namespace: untouched.
    let r = hello(&c, "plain", "c", srv_addr);
    assert_eq!(host(&r["local"]), ip(&c, "plain", "c").to_string(), "{r:?}");
    assert_eq!(host(&r["app_peer"]), ip(&c, "plain", "c").to_string(), "{r:?}");

    // 64 MiB each way, checked by hash on both ends, with half-close.
    const LEN: usize = 64 << 20;
    let r = kv(&run_helper(&c, "shop", "a", "xfer", &[srv_addr.to_string(), LEN.to_string()])[0]);
    assert_eq!(host(&r["local"]), "127.0.0.1", "{r:?}");
    assert_eq!(r["received"], LEN.to_string(), "{r:?}");
    assert_eq!(r["sha"], pattern_sha(2, LEN), "server->client bytes differ");
    let (n, sha) = srv
        .results
        .recv_timeout(Duration::from_secs(60))
        .expect("server result");
    assert_eq!((n, sha), (LEN, pattern_sha(1, LEN)), "client->server bytes differ");
    let secs: f64 = r["secs"].parse().unwrap_or(0.0);
    eprintln!(
        "FIGURE outbound relay: 2 x 64 MiB in {secs:.3} s = {:.0} MiB/s each way",
        64.0 / secs.max(1e-9)
    );

    // The daemon's own sockets (upstreams created inside the pod netns) are never
    // captured: the pod's cgroup saw exactly the two client connects.
    let dump = config_dump(&c, "n1");
    assert_eq!(counter(&dump, "connect4_calls"), 2, "{}", dump["capture"]);
    assert_eq!(counter(&dump, "connect4_redirected"), 2, "{}", dump["capture"]);
    assert_eq!(counter(&dump, "connect6_redirected"), 1, "{}", dump["capture"]);
    assert_eq!(counter(&dump, "sockops_rekeyed"), 3, "{}", dump["capture"]);
    let daemon_cg = harness::cgroup_of(daemon.pid()).expect("cgroup of daemon");
    assert!(
        !daemon_cg.contains("pod-"),
        "daemon must run outside pod cgroups: {daemon_cg}"
    );
    let mut pods = captured_pods(&dump);
    pods.sort();
    assert_eq!(pods, vec!["shop/a", "shop/b"]);
    let pod_a = &dump["capture"]["pods"]["shop/a"];
    assert_eq!(pod_a["programs"].as_array().map(Vec::len), Some(6), "{pod_a}");
    assert_eq!(pod_a["attached"], 6, "{pod_a}");
    let m = metrics(&c, "n1");
    assert!(
        m.lines().any(|l| l.starts_with("mesh_capture_connections_total")
            && l.contains("direction=\"outbound\"")
            && l.contains("result=\"accepted\"")
            && l.ends_with(" 3")),
        "{m}"
    );
    // Entries are deleted when connections close.
    poll(
        "original-destination entries to be deleted at close",
        Duration::from_secs(10),
        || {
            let d = config_dump(&c, "n1");
            (counter(&d, "sockops_close_deleted") >= 3).then_some(())
        },
    );

    assert_eq!(
        netfilter_everywhere(&c),
        netfilter_before,
        "no iptables/nftables state may change"
    );
    drop(daemon);
}

#[test]
fn inbound_plaintext_is_steered_but_pod_loopback_is_not() {
    let c = cluster(TOPOLOGY);
    let _daemon = start_daemon(&c, "n1", &[]);
    let _app = serve(c.listen_in_pod("shop", "b", 8080).expect("listen"));
    let b_ip = ip(&c, "shop", "b");
    let app = SocketAddr::from((b_ip, 8080));

    // From a non-enrolled pod: steered through 15006; the daemon reaches the app from
    // the client's address with a socket of its own (docs/capture.md §5).
    let r = hello(&c, "plain", "c", app);
    assert_eq!(
        host(&r["local"]),
        ip(&c, "plain", "c").to_string(),
        "the client is not captured: {r:?}"
    );
    assert_eq!(r["getpeername"], app.to_string(), "{r:?}");
    assert_eq!(r["app_local"], app.to_string(), "original port kept: {r:?}");
    assert_relayed_for(&r["app_peer"], &r["local"], ip(&c, "plain", "c"), "steered to 15006");
    let steered = counter(&config_dump(&c, "n1"), "sk_lookup_steered");
    assert_eq!(steered, 1);

    // Inside the pod over loopback, and to its own IP: neither captured nor steered.
    let r = hello(&c, "shop", "b", SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(host(&r["app_peer"]), "127.0.0.1", "{r:?}");
    let r = hello(&c, "shop", "b", app);
    assert_eq!(host(&r["local"]), b_ip.to_string(), "own IP is not captured: {r:?}");
    let d = config_dump(&c, "n1");
    assert_eq!(
        counter(&d, "sk_lookup_steered"),
        steered,
        "pod-local traffic must not be steered: {}",
        d["capture"]
    );
    assert_eq!(counter(&d, "connect4_redirected"), 0, "{}", d["capture"]);

    // Enrolled to enrolled: captured outbound, then carried over HBONE to b's 15008
    // (mesh data path), so the inbound side is not steered through 15006.
    let r = hello(&c, "shop", "a", app);
    assert_eq!(host(&r["local"]), "127.0.0.1", "{r:?}");
    assert_eq!(r["getpeername"], app.to_string(), "{r:?}");
    let d = config_dump(&c, "n1");
    assert_eq!(
        host(&r["app_peer"]),
        ip(&c, "shop", "a").to_string(),
        "the caller's IP: {r:?}"
    );
    assert_eq!(counter(&d, "sk_lookup_steered"), steered);
    assert!(counter(&d, "sk_lookup_skip_daemon") >= 1, "{}", d["capture"]);
}

fn set_enrolled(c: &mut Cluster, ns: &str, on: bool) {
    c.set_namespace_annotation(ns, ENROLL, on.then_some("ambient"))
        .expect("annotation");
    c.write_config(&config_dir(c)).expect("config");
}

fn wait_captured(c: &Cluster, node: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    poll(
        &format!("captured pods to become {want:?}"),
        Duration::from_secs(20),
        || {
            let mut pods = captured_pods(&config_dump(c, node));
            pods.sort();
            (pods == want).then_some(())
        },
    );
}

#[test]
fn enroll_and_unenroll_while_a_connection_runs() {
    let mut c = cluster(&TOPOLOGY.replace("annotations: {mesh.io/dataplane-mode: ambient}", ""));
    let _daemon = start_daemon(&c, "n1", &[]);
    let srv = serve(c.listen_in_pod("plain", "srv", 8080).expect("listen"));
    wait_captured(&c, "n1", &[]);

    let direct = hold(&c, "shop", "a", srv.addr_in(&c));
    assert!(
        !direct.first.contains("local=127.0.0.1"),
        "not enrolled yet: {}",
        direct.first
    );

    set_enrolled(&mut c, "shop", true);
    wait_captured(&c, "n1", &["shop/a", "shop/b"]);
    let r = hello(&c, "shop", "a", srv.addr_in(&c));
    assert_eq!(host(&r["local"]), "127.0.0.1", "new connections are captured: {r:?}");
    let captured = hold(&c, "shop", "a", srv.addr_in(&c));
    assert!(captured.first.contains("local=127.0.0.1"), "{}", captured.first);

    set_enrolled(&mut c, "shop", false);
    wait_captured(&c, "n1", &[]);
    let r = hello(&c, "shop", "a", srv.addr_in(&c));
    assert_ne!(
        host(&r["local"]),
        "127.0.0.1",
        "new connections are no longer captured: {r:?}"
    );
    assert!(
        pinned_files(&c.node("n1").expect("node").bpf_dir.join("pods")).is_empty(),
        "un-enrolling removes the pinned links"
    );

    let (rounds, ok) = direct.finish();
    assert!(
        ok && rounds > 2,
        "the connection opened before enrollment survived: rounds={rounds} ok={ok}"
    );
    let (rounds, ok) = captured.finish();
    assert!(
        ok && rounds > 2,
        "the captured connection survived un-enrollment: rounds={rounds} ok={ok}"
    );
}

trait AddrIn {
    fn addr_in(&self, c: &Cluster) -> SocketAddr;
}

impl AddrIn for Server {
    /// The server listens on 0.0.0.0 in `plain/srv`; clients dial its pod IP.
    fn addr_in(&self, c: &Cluster) -> SocketAddr {
        SocketAddr::from((ip(c, "plain", "srv"), self.addr.port()))
    }
}

fn holder_pid(c: &Cluster) -> u32 {
    let d = config_dump(c, "n1");
    d["capture"]["fd_store"]["holder_pid"]
        .as_u64()
        .expect("fd store holder pid") as u32
}

fn kill_and_wait(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    poll("the killed process to exit", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie (its fds are closed) waiting for its reaper.
        (stat.is_empty()
            || stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .then_some(())
    });
}

#[test]
fn kill_9_and_restart_keeps_capture_attached() {
    let c = cluster(TOPOLOGY);
    let mut daemon = start_daemon(&c, "n1", &["--inbound-strict-on-miss"]);
    let srv = serve(c.listen_in_pod("plain", "srv", 8080).expect("listen"));
    let _app_b = serve(c.listen_in_pod("shop", "b", 8080).expect("listen"));
    let to = srv.addr_in(&c);
    let b_app = SocketAddr::from((ip(&c, "shop", "b"), 8080));
    let bpf_dir = c.node("n1").expect("node").bpf_dir;
    let mut pins_before = pinned_files(&bpf_dir);
    pins_before.sort();

    // A client loops connecting (bounded) across the crash and the restart.
    let mut cmd = helper_cmd("loop", &[to.to_string(), "1500".into(), "10".into()]);
    cmd.stdout(Stdio::piped());
    let mut looper = c.spawn_in_pod("shop", "a", cmd).expect("spawn loop");
    poll("the loop to be captured", Duration::from_secs(10), || {
        (counter(&config_dump(&c, "n1"), "connect4_redirected") >= 5).then_some(())
    });

    daemon.kill().expect("kill -9");
    let dead_at = Instant::now();
    // Capture stays: links and maps remain pinned with no daemon holding them.
    let mut pins_down = pinned_files(&bpf_dir);
    pins_down.sort();
    assert_eq!(pins_down, pins_before, "pins survive kill -9");
    // Inbound arriving while the daemon is down waits in the kept 15006 listener's
    // backlog and is served (steered, not bypassed) after the restart.
    let c_ref = &c;
    std::thread::scope(|s| {
        let inbound = s.spawn(move || hello(c_ref, "plain", "c", b_app));
        // The connect happens during the downtime: it waits in the kept listener's queue.
        poll("the inbound connect to queue on 15006", Duration::from_secs(10), || {
            (accept_queue(c_ref, "shop", "b", 15006) > 0).then_some(())
        });
        let restart = Instant::now();
        let _daemon = start_daemon(c_ref, "n1", &["--inbound-strict-on-miss"]);
        eprintln!(
            "FIGURE restart: down {:.2} s, restarted daemon serving after {:.2} s",
            restart.duration_since(dead_at).as_secs_f64(),
            restart.elapsed().as_secs_f64()
        );
        let dump = config_dump(c_ref, "n1");
        let a = &dump["capture"]["pods"]["shop/a"];
        assert_eq!(
            (a["adopted"].as_u64(), a["attached"].as_u64()),
            (Some(6), Some(0)),
            "re-adopted, not attached twice: {a}"
        );
        assert_eq!(
            a["listeners_from_fd_store"].as_u64(),
            Some(3),
            "listeners kept across the crash: {a}"
        );
        let r = inbound.join().expect("inbound client");
        let what = "inbound during downtime was steered, not bypassed";
        assert_relayed_for(&r["app_peer"], &r["local"], ip(c_ref, "plain", "c"), what);

        let status = looper.wait_timeout(Duration::from_secs(60)).expect("wait loop");
        assert!(status.is_some(), "loop helper did not finish");
        let mut out = String::new();
        std::io::Read::read_to_string(looper.child_mut().stdout.as_mut().expect("stdout"), &mut out).expect("read");
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .expect("loop result")
            .to_owned();
        let r = kv(&line);
        eprintln!("FIGURE kill -9 loop: {line}");
        assert_eq!(r["escaped"], "0", "a connection escaped capture: {line}");
        assert!(r["captured"].parse::<u32>().unwrap_or(0) > 5, "{line}");

        let r = hello(c_ref, "shop", "a", to);
        assert_eq!(host(&r["local"]), "127.0.0.1", "restarted daemon serves: {r:?}");
        assert_eq!(r["app_local"], to.to_string(), "{r:?}");
    });
}

/// Without the fd store (daemon and holder both gone), capture still never fails open:
/// captured connects are refused and, under `--inbound-strict-on-miss`, inbound is dropped.
#[test]
fn strict_on_miss_fails_closed_when_listeners_are_gone() {
    let c = cluster(TOPOLOGY);
    let mut daemon = start_daemon(&c, "n1", &["--inbound-strict-on-miss"]);
    let srv = serve(c.listen_in_pod("plain", "srv", 8080).expect("listen"));
    let _app_b = serve(c.listen_in_pod("shop", "b", 8080).expect("listen"));
    let b_app = SocketAddr::from((ip(&c, "shop", "b"), 8080));
    let holder = holder_pid(&c);
    daemon.kill().expect("kill -9");
    kill_and_wait(holder);

    let r = hello(&c, "shop", "a", srv.addr_in(&c));
    assert!(
        r.contains_key("error"),
        "a captured connect reached the destination unmeshed: {r:?}"
    );
    let r = hello(&c, "plain", "c", b_app);
    assert!(r.contains_key("error"), "inbound reached the app unmeshed: {r:?}");

    let _daemon = start_daemon(&c, "n1", &["--inbound-strict-on-miss"]);
    let dump = config_dump(&c, "n1");
    assert!(
        counter(&dump, "sk_lookup_miss_drop") >= 1,
        "{}",
        dump["capture"]["counters"]
    );
    let r = hello(&c, "plain", "c", b_app);
    assert_relayed_for(
        &r["app_peer"],
        &r["local"],
        ip(&c, "plain", "c"),
        "steered again after restart",
    );
    let r = hello(&c, "shop", "a", srv.addr_in(&c));
    assert_eq!(host(&r["local"]), "127.0.0.1", "{r:?}");
}

#[test]
fn stale_pins_of_vanished_pods_are_cleaned_on_restart() {
    let mut c = cluster(TOPOLOGY);
    let mut daemon = start_daemon(&c, "n1", &[]);
    wait_captured(&c, "n1", &["shop/a", "shop/b"]);
    daemon.kill().expect("kill -9");
    // While the daemon is down, pod b goes away (netns removed).
    c.remove_pod("shop", "b").expect("remove pod");
    c.write_config(&config_dir(&c)).expect("config");
    let _daemon = start_daemon(&c, "n1", &[]);
    let dump = config_dump(&c, "n1");
    assert_eq!(captured_pods(&dump), vec!["shop/a"]);
    let pods_dir = c.node("n1").expect("node").bpf_dir.join("pods");
    let left: Vec<_> = pinned_files(&pods_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("shop_b_"))
        .collect();
    assert!(left.is_empty(), "pins of the vanished pod are removed: {left:?}");
    assert_eq!(
        dump["capture"]["maps"]["pod_self"].as_array().map(Vec::len),
        Some(1),
        "{}",
        dump["capture"]["maps"]
    );
}

#[test]
fn a_pod_whose_netns_vanishes_is_cleaned_while_running() {
    let mut c = cluster(TOPOLOGY);
    let _daemon = start_daemon(&c, "n1", &["--enroll-retry-ms", "200"]);
    wait_captured(&c, "n1", &["shop/a", "shop/b"]);
    // The pod disappears but the (stale) configuration still lists it.
    c.remove_pod("shop", "b").expect("remove pod");
    wait_captured(&c, "n1", &["shop/a"]);
    let pods_dir = c.node("n1").expect("node").bpf_dir.join("pods");
    let left: Vec<_> = pinned_files(&pods_dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("shop_b_"))
        .collect();
    assert!(left.is_empty(), "pins of the vanished pod are removed: {left:?}");
    let dump = config_dump(&c, "n1");
    assert_eq!(
        dump["capture"]["maps"]["pod_self"].as_array().map(Vec::len),
        Some(1),
        "{}",
        dump["capture"]["maps"]
    );
    assert!(
        dump["capture"]["errors"]["shop/b"]
            .as_str()
            .is_some_and(|e| e.contains("netns")),
        "{}",
        dump["capture"]["errors"]
    );
}

/// Connections waiting in the accept queue of the pod's listener on `port`
/// (`rx_queue` of a LISTEN socket in /proc/net/tcp, read from inside the pod netns).
fn accept_queue(c: &Cluster, ns: &str, pod: &str, port: u16) -> u64 {
    let table = c
        .in_pod(ns, pod, || std::fs::read_to_string("/proc/thread-self/net/tcp"))
        .expect("in pod")
        .unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 4 && f[1].ends_with(&local) && f[3] == "0A")
        .filter_map(|f| u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok())
        .sum()
}
