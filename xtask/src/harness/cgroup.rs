//! cgroup2 directories of a cluster: creating them, emptying them (by PID, read
//! from `cgroup.procs`) and removing them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::HarnessError;
use super::poll::wait_until;

/// PIDs listed in `dir/cgroup.procs` (empty if the cgroup is gone).
pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// `dir` and every cgroup below it, parents before children.
pub fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            let children: Vec<_> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// Every PID in the subtree of `dir`.
pub fn subtree_procs(dir: &Path) -> Vec<i32> {
    subtree(dir).iter().flat_map(|d| procs(d)).collect()
}

fn signal_all(pids: &[i32], signal: Signal) {
    for &pid in pids {
        // ESRCH just means the process is already gone.
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Stops every process in the subtree of `dir`: SIGTERM, up to `grace` for them
/// to exit, then SIGKILL (repeated, since a process may fork meanwhile) until the
/// subtree is empty or `deadline_after_kill` passes. Returns the PIDs still there.
pub fn stop_all(dir: &Path, grace: Duration, deadline_after_kill: Duration) -> Vec<i32> {
    let pids = subtree_procs(dir);
    if pids.is_empty() {
        return pids;
    }
    signal_all(&pids, Signal::SIGTERM);
    if wait_empty(dir, grace) {
        return Vec::new();
    }
    let killed = wait_until("processes to die after SIGKILL", deadline_after_kill, || {
        let pids = subtree_procs(dir);
        signal_all(&pids, Signal::SIGKILL);
        pids.is_empty()
    });
    if killed.is_ok() { Vec::new() } else { subtree_procs(dir) }
}

fn wait_empty(dir: &Path, timeout: Duration) -> bool {
    wait_until("cgroup to empty", timeout, || subtree_procs(dir).is_empty()).is_ok()
}

/// Removes `dir` and its child cgroups, children first. rmdir can report EBUSY
/// for a moment after the last process exits, so it is retried until `timeout`.
pub fn remove_tree(dir: &Path, timeout: Duration) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    for d in subtree(dir).iter().rev() {
        let mut last = None;
        let left = deadline.saturating_duration_since(Instant::now());
        // EBUSY is retried until the deadline; any other error ends the wait.
        let _ = wait_until("cgroup removal", left, || match std::fs::remove_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                let busy = e.raw_os_error() == Some(libc::EBUSY);
                last = Some(e);
                !busy
            }
            _ => {
                last = None;
                true
            }
        });
        if let Some(e) = last {
            return Err(HarnessError::io("remove cgroup", d, e));
        }
    }
    Ok(())
}
