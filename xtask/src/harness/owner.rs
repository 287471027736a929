//! Which process owns a cluster, so `clean_leftovers` removes only clusters whose
//! owner is gone; and claiming a new cluster's prefix together with that record. The record is `<pid> <start time>` (the start time guards
//! against a recycled PID).

use std::path::Path;

use super::{HarnessError, hostfs, names};

const FILE: &str = "owner";

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Writes the current process as the owner of the cluster whose state dir is `state_dir`.
pub fn record(state_dir: &Path) -> Result<(), HarnessError> {
    let pid = std::process::id();
    let text = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
    let path = state_dir.join(FILE);
    std::fs::write(&path, text).map_err(|e| HarnessError::io("write", path, e))
}

/// True when the owner recorded in `state_dir` is still running.
pub fn is_alive(state_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(state_dir.join(FILE)) else {
        return false;
    };
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(started))) = (fields.next(), fields.next()) else {
        return false;
    };
    u32::try_from(pid).ok().and_then(start_time) == Some(started)
}

/// Claims a prefix by creating its state directory, owner record included, in one
/// atomic rename: two processes never get the same prefix, and `clean_leftovers`
/// never sees a cluster of a live process without its owner record.
pub fn claim_prefix(wanted: Option<&str>) -> Result<String, HarnessError> {
    if let Some(prefix) = wanted
        && !names::is_prefix(prefix)
    {
        return Err(HarnessError::sys(
            format!("using cluster prefix {prefix:?}"),
            std::io::Error::other(format!(
                "a prefix is `{}` followed by {} of [0-9a-z]",
                names::TAG,
                names::ID_LEN
            )),
        ));
    }
    let root = hostfs::state_root();
    std::fs::create_dir_all(&root).map_err(|e| HarnessError::io("create", &root, e))?;
    let tmp = root.join(format!(".new-{}", names::new_prefix()));
    std::fs::create_dir(&tmp).map_err(|e| HarnessError::io("create", &tmp, e))?;
    let claimed = record(&tmp).and_then(|()| claim(&root, &tmp, wanted));
    let _ = std::fs::remove_dir_all(&tmp);
    claimed
}

fn claim(root: &Path, tmp: &Path, wanted: Option<&str>) -> Result<String, HarnessError> {
    let attempts = if wanted.is_some() { 1 } else { 16 };
    let mut last_err = None;
    for _ in 0..attempts {
        let prefix = wanted.map_or_else(names::new_prefix, str::to_owned);
        let dir = root.join(&prefix);
        if dir.exists() {
            last_err = Some(HarnessError::io("claim", dir, std::io::ErrorKind::AlreadyExists.into()));
            continue;
        }
        // rename(2) fails if `dir` appeared meanwhile with content (the owner record).
        match std::fs::rename(tmp, &dir) {
            Ok(()) => return Ok(prefix),
            Err(e) => last_err = Some(HarnessError::io("claim", dir, e)),
        }
    }
    Err(last_err.expect("at least one attempt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_garbage_is_not() {
        let dir = std::env::temp_dir().join(format!("mesh-owner-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        record(&dir).unwrap();
        assert!(is_alive(&dir));
        std::fs::write(dir.join(FILE), "1 12345678901\n").unwrap();
        assert!(!is_alive(&dir), "pid 1 with another start time is not the owner");
        std::fs::write(dir.join(FILE), "garbage").unwrap();
        assert!(!is_alive(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
