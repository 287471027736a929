//! HBONE in: the waypoint terminates mTLS on 15008 and serves each CONNECT stream with
//! its HTTP engine, as if the client had connected to the stream's `:authority` (the
//! Service VIP:port the node daemon resolved to this waypoint) — or, when that Service
//! port is declared non-HTTP, relays it as TCP (`proxy::tcp`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use mesh_hbone::server::{self, Closed, Inbound, InboundRequest, Refused, ServerSettings, Upstream};
use mesh_hbone::{BoxFuture, RefusalReason};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Proxy;
use crate::proxy::server::{PeerIdentity, serve_io};
use crate::proxy::tcp::TcpOrigin;

/// Counters of one HBONE listener: streams served, refusals by reason (refusals are
/// also exported as `mesh_connections_refused_total{reason}` on the stats port).
#[derive(Default)]
pub struct InboundStats {
    pub streams: AtomicU64,
    pub refused: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

struct WaypointInbound {
    proxy: Arc<Proxy>,
    stats: Arc<InboundStats>,
}

impl Inbound for WaypointInbound {
    /// Only destinations this waypoint knows: a Service VIP or a pod of its configuration.
    fn authorize(&self, req: &InboundRequest) -> Result<(), Refused> {
        let snap = self.proxy.config.load();
        let ip = req.target.ip();
        if snap.discovery.by_cluster_ip.contains_key(&ip) || snap.discovery.pods_by_ip.contains_key(&ip) {
            return Ok(());
        }
        Err(Refused::new(
            StatusCode::BAD_REQUEST,
            RefusalReason::UnknownDestination,
            format!("{} is neither a Service nor a pod this waypoint serves", req.target),
        ))
    }

    fn connect(&self, req: &InboundRequest) -> BoxFuture<'static, io::Result<Upstream>> {
        let proxy = self.proxy.clone();
        let local = req.target;
        // Source labels and namespace match on the original client, not on the node daemon.
        let client_ip = req
            .forwarded_for
            .as_deref()
            .and_then(|f| f.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok());
        let peer = SocketAddr::new(client_ip.unwrap_or(req.conn.peer_addr.ip()), 0);
        let id = req.conn.peer_id.to_string();
        let identity = PeerIdentity {
            principal: id.strip_prefix("spiffe://").unwrap_or(&id).into(),
            conn_ip: req.conn.peer_addr.ip(),
        };
        // Decided per stream from the snapshot of now; serve_tcp admits the stream
        // against the policies itself, so a port turning opaque between the two
        // snapshots is still checked.
        if proxy.config.load().is_opaque(local) {
            return Box::pin(async move {
                Ok(Upstream::Serve(Box::new(move |stream| {
                    Box::pin(serve_opaque(stream, proxy, peer, local, identity))
                })))
            });
        }
        Box::pin(async move {
            Ok(Upstream::Serve(Box::new(move |stream| {
                Box::pin(serve_io(stream, proxy, peer, local, Some(identity)))
            })))
        })
    }

    fn refused(&self, reason: RefusalReason, _req: Option<&InboundRequest>) {
        self.proxy.metrics.refused(reason);
        *self
            .stats
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason.as_str())
            .or_default() += 1;
    }

    fn opened(&self, _req: &InboundRequest) -> Closed {
        self.stats.streams.fetch_add(1, Ordering::Relaxed);
        Box::new(|_| {})
    }
}

/// Relays a stream for a non-HTTP Service port (refusals and failures are logged by
/// `serve_tcp` or here; the stream is closed either way).
async fn serve_opaque(
    stream: mesh_hbone::stream::H2Stream,
    proxy: Arc<Proxy>,
    peer: SocketAddr,
    local: SocketAddr,
    identity: PeerIdentity,
) {
    let target = local.to_string();
    let origin = TcpOrigin {
        target: &target,
        peer,
        identity: Some(&identity),
    };
    if let Err(e) = proxy.serve_tcp(stream, origin).await {
        tracing::debug!(%peer, %local, "tcp stream ended: {e}");
    }
}

/// Accepts HBONE until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    settings: ServerSettings,
    proxy: Arc<Proxy>,
    stats: Arc<InboundStats>,
    mut stop: watch::Receiver<bool>,
) {
    let inbound: Arc<dyn Inbound> = Arc::new(WaypointInbound { proxy, stats });
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("HBONE accept failed: {e}");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        tokio::spawn(server::serve(settings.clone(), tcp, peer, inbound.clone()));
    }
}
