//! Processes started "in a pod" or "on a node": joined to that place's cgroup and
//! netns before `exec`, and stopped by PID when their guard drops.

use std::borrow::BorrowMut;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::HarnessError;

/// How long [`ProcessGuard`]'s drop waits after SIGTERM before SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a process goes: a netns bind-mount path and a cgroup2 directory.
#[derive(Clone, Debug)]
pub(crate) struct Placement {
    pub netns_path: PathBuf,
    pub cgroup_dir: PathBuf,
    /// `pod ns/name` or `node name`, for errors and logs.
    pub label: String,
}

/// Starts `cmd` joined to `place`: the child writes itself into the cgroup's
/// `cgroup.procs` and `setns`es into the netns between fork and exec, so
/// everything it runs (and forks) lives there from its first instruction.
pub(crate) fn spawn(place: &Placement, mut cmd: impl BorrowMut<Command>) -> Result<ProcessGuard, HarnessError> {
    let cmd = cmd.borrow_mut();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let netns = File::open(&place.netns_path).map_err(|e| HarnessError::io("open netns", &place.netns_path, e))?;
    let procs_path = place.cgroup_dir.join("cgroup.procs");
    let procs = OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(|e| HarnessError::io("open", &procs_path, e))?;
    // SAFETY: the closure only makes async-signal-safe system calls (write, setns) on
    // descriptors opened above (close-on-exec, kept alive by the closure).
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process itself.
            if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| HarnessError::Spawn {
        program: program.clone(),
        place: place.label.clone(),
        source: e,
    })?;
    tracing::debug!(pid = child.id(), %program, place = %place.label, "spawned");
    Ok(ProcessGuard {
        child,
        label: format!("{program} in {}", place.label),
        stop_timeout: DEFAULT_STOP_TIMEOUT,
        status: None,
    })
}

/// Runs `cmd` in `place` to completion (stdout and stderr captured), killing it
/// if it runs longer than `timeout`.
pub(crate) fn run(
    place: &Placement,
    mut cmd: impl BorrowMut<Command>,
    timeout: Duration,
) -> Result<Output, HarnessError> {
    let cmd = cmd.borrow_mut();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut guard = spawn(place, cmd)?;
    let out = guard.child.stdout.take().map(reader_thread);
    let err = guard.child.stderr.take().map(reader_thread);
    let status = guard.wait_timeout(timeout)?;
    let Some(status) = status else {
        guard.kill()?;
        return Err(HarnessError::Timeout {
            what: guard.label.clone(),
            timeout,
        });
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    })
}

fn reader_thread(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// A child process owned by a test or the demo. Dropping it stops the process
/// (SIGTERM, then SIGKILL after the stop timeout) and reaps it. Signals go to the
/// PID only while it is an unreaped child of ours, so a recycled PID is never hit.
#[derive(Debug)]
pub struct ProcessGuard {
    child: Child,
    label: String,
    stop_timeout: Duration,
    status: Option<ExitStatus>,
}

impl ProcessGuard {
    /// Owns a child spawned in the caller's own netns and cgroup (a loopback test's
    /// server), so it is stopped by its PID like the others.
    pub fn adopt(child: Child, label: &str) -> Self {
        Self {
            child,
            label: label.to_owned(),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `program in pod ns/name`, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The underlying child, e.g. to take its stdin/stdout pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sets how long stop/drop waits between SIGTERM and SIGKILL.
    pub fn with_stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&mut self, signal: Signal) -> Result<(), HarnessError> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .map_err(|e| HarnessError::sys(format!("kill -{signal} {pid} ({})", self.label), e))
    }

    /// The exit status if the process has exited (reaping it), without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, HarnessError> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(|e| HarnessError::sys(format!("wait for {}", self.label), e))?;
        }
        Ok(self.status)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, HarnessError> {
        let mut result = Ok(None);
        // An error from try_wait ends the wait as well; it is returned as is.
        let _ = super::poll::wait_until("process exit", timeout, || {
            result = self.try_wait();
            !matches!(result, Ok(None))
        });
        result
    }

    /// SIGKILL now (like `kill -9`) and reap.
    pub fn kill(&mut self) -> Result<ExitStatus, HarnessError> {
        self.signal(Signal::SIGKILL)?;
        self.wait_timeout(Duration::from_secs(10))?
            .ok_or_else(|| HarnessError::Timeout {
                what: format!("SIGKILL of {}", self.label),
                timeout: Duration::from_secs(10),
            })
    }

    /// SIGTERM, wait up to the stop timeout, then SIGKILL; reaps the process.
    pub fn stop(&mut self) -> Result<ExitStatus, HarnessError> {
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(self.stop_timeout)? {
            Some(status) => Ok(status),
            None => self.kill(),
        }
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping {}: {e}", self.label);
        }
    }
}

/// The cgroup (relative to the cgroup2 root) that `pid` belongs to, from `/proc/PID/cgroup`.
pub fn cgroup_of(pid: u32) -> Result<String, HarnessError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&path).map_err(|e| HarnessError::io("read", &path, e))?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned())
}

/// The netns identity (`net:[inode]`) of `pid`, comparable with [`netns_id_of_path`].
pub fn netns_id_of_pid(pid: u32) -> Result<u64, HarnessError> {
    netns_id_of_path(Path::new(&format!("/proc/{pid}/ns/net")))
}

/// The inode of a netns file (a `/run/netns/...` bind mount or `/proc/PID/ns/net`).
pub fn netns_id_of_path(path: &Path) -> Result<u64, HarnessError> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| HarnessError::io("stat", path, e))
}

/// A command that re-runs the calling test binary with only its ignored test `name`:
/// how e2e tests run their own code as a client inside a pod (its cgroup and netns,
/// so capture applies to it), passing arguments through the environment.
pub fn test_helper(name: &str) -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("finding the test binary to re-run: {e}"));
    let mut cmd = std::process::Command::new(exe);
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"]);
    cmd
}
