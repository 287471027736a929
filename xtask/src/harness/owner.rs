//! Which process owns a cluster, so `clean_leftovers` removes only clusters whose
//! owner is gone. The record is `<pid> <start time>` (the start time guards
//! against a recycled PID).

use std::path::Path;

use super::HarnessError;

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
        assert!(
            !is_alive(&dir),
            "pid 1 with another start time is not the owner"
        );
        std::fs::write(dir.join(FILE), "garbage").unwrap();
        assert!(!is_alive(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
