//! `tunnel`: L4 throughput with iperf3 (`-P 1` and `-P 8`, receiver rate), pod to pod:
//! direct TCP (the baseline), the mesh cross-node (HBONE) and same-node, and stunnel
//! (mutual TLS 1.3 between the same two pods) as the plain-TLS-tunnel reference.
//! Paths alternate within every repetition so that drifts of the machine hit all alike.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

use super::lab::{IPERF_PORT, Lab, PodRef, STUNNEL_LOCAL_PORT};
use super::report::{Better, Row, Stat, Target};
use super::{BenchOptions, progress};

struct Path {
    label: &'static str,
    client: PodRef,
    /// Server pod, or `None`: the stunnel client's local port.
    server: Option<PodRef>,
    /// Targets for 1 and 8 streams (docs/architecture.md "Performance targets").
    targets: [Option<f64>; 2],
}

const DIRECT: &str = "direct TCP pod→pod cross-node";

const PATHS: [Path; 4] = [
    Path {
        label: DIRECT,
        client: ("plain", "client"),
        server: Some(("plain", "remote")),
        targets: [None, None],
    },
    Path {
        label: "mesh cross-node (HBONE)",
        client: ("mesh", "client"),
        server: Some(("mesh", "remote")),
        targets: [Some(0.55), Some(0.40)],
    },
    Path {
        label: "mesh same-node",
        client: ("mesh", "client"),
        server: Some(("mesh", "local")),
        targets: [Some(0.85), Some(0.85)],
    },
    Path {
        label: "stunnel mTLS cross-node (reference)",
        client: ("plain", "client"),
        server: None,
        targets: [None, None],
    },
];

pub fn run(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let secs = if opts.quick { 2 } else { 5 };
    let mut gbps = vec![[Vec::new(), Vec::new()]; PATHS.len()];
    for rep in 0..opts.reps() {
        for (s, streams) in [1u32, 8].into_iter().enumerate() {
            for (i, p) in PATHS.iter().enumerate() {
                progress(&format!(
                    "tunnel rep {}/{}: {} -P {streams}",
                    rep + 1,
                    opts.reps(),
                    p.label
                ));
                let ip = match p.server {
                    Some(pod) => lab.ip(pod)?,
                    None => Ipv4Addr::LOCALHOST,
                };
                let port = if p.server.is_some() {
                    IPERF_PORT
                } else {
                    STUNNEL_LOCAL_PORT
                };
                match iperf(lab, p.client, ip, port, streams, secs) {
                    Ok(v) => gbps[i][s].push(v),
                    Err(e) => eprintln!("bench: {} -P {streams}: {e:#}", p.label),
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (s, streams) in ["1 stream", "8 streams"].into_iter().enumerate() {
        let direct = Stat::of(&gbps[0][s]);
        for (i, p) in PATHS.iter().enumerate().skip(1) {
            let mut row = Row::new(
                "tunnel",
                &format!("iperf3 {streams}"),
                p.label,
                "Gbit/s",
                Stat::of(&gbps[i][s]),
                Better::Higher,
            )
            .vs(DIRECT, &direct);
            if let Some(t) = p.targets[s] {
                row = row.target(Target::RatioAtLeast(t));
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

fn iperf(lab: &Lab, (ns, pod): PodRef, ip: Ipv4Addr, port: u16, streams: u32, secs: u32) -> anyhow::Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args([
        "-c",
        &ip.to_string(),
        "-p",
        &port.to_string(),
        "-J",
        "-t",
        &secs.to_string(),
        "-P",
        &streams.to_string(),
    ]);
    let out = lab.cluster.run_in_pod(ns, pod, cmd)?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    match json["end"]["sum_received"]["bits_per_second"].as_f64() {
        Some(bps) => Ok(bps / 1e9),
        None => bail!("iperf3 failed: {}", json["error"]),
    }
}
