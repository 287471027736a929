//! iproute2 (`ip`) invocations. Everything is addressed to a named netns with
//! `-n`, so no command ever touches the host's own network namespace.

use std::io::Write;
use std::process::{Command, Stdio};

use super::HarnessError;

/// Runs `ip <args>`; the error carries the command line and ip's stderr.
pub fn run(args: &[&str]) -> Result<String, HarnessError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::Spawn {
            program: "ip".into(),
            place: "the host".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs several `ip` commands (one per line, without the leading `ip`) in one
/// process inside netns `netns`: `ip -n NETNS -batch -`.
pub fn batch(netns: &str, lines: &[String]) -> Result<(), HarnessError> {
    let script = lines.join("\n") + "\n";
    let command = format!("ip -n {netns} -batch - <<< {script:?}");
    let spawn_err = |e| HarnessError::Spawn {
        program: "ip".into(),
        place: "the host".into(),
        source: e,
    };
    let mut child = Command::new("ip")
        .args(["-n", netns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

pub fn netns_add(name: &str) -> Result<(), HarnessError> {
    run(&["netns", "add", name]).map(drop)
}

pub fn netns_del(name: &str) -> Result<(), HarnessError> {
    run(&["netns", "del", name]).map(drop)
}

/// Names of the netns in /run/netns (empty when the directory does not exist).
pub fn netns_list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(super::hostfs::NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect()
}

/// Interface names in the host's netns (read-only: `ip -o link show`).
pub fn host_links() -> Result<Vec<String>, HarnessError> {
    let out = run(&["-o", "link", "show"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name).to_owned())
        })
        .collect())
}
