//! Accept loop: HTTP/1.1 and h2 (prior knowledge) on one listener via hyper-util's
//! auto builder. Stops accepting when `shutdown` flips; open connections finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
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
    let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let proxy = proxy.clone();
        if let Some(id) = &identity {
            req.extensions_mut().insert(id.clone());
        }
        async move { Ok::<_, Infallible>(proxy.handle(req, peer, local).await) }
    });
    if let Err(e) = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, "downstream connection ended: {e}");
    }
}
