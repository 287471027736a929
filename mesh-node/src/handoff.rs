//! Hitless upgrade: a new daemon takes over from the one running on this node.
//!
//! The running daemon listens on `<state dir>/handoff.sock`. A new daemon that finds it
//! there adopts the pinned eBPF links and maps and takes the listeners from the fd
//! holder (both processes then accept on the same sockets), obtains its certificates,
//! and only then sends `STOP`. The old daemon stops accepting, closes its admin,
//! readiness and metrics ports, answers `STOPPED pid=<pid> open=<connections>`, and
//! keeps relaying its open connections until they end or `--drain-timeout-secs` passes.
//! No listening socket is closed in between, so no connect fails (README.md, "Upgrades").

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

pub const SOCKET: &str = "handoff.sock";
const STOP: &str = "STOP";
/// A peer that sends nothing sensible within this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_LINE: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("hand-over socket {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("the running daemon at {path} did not confirm the hand-over within {timeout:?}; it keeps serving")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("the running daemon at {path} answered {answer:?} instead of STOPPED; it keeps serving")]
    Refused { path: PathBuf, answer: String },
}

/// The daemon this one takes over from.
pub struct Predecessor {
    path: PathBuf,
}

impl Predecessor {
    /// The daemon listening on this node's hand-over socket, if one is running. The
    /// probe connection is closed at once; [`Predecessor::stop`] connects again.
    pub async fn find(state_dir: &Path) -> Option<Self> {
        let path = state_dir.join(SOCKET);
        // A socket file left by a crashed daemon refuses the connect: nobody to stop.
        drop(UnixStream::connect(&path).await.ok()?);
        Some(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks it to stop accepting; returns its answer once it has, or `None` when it
    /// is gone already (it exited or crashed since [`Predecessor::find`]).
    pub async fn stop(self, timeout: Duration) -> Result<Option<String>, HandoffError> {
        let path = self.path;
        let Ok(stream) = UnixStream::connect(&path).await else {
            return Ok(None);
        };
        let io = |op| {
            let path = path.clone();
            move |source| HandoffError::Io { path, op, source }
        };
        let exchange = async {
            let (r, mut w) = stream.into_split();
            w.write_all(format!("{STOP}\n").as_bytes())
                .await
                .map_err(io("send STOP"))?;
            let mut answer = String::new();
            BufReader::new(r.take(MAX_LINE))
                .read_line(&mut answer)
                .await
                .map_err(io("read the answer"))?;
            Ok(answer.trim().to_owned())
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| HandoffError::Timeout {
                path: path.clone(),
                timeout,
            })??;
        if !answer.starts_with("STOPPED") {
            return Err(HandoffError::Refused { path, answer });
        }
        Ok(Some(answer))
    }
}

/// A successor's request: stop accepting, then [`Takeover::confirm`].
pub struct Takeover {
    reply: oneshot::Sender<String>,
}

impl Takeover {
    /// Tells the successor that this daemon no longer accepts anything.
    pub fn confirm(self, open: usize) {
        let _ = self
            .reply
            .send(format!("STOPPED pid={} open={open}", std::process::id()));
    }
}

/// Listens on `<state_dir>/handoff.sock` for the daemon that will replace this one.
pub fn listen(state_dir: &Path) -> Result<mpsc::Receiver<Takeover>, HandoffError> {
    let path = state_dir.join(SOCKET);
    let io = |op| {
        let path = path.clone();
        move |source| HandoffError::Io { path, op, source }
    };
    // Whatever is there belongs to a daemon that has already handed over or crashed.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove the old socket")(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(io("bind"))?;
    // Only the daemon's own user may ask it to stop.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io("chmod"))?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(serve(listener, path, tx));
    Ok(rx)
}

/// Answers requests until one takeover has been confirmed.
async fn serve(listener: UnixListener, path: PathBuf, tx: mpsc::Sender<Takeover>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(socket = %path.display(), "hand-over accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match one_request(stream, &tx).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(socket = %path.display(), "hand-over request ignored: {e}"),
        }
    }
}

/// Returns true once a takeover was confirmed to the successor.
async fn one_request(stream: UnixStream, tx: &mpsc::Sender<Takeover>) -> std::io::Result<bool> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r.take(MAX_LINE));
    match tokio::time::timeout(REQUEST_TIMEOUT, r.read_line(&mut line)).await {
        Ok(read) => read?,
        Err(_) => return Err(std::io::Error::other("no request within 5 s")),
    };
    if line.is_empty() {
        return Ok(false); // a successor's probe (Predecessor::find)
    }
    if line.trim() != STOP {
        w.write_all(b"ERROR expected STOP\n").await?;
        return Err(std::io::Error::other(format!("unknown request {:?}", line.trim())));
    }
    let (reply, answer) = oneshot::channel();
    if tx.send(Takeover { reply }).await.is_err() {
        return Ok(false);
    }
    let Ok(answer) = answer.await else { return Ok(false) };
    w.write_all(format!("{answer}\n").as_bytes()).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_successor_stops_the_running_daemon_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Predecessor::find(dir.path()).await.is_none(), "nobody runs yet");
        let mut takeovers = listen(dir.path()).unwrap();
        let old = tokio::spawn(async move {
            let t = takeovers.recv().await.expect("a takeover");
            t.confirm(3);
        });
        let p = Predecessor::find(dir.path()).await.expect("the running daemon");
        let answer = p.stop(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            answer.as_deref(),
            Some(&*format!("STOPPED pid={} open=3", std::process::id()))
        );
        old.await.unwrap();
        // The old daemon no longer answers; a new one re-binds the path.
        let _new = listen(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn garbage_is_answered_with_an_error_and_does_not_stop_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let mut takeovers = listen(dir.path()).unwrap();
        let mut s = UnixStream::connect(dir.path().join(SOCKET)).await.unwrap();
        s.write_all(b"\x16\x03\x01garbage\n").await.unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).await.unwrap();
        assert_eq!(answer.trim(), "ERROR expected STOP");
        assert!(takeovers.try_recv().is_err(), "no takeover from garbage");
    }

    #[tokio::test]
    async fn a_stale_socket_of_a_crashed_daemon_is_not_a_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        drop(std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET)).unwrap());
        assert!(dir.path().join(SOCKET).exists());
        assert!(Predecessor::find(dir.path()).await.is_none());
    }
}
