//! `upgrade`: requests that fail while node1's daemon is replaced under 1,000 requests/s
//! of 1 kB (16 keep-alive connections from `mesh/client` to `mesh/remote`): a hand-over
//! (a new daemon started beside the old one, README.md "Upgrades") against a plain stop
//! and start of the daemon, in the same run.

use std::io::Read;
use std::time::Duration;

use anyhow::Context;

use super::lab::{HTTP_PORT, Lab, PodRef};
use super::report::{Better, Row, Stat, Target};
use super::tool::LoadResult;
use super::{BenchOptions, progress};

const CLIENT: PodRef = ("mesh", "client");
const SERVER: PodRef = ("mesh", "remote");
const NODE: &str = "n1";
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(lab: &mut Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let secs: u64 = if opts.quick { 4 } else { 8 };
    let (mut handed, mut restarted, mut sent) = (Vec::new(), Vec::new(), 0);
    for rep in 0..opts.reps() {
        progress(&format!(
            "upgrade rep {}/{}: hand-over under load",
            rep + 1,
            opts.reps()
        ));
        let r = during_load(lab, secs, |lab| {
            // The old daemon drains its connections after the load ends, then exits.
            lab.mesh.upgrade_node(&lab.cluster, NODE, TAKEOVER_TIMEOUT).map(drop)
        })?;
        sent += r.ok + r.errors;
        handed.push(r.errors as f64);
        progress(&format!(
            "upgrade rep {}/{}: plain stop and start under load",
            rep + 1,
            opts.reps()
        ));
        let r = during_load(lab, secs, |lab| {
            lab.mesh.restart_node(&lab.cluster, NODE, TAKEOVER_TIMEOUT)
        })?;
        restarted.push(r.errors as f64);
    }
    Ok(vec![
        Row::new(
            "upgrade",
            "requests failed while node1's daemon is replaced @1000/s",
            "hand-over (new daemon beside the old one)",
            "requests",
            Stat::of(&handed),
            Better::Lower,
        )
        .vs("plain stop + start of the daemon", &Stat::of(&restarted))
        .target(Target::ValueAtMost(0.0))
        .note(format!("{sent} requests over {} runs of {secs} s", opts.reps())),
    ])
}

/// Runs the load for `secs`, doing `action` a third of the way in; the load's result.
fn during_load(
    lab: &mut Lab,
    secs: u64,
    action: impl FnOnce(&mut Lab) -> Result<(), crate::mesh::MeshError>,
) -> anyhow::Result<LoadResult> {
    let target = format!("{}:{HTTP_PORT}", lab.ip(SERVER)?);
    let secs_arg = secs.to_string();
    let mut cmd = lab.tool(&[
        "rate", "--target", &target, "--rate", "1000", "--conns", "16", "--secs", &secs_arg,
    ]);
    cmd.stdout(std::process::Stdio::piped());
    let mut load = lab.cluster.spawn_in_pod(CLIENT.0, CLIENT.1, cmd)?;
    // The scenario, not synchronisation: the replacement lands inside the load.
    std::thread::sleep(Duration::from_secs(secs) / 3);
    action(lab).context("replacing node1's daemon")?;
    let mut out = String::new();
    load.child_mut()
        .stdout
        .take()
        .context("bench-tool stdout")?
        .read_to_string(&mut out)
        .context("bench-tool output")?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("bench-tool rate printed {out:?}"))
}
