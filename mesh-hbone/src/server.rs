//! HBONE server: TLS 1.3 handshake (bounded in time), HTTP/2, one CONNECT per stream.
//! Every refusal is logged with its reason and reported to [`Inbound::refused`]
//! (a metric); one bad peer never affects another connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::BoxFuture;
use crate::relay::{Copied, relay};
use crate::stream::H2Stream;
use crate::tls::{self, TLS_BUFFER_LIMIT};
use crate::{BAGGAGE, CONNECTION_WINDOW, FORWARDED, MAX_FRAME, STREAM_WINDOW};
use crate::{RefusalReason, SpiffeId};

#[derive(Clone)]
pub struct ServerSettings {
    pub tls: Arc<rustls::ServerConfig>,
    /// A peer that has not finished TLS and HTTP/2 set-up by then is dropped.
    pub handshake_timeout: Duration,
    pub limits: Limits,
    /// Shared by every connection of one listener (or daemon): who is in set-up now.
    pub handshakes: Arc<Handshakes>,
    /// When it flips to `true` (the server is handing over or stopping), each connection
    /// sends GOAWAY, serves the streams it has, and closes: clients open new connections
    /// elsewhere instead of losing streams.
    pub drain: tokio::sync::watch::Receiver<bool>,
}

/// What one peer may hold of an HBONE server. Each is a flag of both binaries
/// (`--hbone-max-concurrent-streams`, `--hbone-max-header-list-size`,
/// `--hbone-max-handshakes-per-peer`; README.md, "Abusive peers").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Streams one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS;
    /// h2's default is unlimited). The client pools every tunnel between two workloads on
    /// one connection, so this is also the most tunnels one pair of workloads can hold.
    pub max_concurrent_streams: u32,
    /// Largest header block of one CONNECT, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE;
    /// h2's default is 16 MiB, a CONNECT needs a few hundred bytes).
    pub max_header_list_size: u32,
    /// Connections from one IP address still in TLS / HTTP/2 set-up at once; more are
    /// closed at accept (a peer finishing its handshakes is never near it: the client
    /// makes one connection per pair of workloads).
    pub max_handshakes_per_peer: u32,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_concurrent_streams: 16_384,
        max_header_list_size: 16 << 10,
        max_handshakes_per_peer: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// [`Limits`] as flags, one definition for both binaries.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Streams one HBONE connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = Limits::DEFAULT.max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..))]
    pub hbone_max_concurrent_streams: u32,
    /// Largest header block of one HBONE CONNECT, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(long, default_value_t = Limits::DEFAULT.max_header_list_size, value_parser = clap::value_parser!(u32).range(1024..))]
    pub hbone_max_header_list_size: u32,
    /// Connections from one IP address in TLS / HTTP/2 set-up at once on 15008; more are closed at accept.
    #[arg(long, default_value_t = Limits::DEFAULT.max_handshakes_per_peer, value_parser = clap::value_parser!(u32).range(1..))]
    pub hbone_max_handshakes_per_peer: u32,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_concurrent_streams: self.hbone_max_concurrent_streams,
            max_header_list_size: self.hbone_max_header_list_size,
            max_handshakes_per_peer: self.hbone_max_handshakes_per_peer,
        }
    }
}

/// Connections per peer IP that are in set-up now.
#[derive(Debug, Default)]
pub struct Handshakes(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>);

/// One connection's place in [`Handshakes`], given back when dropped.
pub struct HandshakeSlot {
    set: Arc<Handshakes>,
    ip: std::net::IpAddr,
}

impl Handshakes {
    /// A slot for a connection from `ip`, or `None` when `ip` already holds `max`.
    pub fn enter(self: &Arc<Self>, ip: std::net::IpAddr, max: u32) -> Option<HandshakeSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot { set: self.clone(), ip })
    }

    /// Connections from `ip` in set-up now.
    pub fn in_progress(&self, ip: std::net::IpAddr) -> u32 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut map = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The verified peer of one HBONE connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer_addr: SocketAddr,
    pub peer_id: SpiffeId,
    pub peer_cert: CertificateDer<'static>,
}

