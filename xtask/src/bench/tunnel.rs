//! `cargo xtask bench tunnel`: direct pod-to-pod TCP versus the mesh (HBONE cross-node
//! and same-node), in one run on one local cluster, plus the node daemons' memory.
//!
//! Throughput: iperf3 (`-P 1` and `-P 8`, receiver rate). Latency: 1 kB request/response
//! round trips on one connection (closed loop), p50/p99. All tools and both daemons share
//! the machine's CPUs, so compare ratios from one run, not absolute figures.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::harness::{Cluster, ProcessGuard};
use crate::mesh::{LocalMesh, MeshOptions};

#[derive(Clone, Debug)]
pub struct TunnelBenchOptions {
    /// Seconds per iperf3 run.
    pub secs: u32,
    /// Round trips per latency run.
    pub round_trips: u32,
}

impl Default for TunnelBenchOptions {
    fn default() -> Self {
        Self { secs: 5, round_trips: 5000 }
    }
}

const TOPOLOGY: &str = "
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
metadata: {name: mesh, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec: {nodeName: n1, serviceAccountName: client}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: mesh}
spec: {nodeName: n2, serviceAccountName: server}
---
apiVersion: v1
kind: Pod
metadata: {name: local, namespace: mesh}
spec: {nodeName: n1, serviceAccountName: server}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: plain}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: plain}
spec: {nodeName: n2}
";

/// Closed-loop 1 kB ping-pong; prints `p50_us p99_us`.
const LATENCY_CLIENT: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 1024; lat = []
for i in range(n + 100):
    t = time.perf_counter_ns(); s.sendall(msg); got = 0
    while got < 1024:
        b = s.recv(1024 - got)
        if not b: raise SystemExit("closed")
        got += len(b)
    if i >= 100: lat.append(time.perf_counter_ns() - t)
lat.sort(); print(lat[len(lat)//2] / 1000, lat[len(lat)*99//100] / 1000)
"#;

const ECHO_SERVER: &str = r#"
import socket, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind(("0.0.0.0", 7000)); l.listen(64)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(65536)
        if not b: return
        c.sendall(b)
while True:
    c, _ = l.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

struct Path {
    label: &'static str,
    client: (&'static str, &'static str),
    server: (&'static str, &'static str),
}

const PATHS: [Path; 3] = [
    Path { label: "direct pod->pod (cross-node)", client: ("plain", "client"), server: ("plain", "remote") },
    Path { label: "mesh cross-node (HBONE)", client: ("mesh", "client"), server: ("mesh", "remote") },
    Path { label: "mesh same-node (HBONE)", client: ("mesh", "client"), server: ("mesh", "local") },
];

#[derive(Debug, Default, Clone)]
pub struct PathFigures {
    pub label: String,
    pub p1_gbps: f64,
    pub p8_gbps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn run_tunnel_bench(opts: &TunnelBenchOptions) -> anyhow::Result<Vec<PathFigures>> {
    let cluster = Cluster::from_yaml(TOPOLOGY).context("creating the bench cluster")?;
    let mut mesh = LocalMesh::start(&cluster, MeshOptions::default()).context("starting mesh-node")?;
    mesh.wait_ready(&cluster, Duration::from_secs(60)).context("mesh-node readiness")?;
    let rss_idle = rss_all(&mesh, &cluster);
    let _servers = start_servers(&cluster)?;
    let mut out = Vec::new();
    for p in &PATHS {
        eprintln!("bench: {} ...", p.label);
        let ip = cluster.pod(p.server.0, p.server.1)?.ip;
        let mut f = PathFigures { label: p.label.into(), ..Default::default() };
        f.p1_gbps = iperf(&cluster, p, ip, 1, opts.secs)?;
        f.p8_gbps = iperf(&cluster, p, ip, 8, opts.secs)?;
        (f.p50_us, f.p99_us) = latency(&cluster, p, ip, opts.round_trips)?;
        out.push(f);
    }
    let rss_after = rss_all(&mesh, &cluster);
    print_report(&out, &rss_idle, &rss_after);
    Ok(out)
}

fn start_servers(c: &Cluster) -> anyhow::Result<Vec<ProcessGuard>> {
    let mut guards = Vec::new();
    for (ns, pod) in [("plain", "remote"), ("mesh", "remote"), ("mesh", "local")] {
        let mut iperf = Command::new("iperf3");
        iperf.args(["-s", "-p", "5201"]).stdout(std::process::Stdio::null());
        guards.push(c.spawn_in_pod(ns, pod, iperf).context("iperf3 -s (apt install iperf3)")?);
        let mut echo = Command::new("python3");
        echo.args(["-c", ECHO_SERVER]);
        guards.push(c.spawn_in_pod(ns, pod, echo).context("python3 echo server")?);
        for port in [5201, 7000] {
            c.wait_tcp_in_pod(ns, pod, SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(20))?;
        }
    }
    Ok(guards)
}

fn iperf(c: &Cluster, p: &Path, ip: Ipv4Addr, streams: u32, secs: u32) -> anyhow::Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", &ip.to_string(), "-p", "5201", "-J", "-t", &secs.to_string(), "-P", &streams.to_string()]);
    let out = c.run_in_pod(p.client.0, p.client.1, cmd)?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    match json["end"]["sum_received"]["bits_per_second"].as_f64() {
        Some(bps) => Ok(bps / 1e9),
        None => bail!("iperf3 {} -P {streams} failed: {}", p.label, json["error"]),
    }
}

fn latency(c: &Cluster, p: &Path, ip: Ipv4Addr, n: u32) -> anyhow::Result<(f64, f64)> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", LATENCY_CLIENT, &ip.to_string(), "7000", &n.to_string()]);
    let out = c.run_in_pod(p.client.0, p.client.1, cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match v.as_slice() {
        [p50, p99] => Ok((*p50, *p99)),
        _ => bail!("latency client on {} failed: {text} {}", p.label, String::from_utf8_lossy(&out.stderr)),
    }
}

/// (node, VmRSS MiB, VmHWM MiB) per daemon.
fn rss_all(mesh: &LocalMesh, c: &Cluster) -> Vec<(String, f64, f64)> {
    c.nodes()
        .iter()
        .filter_map(|n| {
            let pid = mesh.pid(&n.name)?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb = |key: &str| -> f64 {
                status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0.0)
            };
            Some((n.name.clone(), kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0))
        })
        .collect()
}

fn print_report(rows: &[PathFigures], idle: &[(String, f64, f64)], after: &[(String, f64, f64)]) {
    let direct = rows.first().cloned().unwrap_or_default();
    println!("\n{:<32} {:>10} {:>7} {:>10} {:>7} {:>9} {:>9}", "path", "1 stream", "ratio", "8 streams", "ratio", "p50 µs", "p99 µs");
    for r in rows {
        println!(
            "{:<32} {:>7.2} Gb {:>6.2}x {:>7.2} Gb {:>6.2}x {:>9.1} {:>9.1}",
            r.label,
            r.p1_gbps,
            r.p1_gbps / direct.p1_gbps.max(1e-9),
            r.p8_gbps,
            r.p8_gbps / direct.p8_gbps.max(1e-9),
            r.p50_us,
            r.p99_us
        );
    }
    for ((node, idle_rss, _), (_, rss, peak)) in idle.iter().zip(after) {
        println!("mesh-node {node}: RSS idle {idle_rss:.1} MiB, after load {rss:.1} MiB, peak {peak:.1} MiB");
    }
}
