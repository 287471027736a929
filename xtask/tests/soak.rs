//! e2e soak (issue 21): 10,000 concurrent connections from a pod on one node to pods on
//! the other, all open at the same time, each moving its own byte pattern both ways and
//! checked byte for byte. 9,000 go through the node daemons only (captured, HBONE
//! across nodes, to an echo server); 1,000 go to a Service whose namespace uses a
//! waypoint (HBONE to the waypoint, HTTP there, HBONE again to the pod) as POSTs
//! answered with their own body. In the bench lab (`xtask::bench::lab`), without its
//! reference tools. Prints the time taken and each daemon's RSS while everything is
//! held and its peak. Needs root; RAII teardown also on failure.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use xtask::bench::lab::{HTTP_PORT, Lab, PodRef, WAYPOINT_VIP};
use xtask::bench::procstat;
use xtask::bench::soak::{Held, SoakResult};

const CONNS: usize = 10_000;
/// The share through the waypoint.
const VIA_WAYPOINT: usize = CONNS / 10;
/// Pattern bytes each connection sends and gets back (after a 64-byte first round trip).
const BYTES: usize = 16 << 10;
const ECHO_PORT: u16 = 7000;
const CLIENT: PodRef = ("mesh", "client");
const SERVER: PodRef = ("mesh", "remote");

/// (name, pid) of both node daemons and the waypoint.
fn daemons(lab: &Lab) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = lab
        .node_pids()
        .into_iter()
        .map(|(n, p)| (format!("mesh-node {n}"), p))
        .collect();
    v.extend(lab.waypoint.as_ref().map(|g| ("mesh-waypoint".to_owned(), g.pid())));
    v
}

fn figures(pids: &[(String, u32)], pick: impl Fn(procstat::ProcSample) -> f64) -> String {
    pids.iter()
        .map(|(n, p)| {
            let mib = procstat::sample(*p).map_or(f64::NAN, &pick);
            format!("{n} {mib:.1} MiB")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_line<T: serde::de::DeserializeOwned>(out: &mut impl BufRead, what: &str) -> T {
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("the soak tool's {what} line ({e}): {line:?}"))
}

#[test]
fn ten_thousand_concurrent_tunneled_connections_lose_and_alter_nothing() {
    let started = Instant::now();
    let mut lab = Lab::start_mesh().expect("bench lab");
    assert!(lab.waypoint.is_some(), "the lab's waypoint did not start");
    let echo = lab.tool(&["echo", "--listen", &format!("0.0.0.0:{ECHO_PORT}")]);
    lab.spawn(SERVER, echo).expect("echo server");
    lab.wait_tcp(SERVER, SocketAddr::from(([127, 0, 0, 1], ECHO_PORT)))
        .expect("echo server up");
    let pids = daemons(&lab);
    let idle = figures(&pids, |s| s.rss_mib);

    let raw = format!("{}:{ECHO_PORT}", lab.ip(SERVER).expect("server ip"));
    let http = format!("{WAYPOINT_VIP}:{HTTP_PORT}");
    let (raw_conns, http_conns, bytes) = (
        (CONNS - VIA_WAYPOINT).to_string(),
        VIA_WAYPOINT.to_string(),
        BYTES.to_string(),
    );
    let mut cmd = lab.tool(&[
        "soak",
        "--raw",
        &raw,
        "--raw-conns",
        &raw_conns,
        "--http",
        &http,
        "--http-conns",
        &http_conns,
        "--bytes",
        &bytes,
        "--wait-stdin",
    ]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let soak_started = Instant::now();
    let mut tool = lab
        .cluster
        .spawn_in_pod(CLIENT.0, CLIENT.1, cmd)
        .expect("soak tool in mesh/client");
    let mut out = BufReader::new(tool.child_mut().stdout.take().expect("stdout"));
    let held: Held = json_line(&mut out, "held");
    let at_hold = figures(&pids, |s| s.rss_mib);
    let mut stdin = tool.child_mut().stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("tell the tool to transfer");
    let result: SoakResult = json_line(&mut out, "result");
    let soak_secs = soak_started.elapsed().as_secs_f64();
    eprintln!(
        "FIGURE soak: {} connections ({http_conns} through the waypoint) held at once after {:.1} s; \
         {} verified, {} of {} pattern bytes each way came back unaltered; soak {soak_secs:.1} s, test {:.1} s",
        held.held,
        held.open_secs,
        result.verified,
        result.bytes_verified,
        result.bytes_sent,
        started.elapsed().as_secs_f64()
    );
    eprintln!("FIGURE soak RSS idle: {idle}");
    eprintln!("FIGURE soak RSS with all held: {at_hold}");
    eprintln!("FIGURE soak peak RSS (VmHWM): {}", figures(&pids, |s| s.peak_mib));
    assert_eq!(held.held, CONNS, "every connection open at once: {held:?}");
    assert_eq!(
        result.verified, CONNS,
        "every connection's pattern came back: {result:?}"
    );
    assert_eq!(
        (result.bytes_sent, result.bytes_verified),
        ((CONNS * BYTES) as u64, (CONNS * BYTES) as u64),
        "no byte lost or altered: {result:?}"
    );
}
