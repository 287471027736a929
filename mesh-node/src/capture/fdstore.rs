//! Listener fd store: keeps the capture listeners open while the daemon is down.
//!
//! A closed listener drops out of the SockHash (inbound would bypass the mesh) and
//! refuses captured outbound connects. A tiny holder process (`mesh-node fd-holder`,
//! like systemd's FileDescriptorStore) keeps duplicates of every listener, received over
//! a unix SEQPACKET socket with SCM_RIGHTS. While the daemon restarts, new connections
//! wait in the listeners' backlog; the restarted daemon takes the fds back (`LIST`) and
//! serves them (docs/capture.md §4). In-flight connections of a crashed daemon are lost.
//!
//! Protocol, one message each: `PUT <name>` + 1 fd → `OK`; `DEL <prefix>` → `OK`; `LIST` → `FD <name>`
//! + 1 fd per entry, then `END`; `QUIT` (the holder exits, closing everything).

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr,
    accept, bind, connect, listen, recvmsg, sendmsg, setsockopt, shutdown, socket, sockopt,
};
use nix::sys::time::TimeVal;

#[derive(Debug, thiserror::Error)]
pub enum FdStoreError {
    #[error("fd store at {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("fd store at {path}: holder did not come up within 5 s")]
    NoHolder { path: PathBuf },
}

const MAX_MSG: usize = 1024;

fn send(fd: RawFd, text: &str, with: Option<RawFd>) -> nix::Result<()> {
    let iov = [IoSlice::new(text.as_bytes())];
    let fds;
    let cmsgs: Vec<ControlMessage> = match with {
        Some(f) => {
            fds = [f];
            vec![ControlMessage::ScmRights(&fds)]
        }
        None => Vec::new(),
    };
    sendmsg::<()>(fd, &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).map(|_| ())
}

/// One message: its text (empty at EOF) and the fd it carried, if any.
fn recv(fd: RawFd) -> nix::Result<(String, Option<OwnedFd>)> {
    let mut buf = [0u8; MAX_MSG];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel just installed this fd for us; we own it now.
                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), got))
}

/// The daemon's side.
pub struct FdStore {
    path: PathBuf,
    conn: OwnedFd,
}

impl FdStore {
    /// Connects to the holder at `path`, starting one (detached, its own session) if
    /// none is running and `spawn`; otherwise waits for one to come up.
    pub fn connect_or_spawn(path: &Path, spawn: bool) -> Result<Self, FdStoreError> {
        if let Ok(s) = Self::connect(path) {
            return Ok(s);
        }
        if spawn {
            Self::spawn(path)?;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Self::connect(path) {
                Ok(s) => return Ok(s),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return Err(FdStoreError::NoHolder { path: path.to_owned() }),
            }
        }
    }

    fn spawn(path: &Path) -> Result<(), FdStoreError> {
        let exe = std::env::current_exe().map_err(|source| FdStoreError::Io {
            path: path.to_owned(),
            op: "find own binary",
            source,
        })?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("fd-holder").arg("--socket").arg(path);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: setsid is async-signal-safe; the holder must not share our session or
        // process group, so signals meant for the daemon do not reach it.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from)
            });
        }
        cmd.spawn().map(drop).map_err(|source| FdStoreError::Io {
            path: path.to_owned(),
            op: "start holder",
            source,
        })
    }

    fn connect(path: &Path) -> nix::Result<Self> {
        let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
        connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        // A holder still busy with a dying daemon answers within about a second.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(5, 0))?;
        // Never let a stuck holder block the daemon's runtime thread for long.
        setsockopt(&fd, sockopt::SendTimeout, &TimeVal::new(2, 0))?;
        Ok(Self {
            path: path.to_owned(),
            conn: fd,
        })
    }

    fn err(&self, op: &'static str) -> impl Fn(nix::Error) -> FdStoreError + '_ {
        move |e| FdStoreError::Io {
            path: self.path.clone(),
            op,
            source: e.into(),
        }
    }

    /// Returns once the holder has the fd: a daemon killed right after still left it
    /// there for the next one (the holder serves each daemon on its own thread).
    pub fn put(&self, name: &str, fd: &impl AsFd) -> Result<(), FdStoreError> {
        send(
            self.conn.as_raw_fd(),
            &format!("PUT {name}"),
            Some(fd.as_fd().as_raw_fd()),
        )
        .map_err(self.err("PUT"))?;
        self.acked("PUT")
    }

    pub fn del(&self, prefix: &str) -> Result<(), FdStoreError> {
        send(self.conn.as_raw_fd(), &format!("DEL {prefix}"), None).map_err(self.err("DEL"))?;
        self.acked("DEL")
    }

    fn acked(&self, op: &'static str) -> Result<(), FdStoreError> {
        match recv(self.conn.as_raw_fd()).map_err(self.err(op))? {
            (ok, _) if ok == "OK" => Ok(()),
            (other, _) => Err(FdStoreError::Io {
                path: self.path.clone(),
                op,
                source: std::io::Error::other(format!("holder answered {other:?}")),
            }),
        }
    }

    pub fn quit(&self) -> Result<(), FdStoreError> {
        send(self.conn.as_raw_fd(), "QUIT", None).map_err(self.err("QUIT"))
    }

    pub fn list(&self) -> Result<BTreeMap<String, OwnedFd>, FdStoreError> {
        send(self.conn.as_raw_fd(), "LIST", None).map_err(self.err("LIST"))?;
        let mut out = BTreeMap::new();
        loop {
            let (text, fd) = recv(self.conn.as_raw_fd()).map_err(self.err("LIST reply"))?;
            match (text.strip_prefix("FD "), fd) {
                (Some(name), Some(fd)) => {
                    out.insert(name.to_owned(), fd);
                }
                _ if text == "END" || text.is_empty() => return Ok(out),
                _ => {}
            }
        }
    }

    /// PID of the holder (from its pid file), for `/config_dump` and tests.
    pub fn holder_pid(&self) -> Option<u32> {
        std::fs::read_to_string(pid_file(&self.path)).ok()?.trim().parse().ok()
    }
}

