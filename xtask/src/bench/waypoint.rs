//! `waypoint` (issue 6): L7 routing with a header match and a 90/10 weighted split,
//! mesh-waypoint vs HAProxy (Debian) with the equivalent rules vs direct to one backend.
//! All on the loopback of one pod netns (`plain/lab`, not captured): three 1 kB backends
//! `v1`..`v3` on 127.0.0.2-4, the waypoint on :15080, HAProxy on :15081.
//! Every 10th request carries `end-user: jason` (→ v3); the rest split 90/10 over v1/v2.
//! Figures: requests/s (closed loop, 16 keep-alive connections), p50/p99 at 1,000
//! requests/s (open loop), CPU per request and RSS of the proxy. A second mesh-waypoint
//! on :15082 has the same rules plus 100 L7 AuthorizationPolicies attached to it
//! ([`super::policy::l7_policies`]): its rows compare it with the one without. A third
//! on :15083 has the plain rules with all its telemetry on — request metrics, the JSON
//! access log (to stdout, here /dev/null) and tracing (`--otlp-endpoint` to a real
//! OTLP/gRPC receiver, [`crate::otlp`], on the pod's 127.0.0.1:4317) at the default
//! sampling, Istio's 1% of new traces (`--trace-sampling 0.01`, given explicitly so
//! the label stays true) — and a fourth on :15084 the same rules with all of it off
//! (`--request-metrics false --access-log-format off`, no tracing): their rows compare
//! the two, measured in the same run, on the same traffic. Three more on :15085-15087
//! have one of the three on each (request metrics, the JSON access log, tracing at 1%):
//! their rows say which part of the telemetry costs what, against the same all-off
//! waypoint. Two more, informational, record every request (`--trace-sampling 1`, a
//! span per request exported): all on (:15088) and tracing only (:15089), so the cost
//! of recording every span stays visible. The all-on and all-off waypoints also run
//! alternately after the sweep ([`alternated`]), and their req/s row is the median of
//! all those runs.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::lab::{Lab, PodRef};
use super::procstat;
use super::report::{Better, Row, Stat};
use super::{BenchOptions, progress};
use crate::harness::{ProcessGuard, bin_path};

const POD: PodRef = ("plain", "lab");
const BACKEND_PORT: u16 = 8080;
const WAYPOINT: &str = "127.0.0.1:15080";
const HAPROXY: &str = "127.0.0.1:15081";
const WAYPOINT_POLICIES: &str = "127.0.0.1:15082";
const WAYPOINT_TELEMETRY: &str = "127.0.0.1:15083";
const WAYPOINT_BARE: &str = "127.0.0.1:15084";
const WAYPOINT_METRICS_ONLY: &str = "127.0.0.1:15085";
const WAYPOINT_LOG_ONLY: &str = "127.0.0.1:15086";
const WAYPOINT_TRACING_ONLY: &str = "127.0.0.1:15087";
const WAYPOINT_TELEMETRY_ALL_SPANS: &str = "127.0.0.1:15088";
const WAYPOINT_TRACING_ALL_SPANS: &str = "127.0.0.1:15089";
const OTLP_RECEIVER: &str = "127.0.0.1:4317";
const DIRECT: &str = "127.0.0.2:8080";

const RULES: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: wp}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: wp, labels: {app: reviews, version: v1}}
status: {podIP: 127.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: wp, labels: {app: reviews, version: v2}}
status: {podIP: 127.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v3, namespace: wp, labels: {app: reviews, version: v3}}
status: {podIP: 127.0.0.4}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: wp}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: wp}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v3}
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
";

const HAPROXY_CFG: &str = "
global
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend reviews
  bind 127.0.0.1:15081
  use_backend v3 if { req.hdr(end-user) -m str jason }
  default_backend split
backend split
  balance roundrobin
  server v1 127.0.0.2:8080 weight 90
  server v2 127.0.0.3:8080 weight 10
backend v3
  server v3 127.0.0.4:8080
";

struct Target {
    label: &'static str,
    addr: &'static str,
    pid: Option<u32>,
}

/// One reported figure: what, unit, which way is better, and where it is in [`Figures`].
type Metric = (&'static str, &'static str, Better, fn(&Figures) -> &Vec<f64>);

#[derive(Default)]
struct Figures {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_us_per_req: Vec<f64>,
    rss: Vec<f64>,
}

