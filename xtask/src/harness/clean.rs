//! `cargo xtask clean`: finds harness objects by their tag and removes the clusters
//! whose owner process is gone (or all of them, on request).

use std::collections::BTreeSet;
use std::path::Path;

use super::{HarnessError, hostfs, ip, names, owner, teardown};

/// Which clusters [`clean_leftovers_with`] removes.
#[derive(Clone, Copy, Debug, Default)]
pub struct CleanOptions {
    /// Also remove clusters whose owner is still running (breaks running tests).
    pub include_live: bool,
}

/// What a clean found and did.
#[derive(Clone, Debug, Default)]
pub struct CleanReport {
    /// Prefixes of the clusters removed.
    pub removed: Vec<String>,
    /// Prefixes skipped because their owner process is alive.
    pub skipped_live: Vec<String>,
    /// Objects that could not be removed.
    pub failures: Vec<String>,
}

/// One line per cluster removed or skipped, then failures (what `cargo xtask clean` prints).
impl std::fmt::Display for CleanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.removed.is_empty() && self.skipped_live.is_empty() {
            writeln!(f, "no harness leftovers")?;
        }
        for prefix in &self.removed {
            writeln!(f, "removed cluster {prefix}")?;
        }
        for prefix in &self.skipped_live {
            writeln!(f, "kept cluster {prefix}: its owner process is still running")?;
        }
        for failure in &self.failures {
            writeln!(f, "could not remove: {failure}")?;
        }
        Ok(())
    }
}

/// Removes every harness cluster whose owner process has exited: its processes
/// (killed by PID from its cgroups), netns, veths, cgroups, bpffs dir and state dir.
pub fn clean_leftovers() -> Result<CleanReport, HarnessError> {
    clean_leftovers_with(CleanOptions::default())
}

/// [`clean_leftovers`] with options.
pub fn clean_leftovers_with(options: CleanOptions) -> Result<CleanReport, HarnessError> {
    let mut report = CleanReport::default();
    for prefix in find_prefixes()? {
        if !options.include_live && owner::is_alive(&hostfs::state_root().join(&prefix)) {
            report.skipped_live.push(prefix);
            continue;
        }
        tracing::info!(%prefix, "removing leftover cluster");
        report.failures.extend(teardown::remove_prefix(&prefix));
        report.removed.push(prefix);
    }
    if let Ok(root) = hostfs::harness_cgroup_root() {
        // Only succeeds when no cluster is left; harmless otherwise.
        let _ = std::fs::remove_dir(root);
    }
    Ok(report)
}

/// Everything of every harness cluster on this machine, live or not (see
/// [`leftovers`](super::leftovers)); empty when no cluster exists. `cargo xtask test`
/// can assert this after the suite.
pub fn all_leftovers() -> Result<Vec<String>, HarnessError> {
    Ok(find_prefixes()?.iter().flat_map(|p| teardown::leftovers(p)).collect())
}

/// Every cluster prefix that has any object on this machine.
fn find_prefixes() -> Result<BTreeSet<String>, HarnessError> {
    let mut found = BTreeSet::new();
    let mut add = |name: &str| {
        if let Some(p) = names::prefix_of(name).or_else(|| names::is_prefix(name).then_some(name)) {
            found.insert(p.to_owned());
        }
    };
    ip::netns_list().iter().for_each(|n| add(n));
    ip::host_links().unwrap_or_default().iter().for_each(|n| add(n));
    if let Ok(root) = hostfs::harness_cgroup_root() {
        dir_names(&root).iter().for_each(|n| add(n));
    }
    dir_names(Path::new(hostfs::BPFFS_MOUNT)).iter().for_each(|n| add(n));
    dir_names(&hostfs::state_root()).iter().for_each(|n| add(n));
    Ok(found)
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}
