//! Opaque TCP: a stream addressed to `host:port` (or `VIP:port`) of a port declared as
//! non-HTTP (`discovery::is_opaque`; the HBONE listener hands such CONNECT streams
//! here) is first checked against the AuthorizationPolicies attached to the waypoint
//! and the Service, at L4; then routed by the VirtualService's `tcp` routes (first
//! route whose match blocks match, weighted split) or, without one, to the Service
//! itself; then spliced to one endpoint, both directions, each half-closed on its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mesh_common::authz::{Decision, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Proxy;
use super::admission::destination_service;
use super::server::PeerIdentity;
use crate::backend::outlier::Observation;
use crate::config::hosts::split_authority;
use crate::config::snapshot::Snapshot;
use crate::endpoint::balancer::PickContext;
use crate::route::DestinationRef;
use crate::route::l4_match::StreamInfo;

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("target `{0}` has no port")]
    NoPort(String),
    #[error("no route: host `{0}` is not a known Service and no VirtualService has a tcp route for it")]
    NoRoute(String),
    #[error("RBAC: access denied: {0}")]
    Denied(String),
    #[error("no healthy upstream: {0}")]
    Upstream(String),
    #[error("stream ended with an error: {0}")]
    Io(#[from] std::io::Error),
}

/// Who opened the stream and what it addressed.
pub struct TcpOrigin<'a> {
    /// `host:port` or `VIP:port` (the HBONE CONNECT target).
    pub target: &'a str,
    /// The client workload's address (route matches on source labels and subnets).
    pub peer: SocketAddr,
    /// The HBONE peer's identity; `None` on a plain listener.
    pub identity: Option<&'a PeerIdentity>,
}

impl Proxy {
    /// Admits, routes and splices one stream; returns bytes (client→upstream,
    /// upstream→client).
    pub async fn serve_tcp<S>(&self, mut client: S, origin: TcpOrigin<'_>) -> Result<(u64, u64), TcpError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let snap = self.config.load();
        let TcpOrigin { target, peer, identity } = origin;
        let (host, port) = split_authority(target);
        let port = port.ok_or_else(|| TcpError::NoPort(target.to_owned()))?;
        let fqdn = snap.request_host(host);
        let destination = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .ok()
            .or_else(|| snap.service(&fqdn).and_then(|s| s.cluster_ip));
        if let Err(e) = self.admit_stream(
            &snap,
            &fqdn,
            SocketAddr::new(destination.unwrap_or(Ipv4Addr::UNSPECIFIED.into()), port),
            peer,
            identity,
        ) {
            self.metrics.refused(mesh_hbone::RefusalReason::Authorization);
            tracing::info!(target: "mesh_waypoint::access", %peer, target, "tcp refused: {e}");
            return Err(e);
        }
        let source = snap.source(peer.ip());
        let stream = StreamInfo {
            port,
            destination,
            source: &source,
        };
        let routed = snap
            .table_for(&fqdn, &self.gateways)
            .and_then(|t| t.tcp.iter().find(|r| r.applies_to(&stream)))
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
        let hash_key = peer.ip().to_string();
        let cx = PickContext {
            hash_key: Some(&hash_key),
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
        // copy_bidirectional shuts each write side down when its read side ends: a
        // client's half-close reaches the server and the reply still flows back.
        Ok(tokio::io::copy_bidirectional(&mut client, &mut upstream).await?)
    }

    /// The AuthorizationPolicies the waypoint applies to the Service, evaluated at L4
    /// (no HTTP attributes): an ALLOW rule that needs HTTP never matches and a DENY
    /// rule matches on its L4 fields alone, so a stream is never let through by a
    /// rule the waypoint cannot check (fail closed). `source.ip` is the HBONE
    /// connection's address, as for HTTP requests.
    fn admit_stream(
        &self,
        snap: &Snapshot,
        fqdn: &str,
        local: SocketAddr,
        peer: SocketAddr,
        identity: Option<&PeerIdentity>,
    ) -> Result<(), TcpError> {
        let policies = crate::authz::policies_for(&snap.authz, self.config.scope(), destination_service(snap, fqdn));
        let request = Request {
            source_principal: identity.map(|i| &*i.principal),
            source_ip: Some(identity.map_or(peer.ip(), |i| i.conn_ip)),
            destination_ip: local.ip(),
            destination_port: local.port(),
            http: None,
        };
        match mesh_common::authz::evaluate(policies.iter().copied(), &request).decision {
            Decision::Allow => Ok(()),
            Decision::Deny(denial) => Err(TcpError::Denied(denial.to_string())),
        }
    }
}