#[derive(Debug)]
pub struct InboundRequest {
    pub conn: Arc<ConnInfo>,
    pub target: SocketAddr,
    /// `for=` of the `forwarded` header: the original client, when the peer says so.
    pub forwarded_for: Option<String>,
    /// The connection's `traceparent`, when the peer sent a valid one.
    pub traceparent: Option<crate::TraceParent>,
    /// The `baggage` the peer sent (its word about the source workload; unverified).
    pub baggage: Option<String>,
}

/// A CONNECT the server will not carry, with the status it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: RefusalReason,
    pub detail: String,
}

impl Refused {
    pub fn new(status: StatusCode, reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            detail: detail.into(),
        }
    }
}

/// Where an accepted stream's bytes go.
pub enum Upstream {
    /// Relayed to a socket (the node daemon: the application in the pod).
    Tcp(TcpStream),
    /// [`Upstream::Tcp`] with a value that must live as long as the relay (the node
    /// daemon's registration of a connection made from the client's address).
    Held(TcpStream, Box<dyn Send + Sync>),
    /// Served in-process on the stream itself (the waypoint's HTTP engine).
    Serve(Box<dyn FnOnce(H2Stream) -> BoxFuture<'static, ()> + Send>),
}

/// What is behind the server: who may reach what, and how to reach it.
pub trait Inbound: Send + Sync + 'static {
    fn authorize(&self, req: &InboundRequest) -> Result<(), Refused>;
    fn connect(&self, req: &InboundRequest) -> BoxFuture<'static, io::Result<Upstream>>;
    /// A connection or stream refused; `req` when the CONNECT itself was readable.
    fn refused(&self, reason: RefusalReason, req: Option<&InboundRequest>);
    /// A stream carried from here on; what it returns is called with the byte counts
    /// when it ends (so what was decided at the open, labels say, holds at the close).
    fn opened(&self, req: &InboundRequest) -> Closed;
}

/// Called once when an accepted stream ends.
pub type Closed = Box<dyn FnOnce(Copied) + Send>;

pub async fn serve(settings: ServerSettings, tcp: TcpStream, peer: SocketAddr, inbound: Arc<dyn Inbound>) {
    let _ = tcp.set_nodelay(true);
    let Some(slot) = settings
        .handshakes
        .enter(peer.ip(), settings.limits.max_handshakes_per_peer)
    else {
        let detail = format!(
            "{} connections of this peer are in set-up",
            settings.limits.max_handshakes_per_peer
        );
        return refuse_conn(&*inbound, peer, RefusalReason::PeerHandshakeLimit, &detail);
    };
    let setup = async {
        let mut tls = TlsAcceptor::from(settings.tls.clone())
            .accept(tcp)
            .await
            .map_err(|e| (tls::failure_reason(&e), e.to_string()))?;
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(tls::ALPN_H2) {
            return Err((RefusalReason::NoAlpn, "the client did not negotiate ALPN h2".to_owned()));
        }
        let cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or((RefusalReason::NoClientCert, String::new()))?;
        let peer_id = tls::spiffe_id(&cert).map_err(|e| (RefusalReason::CertInvalid, e.to_string()))?;
        tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        let h2 = h2::server::Builder::new()
            .max_concurrent_streams(settings.limits.max_concurrent_streams)
            .max_header_list_size(settings.limits.max_header_list_size)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .handshake::<_, Bytes>(tls)
            .await
            .map_err(|e| (RefusalReason::NotH2, e.to_string()))?;
        Ok((
            h2,
            ConnInfo {
                peer_addr: peer,
                peer_id,
                peer_cert: cert.into_owned(),
            },
        ))
    };
    let (mut h2, conn) = match tokio::time::timeout(settings.handshake_timeout, setup).await {
        Ok(Ok(v)) => v,
        Ok(Err((reason, detail))) => return refuse_conn(&*inbound, peer, reason, &detail),
        Err(_) => {
            return refuse_conn(
                &*inbound,
                peer,
                RefusalReason::HandshakeTimeout,
                "peer stalled during set-up",
            );
        }
    };
    drop(slot);
    let conn = Arc::new(conn);
    tracing::debug!(%peer, peer_id = %conn.peer_id, "HBONE connection up");
    let mut drain = settings.drain;
    let mut going_away = false;
    loop {
        let next = tokio::select! {
            next = h2.accept() => next,
            // A closed channel (nobody can start a drain) is not a drain.
            Ok(_) = drain.wait_for(|d| *d), if !going_away => {
                tracing::debug!(%peer, "HBONE connection draining: GOAWAY sent");
                h2.graceful_shutdown();
                going_away = true;
                continue;
            }
        };
        let Some(next) = next else { break };
        match next {
            Ok((req, respond)) => {
                tokio::spawn(stream(req, respond, conn.clone(), inbound.clone()));
            }
            Err(e) => {
                tracing::debug!(%peer, "HBONE connection ended: {e}");
                break;
            }
        }
    }
}