pub fn run(lab: &mut Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    for (i, v) in ["v1", "v2", "v3"].iter().enumerate() {
        let listen = format!("127.0.0.{}:{BACKEND_PORT}", i + 2);
        lab.spawn(POD, lab.tool(&["serve", "--listen", &listen, "--name", v]))?;
        lab.wait_tcp(POD, listen.parse()?)?;
    }
    let waypoint = start_waypoint(lab, WAYPOINT, 15000, "", &[])?;
    let haproxy = start_haproxy(lab)?;
    let policies = super::policy::l7_policies("wp", super::policy::POLICIES);
    let with_policies = start_waypoint(lab, WAYPOINT_POLICIES, 15002, &policies, &[])?;
    let receiver = start_receiver(lab)?;
    let endpoint = format!("http://{OTLP_RECEIVER}");
    let tracing = |sampling| ["--otlp-endpoint", &endpoint, "--trace-sampling", sampling];
    let telemetry_on = |sampling| [&tracing(sampling)[..], &["--access-log-format", "json"]].concat();
    let with_telemetry = start_waypoint(lab, WAYPOINT_TELEMETRY, 15003, "", &telemetry_on("0.01"))?;
    let telemetry_off = ["--request-metrics", "false", "--access-log-format", "off"];
    let bare = start_waypoint(lab, WAYPOINT_BARE, 15004, "", &telemetry_off)?;
    let metrics_only = start_waypoint(lab, WAYPOINT_METRICS_ONLY, 15005, "", &["--access-log-format", "off"])?;
    let log_only = ["--request-metrics", "false", "--access-log-format", "json"];
    let log_only = start_waypoint(lab, WAYPOINT_LOG_ONLY, 15006, "", &log_only)?;
    let tracing_only = |sampling| [&telemetry_off[..], &tracing(sampling)[..]].concat();
    let tracing_only_all = start_waypoint(lab, WAYPOINT_TRACING_ALL_SPANS, 15019, "", &tracing_only("1"))?;
    let tracing_only = start_waypoint(lab, WAYPOINT_TRACING_ONLY, 15007, "", &tracing_only("0.01"))?;
    let telemetry_all = start_waypoint(lab, WAYPOINT_TELEMETRY_ALL_SPANS, 15018, "", &telemetry_on("1"))?;
    let targets = [
        ("direct to one backend", DIRECT, None),
        ("mesh-waypoint", WAYPOINT, Some(waypoint.pid())),
        ("HAProxy 2.6 (same rules)", HAPROXY, Some(haproxy.pid())),
        (
            "mesh-waypoint + 100 L7 AuthorizationPolicies",
            WAYPOINT_POLICIES,
            Some(with_policies.pid()),
        ),
        (
            "mesh-waypoint, metrics + JSON access log + tracing (OTLP, 1% sampling) on",
            WAYPOINT_TELEMETRY,
            Some(with_telemetry.pid()),
        ),
        (
            "mesh-waypoint, metrics + access log + tracing off",
            WAYPOINT_BARE,
            Some(bare.pid()),
        ),
        (
            "mesh-waypoint, request metrics only",
            WAYPOINT_METRICS_ONLY,
            Some(metrics_only.pid()),
        ),
        (
            "mesh-waypoint, JSON access log only",
            WAYPOINT_LOG_ONLY,
            Some(log_only.pid()),
        ),
        (
            "mesh-waypoint, tracing (OTLP, 1% sampling) only",
            WAYPOINT_TRACING_ONLY,
            Some(tracing_only.pid()),
        ),
        (
            "mesh-waypoint, metrics + JSON access log + tracing (OTLP, 100% sampling) on",
            WAYPOINT_TELEMETRY_ALL_SPANS,
            Some(telemetry_all.pid()),
        ),
        (
            "mesh-waypoint, tracing (OTLP, 100% sampling) only",
            WAYPOINT_TRACING_ALL_SPANS,
            Some(tracing_only_all.pid()),
        ),
    ]
    .map(|(label, addr, pid)| Target { label, addr, pid });
    let secs = if opts.quick { "2" } else { "5" };
    let mut figs: Vec<Figures> = targets.iter().map(|_| Figures::default()).collect();
    for rep in 0..opts.reps() {
        for (t, f) in targets.iter().zip(figs.iter_mut()) {
            progress(&format!("waypoint rep {}/{}: {}", rep + 1, opts.reps(), t.label));
            let common = load_args(t.addr, secs);
            let max = lab.load(POD, &[&["max"], &common[..]].concat())?;
            f.rps.push(max.per_sec);
            let cpu0 = t.pid.and_then(procstat::cpu_secs);
            let rate = lab.load(POD, &[&["rate", "--rate", "1000"], &common[..]].concat())?;
            f.p50.push(rate.p50_us);
            f.p99.push(rate.p99_us);
            if let (Some(pid), Some(c0)) = (t.pid, cpu0)
                && let Some(s) = procstat::sample(pid)
            {
                f.cpu_us_per_req.push((s.cpu_secs - c0) * 1e6 / rate.ok.max(1) as f64);
                f.rss.push(s.rss_mib);
            }
        }
    }
    let load_before = super::report::load_average();
    let (on, off) = alternated(lab, (targets[4].addr, targets[5].addr), opts)?;
    figs[4].rps.extend(on);
    figs[5].rps.extend(off);
    let alternation_note = format!(
        "req/s median of {} runs each: {} in the sweep, {} alternated on/off; load average {load_before} before those",
        opts.reps() + alternated_pairs(opts),
        opts.reps(),
        alternated_pairs(opts)
    );
    drop((waypoint, haproxy, with_policies, with_telemetry, bare));
    drop((metrics_only, log_only, tracing_only, telemetry_all, tracing_only_all));
    progress(&format!("waypoint: the OTLP receiver got {} spans", receiver.count()));
    if receiver.count() == 0 {
        anyhow::bail!("telemetry row: the waypoint exported no span to {endpoint}");
    }
    let stat = |i: usize, pick: fn(&Figures) -> &Vec<f64>| Stat::of(pick(&figs[i]));
    let mut rows = Vec::new();
    let metrics: [Metric; 3] = [
        (
            "requests/s, 16 connections, closed loop",
            "req/s",
            Better::Higher,
            |f| &f.rps,
        ),
        ("p50 @1000/s", "µs", Better::Lower, |f| &f.p50),
        ("p99 @1000/s", "µs", Better::Lower, |f| &f.p99),
    ];
    for (metric, unit, better, pick) in metrics {
        let mut policy_row = Row::new("waypoint", metric, targets[3].label, unit, stat(3, pick), better)
            .vs(targets[1].label, &stat(1, pick));
        if better == Better::Higher {
            policy_row = policy_row.target(super::report::Target::RatioAtLeast(0.95));
        }
        rows.push(policy_row);
        let mut telemetry_row = Row::new("waypoint", metric, targets[4].label, unit, stat(4, pick), better)
            .vs(targets[5].label, &stat(5, pick));
        if better == Better::Higher {
            telemetry_row = telemetry_row
                .target(super::report::Target::RatioAtLeast(0.95))
                .note(alternation_note.clone());
        }
        rows.push(telemetry_row);
        for i in [6, 7, 8, 9, 10] {
            rows.push(
                Row::new("waypoint", metric, targets[i].label, unit, stat(i, pick), better)
                    .vs(targets[5].label, &stat(5, pick)),
            );
        }
        for i in [1, 2] {
            rows.push(
                Row::new("waypoint", metric, targets[i].label, unit, stat(i, pick), better)
                    .vs(targets[0].label, &stat(0, pick)),
            );
        }
        rows.push(
            Row::new("waypoint", metric, targets[1].label, unit, stat(1, pick), better)
                .vs(targets[2].label, &stat(2, pick)),
        );
    }
    rows.push(
        Row::new(
            "waypoint",
            "CPU per request @1000/s",
            targets[1].label,
            "µs",
            stat(1, |f| &f.cpu_us_per_req),
            Better::Lower,
        )
        .vs(targets[2].label, &stat(2, |f| &f.cpu_us_per_req)),
    );
    for i in [4, 6, 7, 8, 9, 10] {
        rows.push(
            Row::new(
                "waypoint",
                "CPU per request @1000/s",
                targets[i].label,
                "µs",
                stat(i, |f| &f.cpu_us_per_req),
                Better::Lower,
            )
            .vs(targets[5].label, &stat(5, |f| &f.cpu_us_per_req)),
        );
    }
    rows.push(
        Row::new(
            "waypoint",
            "RSS after load",
            targets[1].label,
            "MiB",
            stat(1, |f| &f.rss),
            Better::Lower,
        )
        .vs(targets[2].label, &stat(2, |f| &f.rss)),
    );
    Ok(rows)
}

