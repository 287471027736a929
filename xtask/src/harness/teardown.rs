//! Removing a cluster's objects, found by its prefix alone: what `Drop for Cluster`
//! runs, and what [`clean_leftovers`](super::clean_leftovers) runs for clusters
//! whose owner died.

use std::path::Path;
use std::time::Duration;

use super::{HarnessError, cgroup, hostfs, ip, names};

/// How long processes get between SIGTERM and SIGKILL at teardown.
const TERM_GRACE: Duration = Duration::from_secs(2);
const KILL_DEADLINE: Duration = Duration::from_secs(5);

/// Removes everything named after `prefix`: processes (by PID from its cgroups),
/// netns (with their veths), stray host interfaces, cgroups, the bpffs dir and the
/// state dir. Returns what could not be removed (empty on success).
pub fn remove_prefix(prefix: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let cgroup_dir = hostfs::harness_cgroup_root().map(|r| r.join(prefix));
    if let Ok(dir) = &cgroup_dir {
        let left = cgroup::stop_all(dir, TERM_GRACE, KILL_DEADLINE);
        if !left.is_empty() {
            failures.push(format!("processes {left:?} would not die"));
        }
    }
    for netns in ip::netns_list()
        .into_iter()
        .filter(|n| names::prefix_of(n) == Some(prefix))
    {
        if let Err(e) = ip::netns_del(&netns) {
            failures.push(e.to_string());
        }
    }
    // Veths are created inside the cluster's namespaces and die with them; this only
    // catches an interface that ended up in the host netns by accident.
    for link in ip::host_links()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| names::prefix_of(l) == Some(prefix))
    {
        if let Err(e) = ip::run(&["link", "del", &link]) {
            failures.push(e.to_string());
        }
    }
    if let Ok(dir) = &cgroup_dir
        && let Err(e) = cgroup::remove_tree(dir, KILL_DEADLINE)
    {
        failures.push(e.to_string());
    }
    // The state dir goes last: it holds the owner record that `clean_leftovers` checks.
    for dir in [
        Path::new(hostfs::BPFFS_MOUNT).join(prefix),
        hostfs::state_root().join(prefix),
    ] {
        if let Err(e) = remove_dir_all_if_present(&dir) {
            failures.push(e.to_string());
        }
    }
    failures
}

fn remove_dir_all_if_present(dir: &Path) -> Result<(), HarnessError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HarnessError::io("remove", dir, e)),
        _ => Ok(()),
    }
}

/// What of cluster `prefix` still exists (netns, cgroup, processes, bpffs dir,
/// host interfaces, state dir), one description per object; empty when nothing.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = ip::netns_list()
        .into_iter()
        .filter(|n| names::prefix_of(n) == Some(prefix))
        .map(|n| format!("netns {n}"))
        .collect();
    if let Ok(root) = hostfs::harness_cgroup_root() {
        let dir = root.join(prefix);
        found.extend(cgroup::subtree_procs(&dir).into_iter().map(|p| format!("process {p}")));
        if dir.exists() {
            found.push(format!("cgroup {}", dir.display()));
        }
    }
    found.extend(
        ip::host_links()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| names::prefix_of(l) == Some(prefix))
            .map(|l| format!("interface {l}")),
    );
    for dir in [
        Path::new(hostfs::BPFFS_MOUNT).join(prefix),
        hostfs::state_root().join(prefix),
    ] {
        if dir.exists() {
            found.push(format!("directory {}", dir.display()));
        }
    }
    found
}
