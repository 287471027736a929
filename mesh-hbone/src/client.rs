//! HBONE client: pooled mTLS HTTP/2 connections per (source identity, destination
//! identity, destination IP), one CONNECT stream per tunneled TCP connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::BoxFuture;
use crate::tls::{self, TLS_BUFFER_LIMIT};
use crate::{BAGGAGE, CONNECTION_WINDOW, FORWARDED, MAX_FRAME, STREAM_WINDOW};
use crate::{RefusalReason, SpiffeId, WorkloadCert};

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("cannot reach {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr} failed ({reason}): {source}")]
    Tls {
        addr: SocketAddr,
        reason: RefusalReason,
        source: io::Error,
    },
    #[error("{addr} did not finish connection set-up within {0:?}", timeout)]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP/2 with {addr} failed: {source}")]
    H2 { addr: SocketAddr, source: h2::Error },
    #[error("{addr} answered CONNECT {authority} with {status}")]
    Status {
        addr: SocketAddr,
        authority: SocketAddr,
        status: StatusCode,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] tls::TlsError),
}

impl HboneError {
    /// A short stable name for metrics.
    pub fn reason(&self) -> RefusalReason {
        match self {
            HboneError::Connect { .. } => RefusalReason::ConnectFailed,
            HboneError::Tls { reason, .. } => *reason,
            HboneError::Timeout { .. } => RefusalReason::HandshakeTimeout,
            HboneError::H2 { .. } => RefusalReason::H2Error,
            HboneError::Status { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                RefusalReason::UpstreamUnavailable
            }
            HboneError::Status { .. } => RefusalReason::ConnectRefused,
            HboneError::Config(_) => RefusalReason::Config,
        }
    }
}

/// Where one tunnel goes.
#[derive(Clone, Debug)]
pub struct TunnelTarget {
    /// The HBONE endpoint: destination pod (or waypoint) IP and 15008.
    pub hbone_addr: SocketAddr,
    /// Identity the server there must present.
    pub identity: SpiffeId,
    /// `:authority`, the original destination (or VIP:port for a waypoint).
    pub authority: SocketAddr,
    /// The original client, sent as `forwarded: for=`; `None` when unknown.
    pub forwarded_for: Option<IpAddr>,
    /// Sent as `traceparent` (the node daemon sends one per connection, as ztunnel does).
    pub traceparent: Option<crate::TraceParent>,
    /// Sent as `baggage`: the source workload's metadata, as ztunnel sends it
    /// (`k8s.cluster.name=…,k8s.namespace.name=…,k8s.deployment.name=…,service.name=…,service.version=…`).
    pub baggage: Option<String>,
}

/// Makes the TCP connection to the HBONE endpoint (from the source pod's netns).
pub type Dial = Box<dyn FnOnce(SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> + Send>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    src: SpiffeId,
    /// After a rotation new streams go on a new connection that presents the new
    /// certificate; the old connection drains and is reaped when idle.
    src_generation: u64,
    dst: SpiffeId,
    dst_ip: IpAddr,
}

