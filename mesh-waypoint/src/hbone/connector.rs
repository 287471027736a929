//! Upstream over HBONE: each connection the backend pool asks for becomes one CONNECT
//! stream to the endpoint pod's 15008, presenting this waypoint's identity and
//! requiring the identity of the pod at that address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};

use mesh_hbone::RefusalReason;
use mesh_hbone::SpiffeId;
use mesh_hbone::client::{Dial, HboneClient, TunnelTarget};
use mesh_hbone::stream::H2Stream;

use super::HBONE_PORT;
use crate::config::Config;
use crate::endpoint::connector::{ConnectFuture, Connector, Io};

pub struct HboneConnector {
    client: Arc<HboneClient>,
    source: Arc<mesh_hbone::WorkloadCert>,
    trust_domain: String,
    /// Endpoint identities come from the live configuration (pods and their service
    /// accounts); set once the configuration exists, which itself holds the connector.
    config: OnceLock<Weak<Config>>,
}

impl HboneConnector {
    pub fn new(client: Arc<HboneClient>, source: Arc<mesh_hbone::WorkloadCert>, trust_domain: &str) -> Arc<Self> {
        Arc::new(Self {
            client,
            source,
            trust_domain: trust_domain.to_owned(),
            config: OnceLock::new(),
        })
    }

    pub fn bind(&self, config: &Arc<Config>) {
        let _ = self.config.set(Arc::downgrade(config));
    }

    /// Where a connection to `addr` goes: the pod at `addr`, or for a Service VIP (an
    /// `ingress-use-waypoint` backend) the Service's waypoint, asked for `addr`.
    fn target_of(&self, addr: SocketAddr) -> io::Result<TunnelTarget> {
        let config = self
            .config
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| io::Error::other("waypoint configuration not bound to the HBONE connector"))?;
        let snap = config.load();
        let (pod, hbone_ip) = match snap.discovery.pods_by_ip.get(&addr.ip()) {
            Some(pod) => (pod, addr.ip()),
            None => {
                let pod = waypoint_pod(&snap, addr).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no ready pod is known at {}: its identity cannot be checked", addr.ip()),
                    )
                })?;
                (pod, IpAddr::V4(pod.ip))
            }
        };
        Ok(TunnelTarget {
            hbone_addr: SocketAddr::new(hbone_ip, HBONE_PORT),
            identity: SpiffeId::new(&self.trust_domain, &pod.namespace, &pod.service_account),
            authority: addr,
            forwarded_for: None,
            traceparent: None,
            baggage: None,
        })
    }
}

/// A ready pod of the waypoint of the Service whose VIP is `addr`.
fn waypoint_pod(snap: &crate::config::Snapshot, addr: SocketAddr) -> Option<&crate::discovery::PodInfo> {
    let fqdn = snap.discovery.by_cluster_ip.get(&addr.ip())?;
    let svc = snap.service(fqdn)?;
    let waypoint = svc.waypoint.as_ref()?;
    let wp = snap.service(&crate::config::hosts::service_fqdn(waypoint, &svc.namespace))?;
    wp.pods.first()
}

impl Connector for HboneConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let target = self.target_of(addr)?;
            let dial: Dial = Box::new(|a| Box::pin(tokio::net::TcpStream::connect(a)));
            let tunnel = self.client.open(&self.source, &target, dial).await.map_err(|e| {
                let kind = match e.reason() {
                    RefusalReason::ConnectFailed | RefusalReason::UpstreamUnavailable => {
                        io::ErrorKind::ConnectionRefused
                    }
                    RefusalReason::HandshakeTimeout => io::ErrorKind::TimedOut,
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, e)
            })?;
            Ok(Box::new(H2Stream::new(tunnel.send, tunnel.recv)) as Box<dyn Io>)
        })
    }
}
