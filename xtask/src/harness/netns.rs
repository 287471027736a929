//! Running code of the calling process inside a network namespace: a dedicated
//! thread joins the netns, runs the closure and exits. Sockets created there keep
//! that netns for their whole life, so they can be used from any thread afterwards.

use std::fs::File;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use super::HarnessError;

/// Runs `f` on a fresh thread that has joined the netns at `netns_path`
/// (e.g. `/run/netns/<name>`), and returns its result.
pub fn in_netns<T: Send>(netns_path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, HarnessError> {
    let file = File::open(netns_path).map_err(|e| HarnessError::io("open netns", netns_path, e))?;
    let joined = std::thread::scope(|s| {
        s.spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| HarnessError::sys(format!("setns into {}", netns_path.display()), e))?;
            Ok(f())
        })
        .join()
    });
    joined.map_err(|_| HarnessError::ThreadPanicked {
        netns: netns_path.display().to_string(),
    })?
}

/// Writes a per-netns sysctl (path under /proc/sys, e.g. `net/ipv4/ip_forward`)
/// inside the netns at `netns_path`. /proc/sys/net resolves to the writing
/// thread's netns, so the host's value is never touched.
pub fn write_sysctl(netns_path: &Path, key: &str, value: &str) -> Result<(), HarnessError> {
    let path = Path::new("/proc/sys").join(key);
    in_netns(netns_path, || std::fs::write(&path, value))?
        .map_err(|e| HarnessError::io("write sysctl", path.clone(), e))
}
