//! `connect`: connection set-up.
//!
//! 1. New connections/s with one 1 kB HTTP request each (`Connection: close`, 16 at a
//!    time): direct pod→pod vs through the mesh (capture + HBONE stream set-up).
//! 2. The cost of capture alone, ours against Istio's: connect() + reset from an
//!    ambient pod to mesh-node's 15001 listener in that pod, redirected by our eBPF
//!    connect4 hook vs by an iptables `nat OUTPUT REDIRECT` rule (Istio's way), same
//!    listener, same client. The rule lives only in the bench's own pod netns (removed with
//!    it) and is added after the eBPF runs, so conntrack, which the nat table enables, is
//!    charged to the iptables runs only — as it would be in a pod with Istio's rules.
//!    Both kinds end in a reset by the daemon: the eBPF ones after its dial to the node's
//!    closed port is refused, the iptables ones at once (no original destination is known).

use std::process::Command;

use anyhow::bail;

use super::lab::{CAPTURED_CLOSED_PORT, HTTP_PORT, IPTABLES_PORT, Lab, PodRef};
use super::report::{Better, Row, Stat, Target};
use super::{BenchOptions, progress};

const CLIENT: PodRef = ("mesh", "client");

pub fn run(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let secs = if opts.quick { "2" } else { "4" };
    let mut rows = end_to_end(lab, opts, secs)?;
    rows.extend(capture(lab, opts, secs)?);
    Ok(rows)
}

fn end_to_end(lab: &Lab, opts: &BenchOptions, secs: &str) -> anyhow::Result<Vec<Row>> {
    let paths: [(&str, PodRef, PodRef); 2] = [
        ("direct pod→pod cross-node", ("plain", "client"), ("plain", "remote")),
        ("mesh cross-node (HBONE)", CLIENT, ("mesh", "remote")),
    ];
    let mut rate = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let mut errors = [0u64; 2];
    let mut first: [Option<String>; 2] = [None, None];
    for rep in 0..opts.reps() {
        for (i, (label, client, server)) in paths.iter().enumerate() {
            progress(&format!("connect rep {}/{}: {label}", rep + 1, opts.reps()));
            let target = format!("{}:{HTTP_PORT}", lab.ip(*server)?);
            match lab.load(
                *client,
                &["connect", "--http", "--target", &target, "--conc", "16", "--secs", secs],
            ) {
                Ok(r) => {
                    rate[i].push(r.per_sec);
                    p99[i].push(r.p99_us);
                    errors[i] += r.errors;
                    first[i] = first[i].take().or(r.first_error);
                }
                Err(e) => eprintln!("bench: connect {label}: {e:#}"),
            }
        }
    }
    let direct = (Stat::of(&rate[0]), Stat::of(&p99[0]));
    let mut conn = Row::new(
        "connect",
        "new connections/s (1 request each, 16 at a time)",
        paths[1].0,
        "conn/s",
        Stat::of(&rate[1]),
        Better::Higher,
    )
    .vs(paths[0].0, &direct.0)
    .target(Target::RatioAtLeast(0.50));
    if errors[1] > 0 {
        conn = conn.note(format!("{} failed: {}", errors[1], first[1].as_deref().unwrap_or("?")));
    }
    let lat = Row::new(
        "connect",
        "connection + request p99",
        paths[1].0,
        "µs",
        Stat::of(&p99[1]),
        Better::Lower,
    )
    .vs(paths[0].0, &direct.1);
    Ok(vec![conn, lat])
}

/// Connect-loop figures of one capture method over the repetitions.
struct CaptureRuns {
    rate: Vec<f64>,
    p50: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

fn capture(lab: &Lab, opts: &BenchOptions, secs: &str) -> anyhow::Result<Vec<Row>> {
    let gw = lab.gateway_ip(CLIENT)?;
    let measure = |port: u16, what: &str| -> anyhow::Result<CaptureRuns> {
        let (mut rate, mut p50, mut errors, mut first) = (Vec::new(), Vec::new(), 0, None);
        for rep in 0..opts.reps() {
            progress(&format!("connect rep {}/{}: capture by {what}", rep + 1, opts.reps()));
            let target = format!("{gw}:{port}");
            let r = lab.load(
                CLIENT,
                &["connect", "--target", &target, "--conc", "16", "--secs", secs],
            )?;
            rate.push(r.per_sec);
            p50.push(r.p50_us);
            errors += r.errors;
            first = first.or(r.first_error);
        }
        Ok(CaptureRuns {
            rate,
            p50,
            errors,
            first_error: first,
        })
    };
    let ebpf = measure(CAPTURED_CLOSED_PORT, "eBPF")?;
    iptables_redirect(lab, gw)?;
    let ipt = measure(IPTABLES_PORT, "iptables")?;
    let base = "iptables nat OUTPUT REDIRECT → same listener (Istio's capture)";
    let path = "eBPF connect4 → mesh-node 15001 in the pod";
    let mut rate = Row::new(
        "connect",
        "capture only: connect()+reset/s, 16 at a time",
        path,
        "conn/s",
        Stat::of(&ebpf.rate),
        Better::Higher,
    )
    .vs(base, &Stat::of(&ipt.rate));
    if ebpf.errors + ipt.errors > 0 {
        let why = |e: &Option<String>| e.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
        rate = rate.note(format!(
            "failed connects: eBPF {}{}, iptables {}{}",
            ebpf.errors,
            why(&ebpf.first_error),
            ipt.errors,
            why(&ipt.first_error)
        ));
    }
    let lat = Row::new(
        "connect",
        "capture only: connect() p50",
        path,
        "µs",
        Stat::of(&ebpf.p50),
        Better::Lower,
    )
    .vs(base, &Stat::of(&ipt.p50));
    Ok(vec![rate, lat])
}

/// Istio-style rule in the client pod's own netns (created by the bench, gone with it).
fn iptables_redirect(lab: &Lab, gw: std::net::Ipv4Addr) -> anyhow::Result<()> {
    let mut cmd = Command::new("iptables");
    cmd.args([
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        &gw.to_string(),
        "--dport",
        &IPTABLES_PORT.to_string(),
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let out = lab.cluster.run_in_pod(CLIENT.0, CLIENT.1, cmd)?;
    if !out.status.success() {
        bail!(
            "iptables in {}/{} failed (apt install iptables): {}",
            CLIENT.0,
            CLIENT.1,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