fn refuse_conn(inbound: &dyn Inbound, peer: SocketAddr, reason: RefusalReason, detail: &str) {
    tracing::info!(%peer, %reason, "HBONE connection refused: {detail}");
    inbound.refused(reason, None);
}

async fn stream(
    req: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn: Arc<ConnInfo>,
    inbound: Arc<dyn Inbound>,
) {
    let (parts, body) = req.into_parts();
    let request = match parse(&parts, conn.clone()) {
        Ok(r) => r,
        Err(refused) => return answer(&mut respond, &*inbound, &conn, refused, None),
    };
    if let Err(refused) = inbound.authorize(&request) {
        return answer(&mut respond, &*inbound, &conn, refused, Some(&request));
    }
    let upstream = match inbound.connect(&request).await {
        Ok(s) => s,
        Err(e) => {
            let refused = Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                RefusalReason::UpstreamRefused,
                format!("{}: {e}", request.target),
            );
            return answer(&mut respond, &*inbound, &conn, refused, Some(&request));
        }
    };
    let send = match respond.send_response(status(StatusCode::OK), false) {
        Ok(s) => s,
        Err(e) => return tracing::debug!(peer = %conn.peer_addr, "client went away before 200: {e}"),
    };
    let closed = inbound.opened(&request);
    let copied = match upstream {
        // `_` leaves a Held value in `upstream`, dropped when this function returns.
        Upstream::Tcp(tcp) | Upstream::Held(tcp, _) => {
            let (copied, err) = relay(tcp, send, body).await;
            if let Some(e) = err {
                tracing::debug!(peer = %conn.peer_addr, target = %request.target, "tunnel ended with error: {e}");
            }
            copied
        }
        Upstream::Serve(serve) => {
            serve(H2Stream::new(send, body)).await;
            Copied::default()
        }
    };
    closed(copied);
}

/// Reads one CONNECT: the target from `:authority` (must be `ip:port`), `for=` of `forwarded`,
/// a valid `traceparent`, the `baggage` as sent. Public for the fuzz target (fuzz/).
pub fn parse(parts: &http::request::Parts, conn: Arc<ConnInfo>) -> Result<InboundRequest, Refused> {
    if parts.method != Method::CONNECT {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            RefusalReason::BadRequest,
            format!("method {} is not CONNECT", parts.method),
        ));
    }
    let authority = parts.uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let target: SocketAddr = authority.parse().map_err(|_| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            RefusalReason::BadRequest,
            format!("authority {authority:?} is not ip:port"),
        )
    })?;
    let forwarded_for = parts
        .headers
        .get(FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("for=")))
        .map(|v| v.trim_matches('"').to_owned());
    let traceparent = parts
        .headers
        .get(crate::traceparent::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::TraceParent::parse);
    let baggage = parts
        .headers
        .get(BAGGAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(InboundRequest {
        conn,
        target,
        forwarded_for,
        traceparent,
        baggage,
    })
}

fn answer(
    respond: &mut SendResponse<Bytes>,
    inbound: &dyn Inbound,
    conn: &ConnInfo,
    refused: Refused,
    req: Option<&InboundRequest>,
) {
    tracing::info!(peer = %conn.peer_addr, peer_id = %conn.peer_id, status = refused.status.as_u16(), reason = %refused.reason,
        "HBONE stream refused: {}", refused.detail);
    inbound.refused(refused.reason, req);
    let _ = respond.send_response(status(refused.status), true);
}

fn status(code: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = code;
    r
}