struct Pooled {
    sender: SendRequest<Bytes>,
    last_used: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Pooled>>>;

pub struct HboneClient {
    roots: Arc<RootCertStore>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    pool: Mutex<HashMap<PoolKey, Slot>>,
}

pub struct Tunnel {
    pub send: h2::SendStream<Bytes>,
    pub recv: h2::RecvStream,
}

impl HboneClient {
    pub fn new(roots: Arc<RootCertStore>, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            roots,
            connect_timeout,
            idle_timeout,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a CONNECT stream to `target`, presenting `source`'s certificate.
    ///
    /// A pooled connection can go away under a new stream (the peer daemon hands over
    /// and sends GOAWAY, or it closed): the CONNECT was then never answered, so it is
    /// sent once more on a new connection instead of failing the caller's connect.
    pub async fn open(&self, source: &WorkloadCert, target: &TunnelTarget, dial: Dial) -> Result<Tunnel, HboneError> {
        let key = PoolKey {
            src: source.identity.clone(),
            src_generation: source.resolver.current().generation,
            dst: target.identity.clone(),
            dst_ip: target.hbone_addr.ip(),
        };
        let slot = self.slot(&key);
        let (sender, unused_dial) = self.sender(&slot, source, target, dial, true).await?;
        match (connect(sender, target).await, unused_dial) {
            (Err(HboneError::H2 { source: e, .. }), Some(dial)) => {
                tracing::debug!(addr = %target.hbone_addr, "pooled HBONE connection went away before answering ({e}); retrying on a new one");
                let (sender, _) = self.sender(&slot, source, target, dial, false).await?;
                connect(sender, target).await
            }
            (r, _) => r,
        }
    }

    /// The pooled connection when `reuse` and it is usable (handing `dial` back), else a
    /// new one that replaces it in the pool. The slot stays locked during the handshake
    /// so that concurrent tunnels to one peer share one connection.
    async fn sender(
        &self,
        slot: &Slot,
        source: &WorkloadCert,
        target: &TunnelTarget,
        dial: Dial,
        reuse: bool,
    ) -> Result<(SendRequest<Bytes>, Option<Dial>), HboneError> {
        let mut guard = slot.lock().await;
        let reusable = match guard.as_mut() {
            Some(p) if reuse => p.sender.clone().ready().await.ok(),
            _ => None,
        };
        let (sender, dial) = match reusable {
            Some(s) => (s, Some(dial)),
            None => (self.handshake(source, target, dial).await?, None),
        };
        *guard = Some(Pooled {
            sender: sender.clone(),
            last_used: Instant::now(),
        });
        Ok((sender, dial))
    }

    fn slot(&self, key: &PoolKey) -> Slot {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.entry(key.clone()).or_default().clone()
    }

    async fn handshake(
        &self,
        source: &WorkloadCert,
        target: &TunnelTarget,
        dial: Dial,
    ) -> Result<SendRequest<Bytes>, HboneError> {
        let addr = target.hbone_addr;
        let config = tls::client_config(source.resolver.clone(), self.roots.clone(), target.identity.clone())?;
        let setup = async {
            let tcp = dial(addr)
                .await
                .map_err(|source| HboneError::Connect { addr, source })?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::IpAddress(addr.ip().into());
            let mut tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|source| HboneError::Tls {
                    addr,
                    reason: tls::failure_reason(&source),
                    source,
                })?;
            tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_frame_size(MAX_FRAME)
                .handshake::<_, Bytes>(tls)
                .await
                .map_err(|source| HboneError::H2 { addr, source })
        };
        let (sender, connection) =
            tokio::time::timeout(self.connect_timeout, setup)
                .await
                .map_err(|_| HboneError::Timeout {
                    addr,
                    timeout: self.connect_timeout,
                })??;
        tracing::debug!(%addr, src = %source.identity, dst = %target.identity, "HBONE connection up");
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, "HBONE connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Drops pooled connections unused for the idle timeout; h2 closes each once its
    /// last stream ends.
    pub fn reap_idle(&self) -> usize {
        let now = Instant::now();
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let before = pool.len();
        pool.retain(|_, slot| match slot.try_lock() {
            Ok(g) => g
                .as_ref()
                .is_some_and(|p| now.duration_since(p.last_used) < self.idle_timeout),
            Err(_) => true,
        });
        before - pool.len()
    }

    pub async fn run_reaper(self: Arc<Self>) {
        let tick = (self.idle_timeout / 2).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(tick).await;
            let n = self.reap_idle();
            if n > 0 {
                tracing::debug!(closed = n, "idle HBONE connections released");
            }
        }
    }

    /// Pooled connections (tests and the admin dump).
    pub fn pooled(&self) -> usize {
        self.pool.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// One CONNECT stream on `sender`, answered 200.
async fn connect(sender: SendRequest<Bytes>, target: &TunnelTarget) -> Result<Tunnel, HboneError> {
    let addr = target.hbone_addr;
    let h2 = |source| HboneError::H2 { addr, source };
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(target.authority.to_string());
    if let Some(ip) = target.forwarded_for {
        req = req.header(FORWARDED, format!("for={}", forwarded_ip(ip)));
    }
    if let Some(tp) = &target.traceparent {
        req = req.header(crate::traceparent::TRACEPARENT, tp.to_string());
    }
    if let Some(b) = &target.baggage {
        req = req.header(BAGGAGE, b.as_str());
    }
    let req = req.body(()).map_err(|e| {
        HboneError::Status {
            addr,
            authority: target.authority,
            status: StatusCode::BAD_REQUEST,
        }
        .log(e)
    })?;
    let mut sender = sender.ready().await.map_err(h2)?;
    let (response, send) = sender.send_request(req, false).map_err(h2)?;
    let response = response.await.map_err(h2)?;
    if response.status() != StatusCode::OK {
        return Err(HboneError::Status {
            addr,
            authority: target.authority,
            status: response.status(),
        });
    }
    Ok(Tunnel {
        send,
        recv: response.into_body(),
    })
}

fn forwarded_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

trait LogAnd {
    fn log(self, e: http::Error) -> Self;
}

impl LogAnd for HboneError {
    fn log(self, e: http::Error) -> Self {
        tracing::warn!("cannot build CONNECT request: {e}");
        self
    }
}
