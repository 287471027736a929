//! Shared pieces of the capture e2e tests (included with `#[path]`; as its own test
//! target it holds no tests). Real daemons, real eBPF, real netns from `xtask::harness`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use xtask::harness::{self, Cluster, ProcessGuard};

pub const HELPER_ENV: &str = "MESH_CAPTURE_HELPER";

/// Two nodes; namespace `shop` enrolled (pod `a`, app client, on n1; pod `b`, app web,
/// on n2) and namespace `plain` not: the base the HBONE and abuse e2e tests extend.
pub const TWO_NODES: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
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
metadata: {name: a, namespace: shop, labels: {app: client}}
spec: {nodeName: n1, serviceAccountName: client}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}}
spec: {nodeName: n2, serviceAccountName: web}
";

/// Polls `f` until it returns `Some`, failing with `what` after `timeout`.
/// Asserts the app's peer (`app_peer`) is the daemon relaying for the client whose own
/// socket is `client_local`: the client's IP (the daemon preserves it, docs/capture.md
/// §5) on a port other than the client's, which a connection that bypassed the daemon
/// would keep.
pub fn assert_relayed_for(app_peer: &str, client_local: &str, client: std::net::Ipv4Addr, what: &str) {
    let peer: SocketAddr = app_peer
        .parse()
        .unwrap_or_else(|e| panic!("{what}: app_peer {app_peer:?}: {e}"));
    let local: SocketAddr = client_local
        .parse()
        .unwrap_or_else(|e| panic!("{what}: local {client_local:?}: {e}"));
    assert_eq!(
        peer.ip(),
        client,
        "{what}: the app sees the client's IP (peer {peer}, client {local})"
    );
    assert_ne!(
        peer.port(),
        local.port(),
        "{what}: relayed by the daemon (peer {peer}, client {local})"
    );
}

pub fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    xtask::harness::wait_for(what, timeout, f).unwrap_or_else(|e| panic!("{e}"))
}

pub fn config_dir(cluster: &Cluster) -> PathBuf {
    cluster.state_dir().join("config")
}

/// The cluster's mesh CA (started on first use, one per cluster; the cluster's teardown
/// stops it with every process in its cgroups) and the flags pointing a daemon at it
/// with a fresh token bound to `node`.
pub fn ca_flags(cluster: &Cluster, node: &str) -> Vec<String> {
    with_ca(cluster, |ca| {
        let token = ca.issue_node_token(node).expect("node token");
        ca_client_flags(ca, &token)
    })
}

/// Runs `f` on the cluster's CA, starting it on first use.
pub fn with_ca<T>(cluster: &Cluster, f: impl FnOnce(&mut xtask::mesh::ca::LocalCa) -> T) -> T {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};
    static CAS: LazyLock<Mutex<HashMap<String, xtask::mesh::ca::LocalCa>>> = LazyLock::new(Default::default);
    let mut cas = CAS.lock().unwrap_or_else(|p| p.into_inner());
    let ca = cas.entry(cluster.prefix().to_owned()).or_insert_with(|| {
        let dir = config_dir(cluster);
        std::fs::create_dir_all(&dir).expect("config dir");
        let mut ca = xtask::mesh::ca::LocalCa::new(cluster, &dir).expect("CA dir");
        ca.start(cluster).unwrap_or_else(|e| panic!("mesh-ca: {e}"));
        ca
    });
    f(ca)
}

/// `--ca-address`, `--ca-root-cert`, `--ca-token-file` for a client holding `token`.
pub fn ca_client_flags(ca: &xtask::mesh::ca::LocalCa, token: &std::path::Path) -> Vec<String> {
    vec![
        "--ca-address".into(),
        ca.address(),
        "--ca-root-cert".into(),
        ca.root_cert().display().to_string(),
        "--ca-token-file".into(),
        token.display().to_string(),
    ]
}

/// Starts mesh-node on `node` (its netns and cgroup), with the cluster's CA, and waits until it serves.
pub fn start_daemon(cluster: &Cluster, node: &str, extra: &[&str]) -> ProcessGuard {
    let guard = spawn_daemon(cluster, node, extra);
    if let Err(e) = cluster.wait_tcp_on_node(node, ([127, 0, 0, 1], 15021).into(), Duration::from_secs(60)) {
        panic!(
            "mesh-node on {node} did not come up: {e}\n{}",
            daemon_log(cluster, node)
        );
    }
    guard
}