/// The closed-loop (and open-loop) load of every row, against `addr` for `secs`.
fn load_args<'a>(addr: &'a str, secs: &'a str) -> [&'a str; 12] {
    [
        "--target",
        addr,
        "--host",
        "reviews:9080",
        "--header",
        "end-user:jason",
        "--every",
        "10",
        "--conns",
        "16",
        "--secs",
        secs,
    ]
}

/// How many closed-loop runs [`alternated`] makes of each side.
fn alternated_pairs(opts: &BenchOptions) -> usize {
    if opts.quick { 6 } else { 8 }
}

/// Closed-loop req/s of the all-on and the all-off waypoint, one run of each after the
/// other in ABBA order (on, off, off, on, ...): the rows above measure the two 4 s or
/// more apart, and on this shared machine a neighbour's compile starting or ending in
/// between moves one side by ±15%. Side by side, in alternating order, both sides see
/// the same neighbours, and the median of several runs each says what one cannot.
fn alternated(lab: &Lab, (on, off): (&str, &str), opts: &BenchOptions) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let secs = if opts.quick { "1" } else { "2" };
    let (mut on_rps, mut off_rps) = (Vec::new(), Vec::new());
    for i in 0..alternated_pairs(opts) {
        progress(&format!("waypoint: telemetry on/off, alternated run {}", i + 1));
        let order = if i % 2 == 0 { [true, false] } else { [false, true] };
        for is_on in order {
            let addr = if is_on { on } else { off };
            let r = lab.load(POD, &[&["max"], &load_args(addr, secs)[..]].concat())?;
            if is_on { &mut on_rps } else { &mut off_rps }.push(r.per_sec);
        }
    }
    Ok((on_rps, off_rps))
}

