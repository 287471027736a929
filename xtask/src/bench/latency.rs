//! `latency`: 1 kB HTTP/1.1 responses at fixed rates (1,000 and 5,000 requests/s) on 16
//! keep-alive connections, open loop corrected for coordinated omission (see `tool`):
//! p50/p90/p99/p99.9 direct vs mesh L4 (HBONE) vs mesh through the waypoint.
//!
//! The waypoint row: the client calls Service `wpmesh/bench` by its ClusterIP; that
//! namespace uses its waypoint (`istio.io/use-waypoint`), so the client's node daemon
//! carries the request over HBONE to mesh-waypoint's 15008 (cross-node), which routes it
//! (VirtualService) and sends it over HBONE to the server pod (same node as the waypoint).

use std::net::Ipv4Addr;

use super::lab::{HTTP_PORT, Lab, PodRef, WAYPOINT_VIP};
use super::report::{Better, Row, Stat, Target};
use super::{BenchOptions, progress};

pub const DIRECT: &str = "direct pod→pod cross-node";

struct Path {
    label: &'static str,
    client: PodRef,
    /// A pod, or `None`: the waypoint-fronted Service VIP.
    server: Option<PodRef>,
    host: &'static str,
}

const PATHS: [Path; 3] = [
    Path {
        label: DIRECT,
        client: ("plain", "client"),
        server: Some(("plain", "remote")),
        host: "bench",
    },
    Path {
        label: "mesh L4 cross-node (HBONE)",
        client: ("mesh", "client"),
        server: Some(("mesh", "remote")),
        host: "bench",
    },
    Path {
        label: "mesh via waypoint (Service VIP → HBONE → waypoint → HBONE)",
        client: ("mesh", "client"),
        server: None,
        host: "bench:8080",
    },
];

const RATES: [u32; 2] = [1000, 5000];
const QUANTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

pub fn run(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let secs = if opts.quick { "2" } else { "6" };
    // [rate][path][quantile] -> reps
    let mut lat = vec![vec![vec![Vec::new(); QUANTILES.len()]; PATHS.len()]; RATES.len()];
    let mut errors = vec![vec![0u64; PATHS.len()]; RATES.len()];
    let mut first_error: Vec<Option<String>> = vec![None; PATHS.len()];
    for rep in 0..opts.reps() {
        for (r, rate) in RATES.iter().enumerate() {
            for (i, p) in PATHS.iter().enumerate() {
                if p.server.is_none() && lab.waypoint.is_none() {
                    continue;
                }
                progress(&format!(
                    "latency rep {}/{}: {} @{rate}/s",
                    rep + 1,
                    opts.reps(),
                    p.label
                ));
                let ip: Ipv4Addr = match p.server {
                    Some(pod) => lab.ip(pod)?,
                    None => WAYPOINT_VIP,
                };
                let target = format!("{ip}:{HTTP_PORT}");
                let args = [
                    "rate",
                    "--target",
                    &target,
                    "--host",
                    p.host,
                    "--rate",
                    &rate.to_string(),
                    "--conns",
                    "16",
                    "--secs",
                    secs,
                ];
                match lab.load(p.client, &args) {
                    Ok(res) => {
                        for (q, v) in [res.p50_us, res.p90_us, res.p99_us, res.p999_us]
                            .into_iter()
                            .enumerate()
                        {
                            lat[r][i][q].push(v);
                        }
                        errors[r][i] += res.errors;
                        first_error[i] = first_error[i].take().or(res.first_error);
                    }
                    Err(e) => eprintln!("bench: latency {} @{rate}: {e:#}", p.label),
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (r, rate) in RATES.iter().enumerate() {
        for (q, quantile) in QUANTILES.iter().enumerate() {
            let direct = Stat::of(&lat[r][0][q]);
            for (i, p) in PATHS.iter().enumerate().skip(1) {
                let mut row = Row::new(
                    "latency",
                    &format!("1 kB HTTP {quantile} @{rate}/s"),
                    p.label,
                    "µs",
                    Stat::of(&lat[r][i][q]),
                    Better::Lower,
                )
                .vs(DIRECT, &direct);
                if i == 1 && *rate == 1000 {
                    match *quantile {
                        "p50" => row = row.target(Target::DeltaAtMost(90.0)),
                        "p99" => row = row.target(Target::DeltaAtMost(130.0)),
                        _ => {}
                    }
                }
                if errors[r][i] > 0 {
                    row = row.note(format!(
                        "{} failed requests: {}",
                        errors[r][i],
                        first_error[i].as_deref().unwrap_or("?")
                    ));
                }
                rows.push(row);
            }
        }
    }
    Ok(rows)
}