/// Starts mesh-node on `node` without waiting (a running one may still hold 15021).
pub fn spawn_daemon(cluster: &Cluster, node: &str, extra: &[&str]) -> ProcessGuard {
    let n = cluster.node(node).expect("node");
    let ca = ca_flags(cluster, node);
    std::fs::create_dir_all(&n.state_dir).expect("state dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(n.state_dir.join("mesh-node.log"))
        .expect("log");
    let mut cmd = Command::new(harness::bin_path("mesh-node").expect("mesh-node binary"));
    cmd.args(["run", "--node", node, "--config-poll-ms", "100", "--log", "info"])
        .arg("--config-dir")
        .arg(config_dir(cluster))
        .arg("--bpffs-dir")
        .arg(&n.bpf_dir)
        .arg("--state-dir")
        .arg(&n.state_dir)
        .args(&ca)
        .args(extra)
        // The daemon logs (and writes its text access log) on stdout.
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    cluster.spawn_on_node(node, cmd).expect("spawn mesh-node")
}

/// Waits until the daemon on `node` holds at least `n` workload certificates.
pub fn wait_certs(c: &Cluster, node: &str, n: usize) {
    poll("workload certificates", Duration::from_secs(30), || {
        let d = config_dump(c, node);
        (d["certificates"].as_array().map_or(0, Vec::len) >= n).then_some(())
    });
}

pub fn daemon_log(cluster: &Cluster, node: &str) -> String {
    let n = cluster.node(node).expect("node");
    std::fs::read_to_string(n.state_dir.join("mesh-node.log")).unwrap_or_default()
}

/// `/config_dump` of the daemon on `node` (admin listens on the node's loopback).
pub fn config_dump(cluster: &Cluster, node: &str) -> Value {
    let reply = xtask::mesh::http_get(cluster, node, "127.0.0.1:15000", "/config_dump").expect("admin GET");
    serde_json::from_str(&reply.body).expect("config_dump JSON")
}

pub fn metrics(cluster: &Cluster, node: &str) -> String {
    xtask::mesh::http_get(cluster, node, "127.0.0.1:15020", "/metrics")
        .expect("metrics GET")
        .body
}

pub fn counter(dump: &Value, name: &str) -> u64 {
    dump["capture"]["counters"][name].as_u64().unwrap_or(0)
}

pub fn captured_pods(dump: &Value) -> Vec<String> {
    dump["capture"]["pods"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Deterministic byte stream for transfer checks.
pub fn pattern(seed: u64, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(64 * 1024);
        left -= n;
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        Some(v)
    })
}

pub fn pattern_sha(seed: u64, len: usize) -> String {
    let mut h = Sha256::new();
    for c in pattern(seed, len) {
        h.update(&c);
    }
    hex(&h.finalize())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends `len` bytes of `pattern(seed_out)` then half-closes, while reading to EOF and
/// hashing what comes back. Returns (received bytes, sha256 hex).
pub fn exchange(s: TcpStream, seed_out: u64, len: usize) -> std::io::Result<(usize, String)> {
    let mut w = s.try_clone()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for c in pattern(seed_out, len) {
            w.write_all(&c)?;
        }
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut r = s;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k;
    }
    writer.join().map_err(|_| std::io::Error::other("writer panicked"))??;
    Ok((n, hex(&h.finalize())))
}

/// Test server (runs in the test process, socket inside a pod netns). The first line
/// is a command: `hello` → one line `peer=<ip:port> local=<ip:port>`; `xfer <len>` →
/// exchange `len` bytes (the server sends seed 2; what it received goes to `results`);
/// `echo` → echoes lines until EOF.
pub struct Server {
    pub addr: SocketAddr,
    pub results: std::sync::mpsc::Receiver<(usize, String)>,
}

pub fn serve(listener: TcpListener) -> Server {
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || serve_one(s, tx));
        }
    });
    Server { addr, results: rx }
}

fn serve_one(s: TcpStream, tx: std::sync::mpsc::Sender<(usize, String)>) {
    let _ = s.set_nodelay(true);
    let Ok(rs) = s.try_clone() else { return };
    let mut r = BufReader::new(rs);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut w = s;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["hello"] => {
            let peer = w.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let local = w.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let _ = writeln!(w, "peer={peer} local={local}");
        }
        ["xfer", len] => {
            let len: usize = len.parse().unwrap_or(0);
            let mut h = Sha256::new();
            // Whatever the BufReader already buffered is part of the stream.
            let buffered = r.buffer().to_vec();
            h.update(&buffered);
            let mut n = buffered.len();
            let Ok(mut wc) = w.try_clone() else { return };
            let writer = std::thread::spawn(move || {
                for c in pattern(2, len) {
                    if wc.write_all(&c).is_err() {
                        return;
                    }
                }
                let _ = wc.shutdown(std::net::Shutdown::Write);
            });
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(k) = w.read(&mut buf) {
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                n += k;
            }
            let _ = writer.join();
            let _ = tx.send((n, hex(&h.finalize())));
        }
        ["echo"] => {
            let mut l = String::new();
            while r.read_line(&mut l).is_ok_and(|n| n > 0) {
                if w.write_all(l.as_bytes()).is_err() {
                    break;
                }
                l.clear();
            }
        }
        _ => {}
    }
}

