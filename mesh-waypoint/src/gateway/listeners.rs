//! The gateway's listeners follow the plan: a port that appears is bound on
//! `--bind-ip`, one that disappears stops accepting and its connections are shut
//! down gracefully (in-flight requests finish). Each connection reads the plan in
//! force when it is accepted, so certificates and routes change without rebinding;
//! a port switching between HTTP and HTTPS closes its old connections gracefully.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use super::plan::Protocol;
use super::routing::Downstream;
use crate::config::Config;
use crate::proxy::Proxy;

/// A port that could not be bound is retried this often.
const RETRY_BIND: Duration = Duration::from_secs(1);

/// Per-port state, as the admin dump shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ListenerStatus {
    Listening { addr: SocketAddr, protocol: Protocol },
    Failed { addr: SocketAddr, error: String },
}

/// Shared between the listener task and whoever reports on it.
pub type StatusMap = Arc<Mutex<BTreeMap<u16, ListenerStatus>>>;

struct Open {
    protocol: Protocol,
    /// Dropped to stop the accept loop.
    _stop_accept: watch::Sender<()>,
    /// Changed (or dropped) to close this port's connections gracefully.
    close_connections: watch::Sender<()>,
}

/// Runs until `shutdown` flips; then every listener and connection is told to stop.
pub async fn run(
    bind_ip: IpAddr,
    config: Arc<Config>,
    proxy: Arc<Proxy>,
    status: StatusMap,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = config.subscribe();
    let mut open: BTreeMap<u16, Open> = BTreeMap::new();
    loop {
        let failed = reconcile(bind_ip, &config, &proxy, &status, &mut open).await;
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RETRY_BIND), if failed => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Brings the open listeners in line with the plan; true if a bind failed.
async fn reconcile(
    bind_ip: IpAddr,
    config: &Arc<Config>,
    proxy: &Arc<Proxy>,
    status: &StatusMap,
    open: &mut BTreeMap<u16, Open>,
) -> bool {
    let snap = config.load();
    let wanted: BTreeMap<u16, Protocol> = snap
        .gateway
        .as_ref()
        .map(|p| p.ports.values().map(|pp| (pp.port, pp.protocol)).collect())
        .unwrap_or_default();
    open.retain(|port, _| {
        let keep = wanted.contains_key(port);
        if !keep {
            tracing::info!(port, "gateway port closed: no Gateway server uses it any more");
            set_status(status, *port, None);
        }
        keep
    });
    let mut failed = false;
    for (&port, &protocol) in &wanted {
        if let Some(o) = open.get_mut(&port) {
            if o.protocol != protocol {
                tracing::info!(port, from = %o.protocol, to = %protocol, "gateway port changes protocol; closing its connections gracefully");
                o.protocol = protocol;
                o.close_connections.send_replace(());
                set_status(status, port, Some(listening(bind_ip, port, protocol)));
            }
            continue;
        }
        let addr = SocketAddr::new(bind_ip, port);
        match bind(addr) {
            Ok(listener) => {
                let (stop_accept, stop_rx) = watch::channel(());
                let (close_connections, _) = watch::channel(());
                tracing::info!(%addr, %protocol, "gateway listening");
                tokio::spawn(accept_loop(
                    listener,
                    port,
                    config.clone(),
                    proxy.clone(),
                    stop_rx,
                    close_connections.clone(),
                ));
                open.insert(
                    port,
                    Open {
                        protocol,
                        _stop_accept: stop_accept,
                        close_connections,
                    },
                );
                set_status(status, port, Some(listening(bind_ip, port, protocol)));
            }
            Err(e) => {
                failed = true;
                let already = matches!(
                    status.lock().ok().and_then(|s| s.get(&port).cloned()),
                    Some(ListenerStatus::Failed { .. })
                );
                if !already {
                    tracing::warn!(%addr, "gateway cannot listen: {e}; retrying every {RETRY_BIND:?}");
                }
                set_status(
                    status,
                    port,
                    Some(ListenerStatus::Failed {
                        addr,
                        error: e.to_string(),
                    }),
                );
            }
        }
    }
    failed
}

fn listening(ip: IpAddr, port: u16, protocol: Protocol) -> ListenerStatus {
    ListenerStatus::Listening {
        addr: SocketAddr::new(ip, port),
        protocol,
    }
}

fn set_status(status: &StatusMap, port: u16, value: Option<ListenerStatus>) {
    if let Ok(mut s) = status.lock() {
        match value {
            Some(v) => s.insert(port, v),
            None => s.remove(&port),
        };
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A port closed and reopened by a config change must not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    config: Arc<Config>,
    proxy: Arc<Proxy>,
    mut stop: watch::Receiver<()>,
    close: watch::Sender<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(port, "accept failed: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let closing = close.subscribe();
        tokio::spawn(connection(stream, peer, port, config.clone(), proxy.clone(), closing));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    config: Arc<Config>,
    proxy: Arc<Proxy>,
    closing: watch::Receiver<()>,
) {
    let Ok(local) = stream.local_addr() else { return };
    let tls = config
        .load()
        .gateway
        .as_ref()
        .and_then(|p| p.ports.get(&port))
        .and_then(|pp| pp.tls.clone());
    match tls {
        None => serve(stream, peer, local, Downstream { port, tls: false }, proxy, closing).await,
        Some(cfg) => match tokio::time::timeout(
            proxy.limits.tls_handshake_timeout,
            tokio_rustls::TlsAcceptor::from(cfg).accept(stream),
        )
        .await
        {
            Ok(Ok(tls_stream)) => serve(tls_stream, peer, local, Downstream { port, tls: true }, proxy, closing).await,
            Ok(Err(e)) => tracing::debug!(%peer, port, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(%peer, port, "TLS handshake timed out"),
        },
    }
}

async fn serve<S>(
    io: S,
    peer: SocketAddr,
    local: SocketAddr,
    down: Downstream,
    proxy: Arc<Proxy>,
    mut closing: watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let builder = crate::proxy::server::http_builder(proxy.limits);
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        req.extensions_mut().insert(down);
        super::edge_headers::apply(req.headers_mut(), peer, down.tls);
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, local).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "downstream connection ended: {e}");
    }
}
