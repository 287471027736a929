//! Accept loop: HTTP/1.1 and h2 (prior knowledge) on one listener via hyper-util's
//! auto builder. Stops accepting when `shutdown` flips; open connections finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Proxy;

pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(local) = stream.local_addr() else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_io(stream, proxy.clone(), peer, local, None));
    }
}

/// What one downstream connection may hold of the waypoint's or gateway's HTTP
/// listeners; flags `--header-read-timeout-ms` and `--tls-handshake-timeout-ms`
/// (README.md, "Abusive peers"). Header sizes keep hyper's bounds: an HTTP/1.1 head
/// over ~400 KiB and an HTTP/2 header list over 16 KiB are refused; an HTTP/2
/// connection has at most 200 concurrent streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// An HTTP/1.1 request head not complete by then closes the connection (hyper's
    /// default applies only with a timer, which the server had not set: unbounded).
    pub header_read_timeout: Duration,
    /// An HTTPS listener's TLS handshake not complete by then closes the connection.
    pub tls_handshake_timeout: Duration,
}

impl HttpLimits {
    pub const DEFAULT: HttpLimits = HttpLimits {
        header_read_timeout: Duration::from_secs(10),
        tls_handshake_timeout: Duration::from_secs(10),
    };
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// hyper's auto (HTTP/1.1 + h2) connection builder with `limits` and a timer.
pub fn http_builder(limits: HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// The mutual-TLS peer of an HBONE stream, set by the HBONE listener only (plain
/// listeners have none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The client workload's SPIFFE id without `spiffe://`
    /// (`cluster.local/ns/bookinfo/sa/bookinfo-productpage`): Istio's `source.principal`.
    pub principal: Arc<str>,
    /// The address the HBONE connection came from (not the `forwarded: for=` it claims).
    pub conn_ip: std::net::IpAddr,
}

/// Serves one downstream byte stream (a socket, or an HBONE stream whose `local` is
/// the original destination and whose `identity` is the TLS peer's) until the client is done.
pub async fn serve_io<I>(io: I, proxy: Arc<Proxy>, peer: SocketAddr, local: SocketAddr, identity: Option<PeerIdentity>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let builder = http_builder(proxy.limits);
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        if let Some(id) = &identity {
            req.extensions_mut().insert(id.clone());
            // The application sees the waypoint as its peer: the client goes in XFF.
            crate::gateway::edge_headers::append_forwarded_for(req.headers_mut(), peer.ip());
        }
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, local).await) }
    });
    if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(io), service).await {
        tracing::debug!(%peer, "downstream connection ended: {e}");
    }
}