/// Runs this test binary's `helper` entry inside the pod (its netns AND cgroup, so the
/// pod's eBPF programs apply) and returns its `RESULT` lines.
pub fn run_helper(cluster: &Cluster, ns: &str, pod: &str, mode: &str, args: &[String]) -> Vec<String> {
    let out = cluster
        .run_in_pod(ns, pod, helper_cmd(mode, args))
        .expect("run helper in pod");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(str::to_owned)
        .collect();
    assert!(
        !lines.is_empty(),
        "helper {mode} {args:?} in {ns}/{pod} printed no result: status {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

pub fn helper_cmd(mode: &str, args: &[String]) -> Command {
    let mut cmd = harness::test_helper("helper");
    cmd.env(HELPER_ENV, mode);
    cmd.env("MESH_CAPTURE_HELPER_ARGS", args.join(" "));
    cmd
}

/// The helper side, run when the test binary is started by [`helper_cmd`].
pub fn helper_main() {
    let Ok(mode) = std::env::var(HELPER_ENV) else { return };
    let args: Vec<String> = std::env::var("MESH_CAPTURE_HELPER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let addr: SocketAddr = args[0].parse().expect("helper address");
    match mode.as_str() {
        "hello" => {
            let line = hello(addr).unwrap_or_else(|e| format!("error={:?}", e.kind()));
            println!("RESULT {line}");
        }
        "xfer" => {
            let len: usize = args[1].parse().expect("len");
            let s = TcpStream::connect(addr).expect("connect");
            let view = format!(
                "local={} getpeername={}",
                s.local_addr().unwrap(),
                s.peer_addr().unwrap()
            );
            let mut w = s.try_clone().unwrap();
            w.write_all(format!("xfer {len}\n").as_bytes()).unwrap();
            let started = Instant::now();
            let (n, sha) = exchange(s, 1, len).expect("exchange");
            println!(
                "RESULT {view} received={n} sha={sha} secs={:.3}",
                started.elapsed().as_secs_f64()
            );
        }
        "loop" => {
            // Bounded: `count` connects, at most `secs` seconds.
            let count: usize = args[1].parse().expect("count");
            let secs: u64 = args[2].parse().expect("secs");
            let deadline = Instant::now() + Duration::from_secs(secs);
            let (mut captured, mut escaped, mut failed) = (0, 0, 0);
            let mut pace = xtask::harness::Ticker::every(Duration::from_millis(5));
            for _ in 0..count {
                if Instant::now() > deadline {
                    break;
                }
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => {
                        if s.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
                            captured += 1
                        } else {
                            escaped += 1
                        }
                    }
                    Err(_) => failed += 1,
                }
                pace.tick();
            }
            println!("RESULT captured={captured} escaped={escaped} failed={failed}");
        }
        "hold" => hold_loop(addr),
        "stall" => {
            // Slowloris from inside a pod: `count` connections, half a request line on
            // each, held until the test closes our stdin.
            let count: usize = args[1].parse().expect("count");
            let held: Vec<TcpStream> = (0..count)
                .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok())
                .filter_map(|mut s| s.write_all(b"GET /a-request-line-that-never-ends").ok().map(|()| s))
                .collect();
            println!("RESULT opened={}", held.len());
            let _ = std::io::stdin().read(&mut [0u8; 1]);
            drop(held);
        }
        other => panic!("unknown helper mode {other}"),
    }
}

pub struct Hold {
    pub guard: ProcessGuard,
    pub out: BufReader<std::process::ChildStdout>,
    pub first: String,
}

/// A long-lived echo connection from a helper in the pod (see `hold` below).
pub fn hold(c: &Cluster, ns: &str, pod: &str, to: SocketAddr) -> Hold {
    let mut cmd = helper_cmd("hold", &[to.to_string()]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut guard = c.spawn_in_pod(ns, pod, cmd).expect("spawn hold");
    let mut out = BufReader::new(guard.child_mut().stdout.take().expect("stdout"));
    let first = result_line(&mut out);
    let started = result_line(&mut out);
    assert!(
        started.contains("started"),
        "long-lived connection did not start: {first} {started}"
    );
    Hold { guard, out, first }
}

/// Next `RESULT` line of a helper (libtest prints its own lines too).
pub fn result_line(out: &mut impl BufRead) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            return String::new();
        }
        if let Some(r) = line.trim().strip_prefix("RESULT ") {
            return r.to_owned();
        }
    }
}

