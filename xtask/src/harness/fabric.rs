//! tcpdump on a cluster's fabric (every node's veth), to prove what crosses between
//! nodes. Stopped by PID (SIGINT, so the file is complete), killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Cluster, HarnessError, wait_for};

pub struct FabricCapture {
    child: Child,
    file: PathBuf,
}

impl FabricCapture {
    /// Starts capturing TCP headers (256 bytes per packet) on the fabric.
    pub fn start(c: &Cluster) -> Result<Self, HarnessError> {
        let file = c.state_dir().join(format!("fabric-{}.pcap", std::process::id()));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &c.fabric_netns(),
                "tcpdump",
                "-i",
                "any",
                "-nn",
                "-U",
                "-s",
                "256",
                "-w",
            ])
            .arg(&file)
            .arg("tcp")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError::sys("starting tcpdump on the fabric (apt install tcpdump)", e))?;
        let capture = Self { child, file };
        // tcpdump creates the file once it listens.
        wait_for("tcpdump to start", Duration::from_secs(10), || {
            capture.file.exists().then_some(())
        })?;
        Ok(capture)
    }

    /// Stops the capture; returns one summary line per packet (`tcpdump -nn -q`) and the raw pcap.
    pub fn finish(mut self) -> Result<(Vec<String>, Vec<u8>), HarnessError> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        let text = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-nn", "-q"])
            .output()
            .map_err(|e| HarnessError::sys("reading the capture", e))?;
        let lines = String::from_utf8_lossy(&text.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        Ok((lines, std::fs::read(&self.file).unwrap_or_default()))
    }
}

impl Drop for FabricCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `a.b.c.d.port` endpoints of a `tcpdump -nn -q` line (`IP src.port > dst.port: tcp len`).
pub fn endpoints(line: &str) -> Option<(String, String)> {
    let rest = line.split(" IP ").nth(1)?;
    let (src, rest) = rest.split_once(" > ")?;
    let dst = rest.split(':').next()?;
    Some((src.to_owned(), dst.to_owned()))
}
