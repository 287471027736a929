//! Sockets inside a pod's network namespace.
//!
//! A socket keeps the netns it was created in, so only *creation* has to happen inside
//! the pod: a persistent thread per pod enters the netns once (`setns`) and then makes
//! sockets on request. The fds are handed back to tokio, and connect/accept/IO run on
//! any runtime thread (docs/capture.md §1). The daemon's cgroup is unchanged, so these
//! sockets are never captured by the pod's cgroup programs.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

/// `SO_NETNS_COOKIE` (linux/asm-generic/socket.h); not in every libc release yet.
const SO_NETNS_COOKIE: libc::c_int = 71;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source} (does the pod still exist?)")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot start the socket thread for network namespace {path}: {source}")]
    Thread { path: PathBuf, source: io::Error },
    #[error("cannot enter network namespace {path} (the daemon needs CAP_SYS_ADMIN): {source}")]
    Enter { path: PathBuf, source: io::Error },
}

enum Request {
    Socket(SocketAddr, oneshot::Sender<io::Result<OwnedFd>>),
    Listen(SocketAddr, i32, oneshot::Sender<io::Result<OwnedFd>>),
    /// Work that must run inside the netns (netlink, `/proc/sys/net`), whose result the
    /// closure sends back itself.
    Run(Box<dyn FnOnce() + Send>),
}

/// Socket factory bound to one pod's netns. Cheap to clone; the thread ends when the
/// last clone is dropped (sockets already made stay valid).
#[derive(Clone)]
pub struct PodNetns {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    cookie: u64,
    tx: mpsc::Sender<Request>,
}

impl std::fmt::Debug for PodNetns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetns")
            .field("path", &self.inner.path)
            .field("cookie", &self.inner.cookie)
            .finish()
    }
}

impl PodNetns {
    /// Opens the netns at `path` (e.g. `/run/netns/<name>`) and starts its socket thread.
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let ns = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<u64>>();
        let name = format!("netns-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("pod"));
        std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || socket_thread(ns, rx, ready_tx))
            .map_err(|source| NetnsError::Thread {
                path: path.to_owned(),
                source,
            })?;
        let cookie = ready_rx
            .recv()
            .map_err(|_| io::Error::other("socket thread exited"))
            .and_then(|r| r)
            .map_err(|source| NetnsError::Enter {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                cookie,
                tx,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The kernel's netns cookie (`SO_NETNS_COOKIE`), the key of per-pod eBPF maps.
    pub fn cookie(&self) -> u64 {
        self.inner.cookie
    }

    /// A fresh IPv4 TCP socket in the pod's netns, ready for `bind`/`connect`.
    pub async fn tcp_socket(&self) -> io::Result<TcpSocket> {
        self.tcp_socket_for(SocketAddr::from(([0, 0, 0, 0], 0))).await
    }

    /// A TCP socket of the address family of `addr` in the pod's netns.
    pub async fn tcp_socket_for(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        let fd = self.ask(|tx| Request::Socket(addr, tx)).await?;
        Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }

    /// A listener on `addr` inside the pod's netns with the given accept backlog
    /// (`SO_REUSEADDR` set, so a restarted daemon can bind again over TIME_WAIT).
    pub async fn listen(&self, addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        let fd = self.ask(|tx| Request::Listen(addr, backlog, tx)).await?;
        TcpListener::from_std(std::net::TcpListener::from(fd))
    }

    /// Runs `f` on the pod's socket thread, inside its netns: netlink sockets and
    /// `/proc/sys/net` opened there belong to the pod.
    pub async fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.submit(move || {
            let _ = tx.send(f());
        })?;
        rx.await.map_err(|_| self.gone())
    }

    /// [`Self::run_inside`] for synchronous callers: blocks until `f` has run. Only for
    /// short kernel calls (a netlink request), never for anything that waits on peers.
    pub fn run_inside_blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.submit(move || {
            let _ = tx.send(f());
        })?;
        rx.recv().map_err(|_| self.gone())
    }

    fn submit(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.inner.tx.send(Request::Run(Box::new(job))).map_err(|_| self.gone())
    }

    fn gone(&self) -> io::Error {
        io::Error::other(format!(
            "socket thread of netns {} has stopped",
            self.inner.path.display()
        ))
    }

    async fn ask(&self, req: impl FnOnce(oneshot::Sender<io::Result<OwnedFd>>) -> Request) -> io::Result<OwnedFd> {
        let (tx, rx) = oneshot::channel();
        self.inner.tx.send(req(tx)).map_err(|_| self.gone())?;
        rx.await.map_err(|_| self.gone())?
    }
}

fn socket_thread(ns: File, rx: mpsc::Receiver<Request>, ready: mpsc::Sender<io::Result<u64>>) {
    let entered = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(io::Error::from)
        .and_then(|()| current_netns_cookie());
    let ok = entered.is_ok();
    if ready.send(entered).is_err() || !ok {
        return;
    }
    drop(ns);
    while let Ok(req) = rx.recv() {
        match req {
            Request::Socket(addr, tx) => {
                let _ = tx.send(new_socket(addr).map(OwnedFd::from));
            }
            Request::Listen(addr, backlog, tx) => {
                let _ = tx.send(new_listener(addr, backlog));
            }
            Request::Run(job) => job(),
        }
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    Ok(s)
}

fn new_listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let s = new_socket(addr)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(OwnedFd::from(s))
}

fn current_netns_cookie() -> io::Result<u64> {
    let probe = Socket::new(Domain::IPV4, Type::STREAM.cloexec(), None)?;
    netns_cookie(&probe)
}

/// `SO_NETNS_COOKIE` of any socket: which netns it lives in.
pub fn netns_cookie(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, the out-pointer and length describe `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[tokio::test]
    async fn own_netns_gives_working_sockets_and_the_same_cookie() {
        assert!(is_root(), "needs root: setns and SO_NETNS_COOKIE on a pod netns");
        let ns = PodNetns::open(Path::new("/proc/self/ns/net")).unwrap();
        let l = ns.listen("127.0.0.1:0".parse().unwrap(), 1024).await.unwrap();
        let here = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(netns_cookie(&here).unwrap(), ns.cookie());
        let addr = l.local_addr().unwrap();
        let s = ns.tcp_socket().await.unwrap();
        let (c, a) = tokio::join!(s.connect(addr), l.accept());
        assert_eq!(c.unwrap().peer_addr().unwrap(), addr);
        assert_eq!(netns_cookie(&a.unwrap().0).unwrap(), ns.cookie());
    }

    #[test]
    fn missing_netns_is_a_clear_error() {
        let e = PodNetns::open(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/netns"), "{e}");
    }
}