impl Hold {
    /// Ends the connection and returns (rounds, every round-trip ok).
    pub fn finish(mut self) -> (u64, bool) {
        drop(self.guard.child_mut().stdin.take());
        let last = result_line(&mut self.out);
        let r = kv(&last);
        let _ = self.guard.wait_timeout(Duration::from_secs(10));
        (
            r.get("rounds").and_then(|n| n.parse().ok()).unwrap_or(0),
            r.get("ok").is_some_and(|v| v == "true"),
        )
    }
}

/// A long-lived echo connection: one round-trip every 20 ms until stdin closes.
fn hold_loop(addr: SocketAddr) {
    let s = TcpStream::connect(addr).expect("connect");
    println!(
        "RESULT local={} getpeername={}",
        s.local_addr().unwrap(),
        s.peer_addr().unwrap()
    );
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    w.write_all(b"echo\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
        let _ = tx.send(());
    });
    let mut rounds = 0u64;
    let mut ok = true;
    // One round every 20 ms until the test closes our stdin.
    loop {
        let mut l = String::new();
        if w.write_all(format!("ping {rounds}\n").as_bytes()).is_err()
            || r.read_line(&mut l).map_or(true, |n| n == 0)
            || l.trim() != format!("ping {rounds}")
        {
            ok = false;
            break;
        }
        rounds += 1;
        if rounds == 1 {
            println!("RESULT started");
        }
        if rx.recv_timeout(Duration::from_millis(20)) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            break;
        }
    }
    println!("RESULT rounds={rounds} ok={ok}");
}

fn hello(addr: SocketAddr) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let local = s.local_addr()?;
    let peer = s.peer_addr()?;
    let mut w = s.try_clone()?;
    w.write_all(b"hello\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(format!(
        "local={local} getpeername={peer} {}",
        line.trim()
            .replace("peer=", "app_peer=")
            .replace("local=", "app_local=")
    ))
}

/// Parses `k=v k=v` into a lookup.
pub fn kv(line: &str) -> std::collections::BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Netfilter state visible from the current netns (iptables/ip6tables/arptables table
/// names; the tools are not installed here). The mesh must never change it.
pub fn netfilter_snapshot() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|_| "-".into());
    format!(
        "ipt={} ip6t={} arpt={}",
        read("/proc/thread-self/net/ip_tables_names").trim(),
        read("/proc/thread-self/net/ip6_tables_names").trim(),
        read("/proc/thread-self/net/arp_tables_names").trim()
    )
}

/// The rule-set dumps of whichever netfilter tools are installed (`iptables-save`,
/// `ip6tables-save`, `nft list ruleset`), run in the current netns.
fn ruleset_dumps(run: impl Fn(Command) -> Option<String>) -> String {
    let mut out = String::new();
    for (tool, args) in [
        ("iptables-save", &[][..]),
        ("ip6tables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let found =
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(tool).is_file());
        if found {
            let mut cmd = Command::new(tool);
            cmd.args(args);
            // Comment lines carry timestamps.
            let dump = run(cmd).unwrap_or_default();
            let rules: Vec<&str> = dump.lines().filter(|l| !l.starts_with('#')).collect();
            out.push_str(&format!(" {tool}=[{}]", rules.join(";")));
        }
    }
    out
}

fn output(o: Result<std::process::Output, impl std::fmt::Debug>) -> Option<String> {
    o.ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Netfilter state of the host, every node and every pod (table names from /proc, plus
/// the rule sets when the tools exist).
pub fn netfilter_everywhere(cluster: &Cluster) -> Vec<(String, String)> {
    let host = netfilter_snapshot() + &ruleset_dumps(|mut c| output(c.output()));
    let mut v = vec![("host".to_owned(), host)];
    for n in cluster.nodes() {
        let snap = cluster.in_node(&n.name, netfilter_snapshot).expect("in node")
            + &ruleset_dumps(|c| output(cluster.run_on_node(&n.name, c)));
        v.push((format!("node {}", n.name), snap));
    }
    for p in cluster.pods() {
        let snap = cluster
            .in_pod(&p.namespace, &p.name, netfilter_snapshot)
            .expect("in pod")
            + &ruleset_dumps(|c| output(cluster.run_in_pod(&p.namespace, &p.name, c)));
        v.push((format!("pod {}/{}", p.namespace, p.name), snap));
    }
    v
}

/// Everything pinned under `dir` (recursively), for "nothing left" assertions.
pub fn pinned_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}
