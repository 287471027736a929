//! Bookinfo published on the host's loopback like `kubectl port-forward`: a listener
//! on `127.0.0.1` relays each connection through a socket opened inside the `outside`
//! pod's netns to the ingress gateway, so a browser on this machine reaches the page
//! and no address or route is added to the host.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{CLIENT, LabError, entry};
use crate::harness::{Cluster, HarnessError, in_netns};

/// How long the relay waits for the gateway to accept one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running relay; dropping it stops accepting (relayed connections finish on their own).
pub struct Published {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Published {
    /// Where a browser on this machine connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/productpage`.
    pub fn url(&self) -> String {
        format!("http://{}/productpage", self.addr)
    }
}

/// Listens on `listen` (a loopback address; port 0 picks a free one) and relays to
/// the lab's ingress gateway from inside the `outside` pod.
pub fn publish(cluster: &Cluster, listen: SocketAddr) -> Result<Published, LabError> {
    publish_to(cluster, listen, entry(cluster)?)
}

/// Like [`publish`], relaying to `target` (an address the `outside` pod reaches).
pub fn publish_to(cluster: &Cluster, listen: SocketAddr, target: SocketAddr) -> Result<Published, LabError> {
    let listener = TcpListener::bind(listen).map_err(|e| HarnessError::sys(format!("listen on {listen}"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| HarnessError::sys(format!("address of the listener on {listen}"), e))?;
    let netns: PathBuf = cluster.pod(CLIENT.0, CLIENT.1)?.netns_path;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = thread::spawn(move || {
        // The listener was bound in the host's netns; this thread joins the client
        // pod's, so the upstream sockets it opens start there.
        let served = in_netns(&netns, || accept_loop(&listener, target, &stopping));
        if let Err(e) = served {
            tracing::warn!("publishing {target} on {addr}: {e}");
        }
    });
    Ok(Published {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
            Ok(up) => {
                thread::spawn(move || splice(conn, up));
            }
            Err(e) => tracing::debug!("relay to {target}: {e}"),
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = thread::spawn(move || copy(a2, b2));
    copy(b, a);
    let _ = t.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