/// The OTLP/gRPC receiver the tracing waypoint exports to, listening in the lab pod.
fn start_receiver(lab: &Lab) -> anyhow::Result<crate::otlp::Receiver> {
    let netns = lab.cluster.pod(POD.0, POD.1)?.netns_path;
    let listener = crate::harness::in_netns(&netns, || std::net::TcpListener::bind(OTLP_RECEIVER))??;
    Ok(crate::otlp::Receiver::start(listener)?)
}

/// A mesh-waypoint in the lab pod on `listen` with [`RULES`] plus `extra` YAML and `args`.
fn start_waypoint(
    lab: &Lab,
    listen: &str,
    admin_port: u16,
    extra: &str,
    args: &[&str],
) -> anyhow::Result<ProcessGuard> {
    let dir = lab.cluster.state_dir().join(format!("bench-waypoint-{admin_port}"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("reviews.yaml"), RULES)?;
    std::fs::write(dir.join("extra.yaml"), extra)?;
    let admin = format!("127.0.0.1:{admin_port}");
    let mut cmd = Command::new(bin_path("mesh-waypoint")?);
    cmd.arg("run")
        .arg("--config-dir")
        .arg(&dir)
        .args(["--namespace", "wp", "--listen", listen, "--admin", &admin])
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = lab
        .cluster
        .spawn_in_pod(POD.0, POD.1, cmd)
        .context("starting mesh-waypoint")?;
    lab.wait_tcp(POD, listen.parse::<SocketAddr>()?)?;
    wait_routes(lab, listen)?;
    Ok(guard)
}

/// The waypoint listens before its first config load completes; wait until requests route.
fn wait_routes(lab: &Lab, listen: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    let routed = crate::harness::wait_for(
        &format!("the waypoint on {listen} routes reviews:9080"),
        Duration::from_secs(20),
        || match lab.load(
            POD,
            &[
                "max",
                "--target",
                listen,
                "--host",
                "reviews:9080",
                "--conns",
                "1",
                "--secs",
                "0.2",
            ],
        ) {
            Ok(r) if r.ok > 0 && r.errors == 0 => Some(()),
            Ok(r) => {
                last = r.first_error.unwrap_or_default();
                None
            }
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        },
    );
    routed.with_context(|| format!("last attempt: {last}"))
}

fn start_haproxy(lab: &Lab) -> anyhow::Result<ProcessGuard> {
    let path = lab.cluster.state_dir().join("bench-haproxy.cfg");
    std::fs::write(&path, HAPROXY_CFG)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = lab
        .cluster
        .spawn_in_pod(POD.0, POD.1, cmd)
        .context("starting haproxy (apt install haproxy)")?;
    lab.wait_tcp(POD, HAPROXY.parse::<SocketAddr>()?)?;
    Ok(guard)
}