fn pid_file(sock: &Path) -> PathBuf {
    sock.with_extension("pid")
}

/// The holder process: serves each daemon connection on its own thread (during an
/// upgrade the old and the new daemon are both connected), never exits on its own
/// except on `QUIT`. Deliberately tiny, so it never needs restarting.
pub fn run_holder(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let l = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    bind(l.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&l, Backlog::new(8)?)?;
    std::fs::write(pid_file(path), std::process::id().to_string())?;
    let store: Arc<Mutex<BTreeMap<String, OwnedFd>>> = Arc::default();
    let quit = Arc::new(AtomicBool::new(false));
    let listener = Arc::new(l);
    loop {
        let accepted = accept(listener.as_raw_fd());
        if quit.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(pid_file(path));
            return Ok(());
        }
        let Ok(c) = accepted else { continue };
        // SAFETY: accept returned a fresh fd that we own.
        let c = unsafe { OwnedFd::from_raw_fd(c) };
        let (store, quit, listener) = (store.clone(), quit.clone(), listener.clone());
        std::thread::spawn(move || {
            if serve(&c, &store) {
                quit.store(true, Ordering::SeqCst);
                // Wakes the accept loop above, which then sees `quit`.
                let _ = shutdown(listener.as_raw_fd(), Shutdown::Both);
            }
        });
    }
}

/// Returns true on QUIT.
fn serve(c: &OwnedFd, store: &Mutex<BTreeMap<String, OwnedFd>>) -> bool {
    loop {
        let Ok((text, fd)) = recv(c.as_raw_fd()) else {
            return false;
        };
        if text.is_empty() {
            return false;
        }
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = text.strip_prefix("PUT ") {
            if let Some(fd) = fd {
                store.insert(name.to_owned(), fd);
            }
            if send(c.as_raw_fd(), "OK", None).is_err() {
                return false;
            }
        } else if let Some(prefix) = text.strip_prefix("DEL ") {
            store.retain(|k, _| !k.starts_with(prefix));
            if send(c.as_raw_fd(), "OK", None).is_err() {
                return false;
            }
        } else if text == "LIST" {
            for (name, fd) in store.iter() {
                if send(c.as_raw_fd(), &format!("FD {name}"), Some(fd.as_raw_fd())).is_err() {
                    return false;
                }
            }
            if send(c.as_raw_fd(), "END", None).is_err() {
                return false;
            }
        } else if text == "QUIT" {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_keeps_fds_across_clients_serves_two_at_once_and_deletes_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fd.sock");
        let path = sock.clone();
        let holder = std::thread::spawn(move || run_holder(&path).unwrap());
        let store = {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match FdStore::connect(&sock) {
                    Ok(s) => break s,
                    Err(e) => assert!(Instant::now() < deadline, "{e}"),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a1 = l1.local_addr().unwrap();
        store.put("shop_a_1:15001", &l1).unwrap();
        store.put("shop_b_2:15001", &l2).unwrap();
        drop(l1);
        drop(store); // like a crashed daemon
        let store = FdStore::connect(&sock).unwrap();
        let got = store.list().unwrap();
        assert_eq!(got.keys().collect::<Vec<_>>(), ["shop_a_1:15001", "shop_b_2:15001"]);
        let l1 = std::net::TcpListener::from(got.into_iter().next().unwrap().1);
        assert_eq!(l1.local_addr().unwrap(), a1, "the same listening socket came back");
        store.del("shop_a_1:").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        // An upgrade: a second daemon is served while the first stays connected.
        let second = FdStore::connect(&sock).unwrap();
        assert_eq!(second.list().unwrap().keys().collect::<Vec<_>>(), ["shop_b_2:15001"]);
        store.quit().unwrap();
        holder.join().unwrap();
        assert!(!sock.exists());
    }
}
