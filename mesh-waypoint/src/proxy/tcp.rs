//! Opaque TCP: a stream addressed to `host:port` (or `VIP:port`) is routed by the
//! VirtualService's `tcp` routes (first route whose ports match, weighted split) or,
//! without one, to the Service itself; then spliced to one endpoint. The HBONE server
//! will hand non-HTTP CONNECT streams here.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use super::Proxy;
use crate::backend::outlier::Observation;
use crate::config::hosts::split_authority;
use crate::endpoint::balancer::PickContext;
use crate::route::DestinationRef;

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("target `{0}` has no port")]
    NoPort(String),
    #[error("no route: host `{0}` is not a known Service and no VirtualService has a tcp route for it")]
    NoRoute(String),
    #[error("no healthy upstream: {0}")]
    Upstream(String),
    #[error("stream ended with an error: {0}")]
    Io(#[from] std::io::Error),
}

impl Proxy {
    /// Routes and splices one stream; returns bytes (client→upstream, upstream→client).
    pub async fn serve_tcp<S>(&self, mut client: S, target: &str, peer: SocketAddr) -> Result<(u64, u64), TcpError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let snap = self.config.load();
        let (host, port) = split_authority(target);
        let port = port.ok_or_else(|| TcpError::NoPort(target.to_owned()))?;
        let fqdn = snap.request_host(host);
        let routed = snap
            .table_for(&fqdn, &self.gateways)
            .and_then(|t| t.tcp.iter().find(|r| r.applies_to(port)))
            .and_then(|r| r.split.pick().map(|d| d.destination.clone()));
        let dest = match routed {
            Some(d) => d,
            None if snap.service(&fqdn).is_some() => DestinationRef {
                host: fqdn.clone(),
                subset: None,
                port: None,
            },
            None => return Err(TcpError::NoRoute(fqdn)),
        };
        let backend = snap
            .backend(&dest, port)
            .map_err(|e| TcpError::Upstream(e.to_string()))?;
        let source = peer.ip().to_string();
        let cx = PickContext {
            hash_key: Some(&source),
            original_dst: target.parse().ok(),
            avoid: &[],
        };
        let ep = backend.pick(&cx).map_err(|e| TcpError::Upstream(e.to_string()))?;
        let (mut upstream, _permit) = match backend.pool.connect_stream(ep.addr).await {
            Ok(c) => c,
            Err(e) => {
                backend.observe(&ep, Observation::LocalFailure);
                return Err(TcpError::Upstream(format!("{e} ({})", ep.addr)));
            }
        };
        tracing::info!(target: "mesh_waypoint::access", %peer, target, backend = %backend.key, endpoint = %ep.addr, "tcp");
        Ok(tokio::io::copy_bidirectional(&mut client, &mut upstream).await?)
    }
}
