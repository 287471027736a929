//! `cargo xtask bench [NAME...] [--quick]`: measurements, not tests. Every figure is
//! printed beside a baseline measured in the same run (or, where none can run here, a
//! labelled reference), as the median of several repetitions with its spread, and next
//! to its target (docs/architecture.md). Numbers never fail the command.
//!
//! Output: a Markdown table on stdout, `target/bench/bench.{json,svg,md}`.
//! All benchmarks share one local cluster ([`lab`]); the order is chosen so that state
//! one benchmark leaves (conntrack from the iptables rule of `connect`) touches no other.

pub mod ca;
pub mod chart;
pub mod connect;
pub mod lab;
pub mod latency;
pub mod policy;
pub mod procstat;
pub mod report;
pub mod resources;
pub mod scale;
pub mod soak;
pub mod tool;
pub mod tunnel;
pub mod upgrade;
pub mod waypoint;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use report::{Report, Row};

/// Every benchmark, in the order they run.
pub const ALL: [&str; 8] = [
    "tunnel",
    "latency",
    "policy",
    "waypoint",
    "resources",
    "connect",
    "ca",
    "upgrade",
];

#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// One repetition of short runs: a smoke check (< 2 minutes).
    pub quick: bool,
    /// Which binaries run (printed with the table).
    pub binaries: String,
}

impl BenchOptions {
    pub fn reps(&self) -> usize {
        if self.quick { 1 } else { 3 }
    }
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// One progress line on stderr, with the time since the run started.
pub fn progress(what: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[bench {t:6.1} s] {what}");
}

/// Runs `names` (all when empty), prints the table and writes the files under `out_dir`.
pub fn run(names: &[String], opts: &BenchOptions, out_dir: &Path) -> anyhow::Result<Report> {
    let started = *STARTED.get_or_init(Instant::now);
    let selected: Vec<&str> = if names.is_empty() {
        ALL.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    if let Some(bad) = selected.iter().find(|n| !ALL.contains(n)) {
        anyhow::bail!("unknown benchmark {bad:?}; available: {}", ALL.join(", "));
    }
    progress("starting the local cluster, the mesh and the servers");
    let mut lab = lab::Lab::start()?;
    let idle = selected.contains(&"resources").then(|| {
        progress("resources: idle daemons");
        resources::idle(&lab, Duration::from_secs(if opts.quick { 1 } else { 3 }))
    });
    let mut rows: Vec<Row> = Vec::new();
    let mut skipped = Vec::new();
    for name in ALL.iter().filter(|n| selected.contains(n)) {
        let result = match *name {
            "tunnel" => tunnel::run(&lab, opts),
            "latency" => latency::run(&lab, opts),
            "policy" => policy::run(&lab, opts),
            "waypoint" => waypoint::run(&mut lab, opts),
            "resources" => resources::run(&lab, opts, idle.as_ref().unwrap_or(&resources::Idle::default())),
            "connect" => connect::run(&lab, opts),
            "ca" => ca::run(&mut lab, opts),
            "upgrade" => upgrade::run(&mut lab, opts),
            _ => unreachable!("checked above"),
        };
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("bench {name}: {e:#}");
                skipped.push((name.to_string(), format!("{e:#}")));
            }
        }
    }
    drop(lab);
    let report = Report {
        machine: report::Machine::detect(),
        quick: opts.quick,
        binaries: opts.binaries.clone(),
        benches: selected.iter().map(|s| s.to_string()).collect(),
        duration_secs: started.elapsed().as_secs_f64(),
        rows,
        skipped,
    };
    println!("{}", report.markdown());
    match report.write(out_dir) {
        Ok((json, svg)) => eprintln!("bench: wrote {} and {}", json.display(), svg.display()),
        Err(e) => eprintln!("bench: could not write the report files: {e:#}"),
    }
    Ok(report)
}
