//! Upstream over HBONE: each connection the backend pool asks for becomes one CONNECT
//! stream to the endpoint pod's 15008, presenting this waypoint's identity and
//! requiring the identity of the pod at that address.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};

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

    fn identity_of(&self, addr: SocketAddr) -> io::Result<SpiffeId> {
        let config = self
            .config
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| io::Error::other("waypoint configuration not bound to the HBONE connector"))?;
        let snap = config.load();
        let pod = snap.discovery.pods_by_ip.get(&addr.ip()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no ready pod is known at {}: its identity cannot be checked", addr.ip()),
            )
        })?;
        Ok(SpiffeId::new(&self.trust_domain, &pod.namespace, &pod.service_account))
    }
}

impl Connector for HboneConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let identity = self.identity_of(addr)?;
            let target = TunnelTarget {
                hbone_addr: SocketAddr::new(addr.ip(), HBONE_PORT),
                identity,
                authority: addr,
                forwarded_for: None,
            };
            let dial: Dial = Box::new(|a| Box::pin(tokio::net::TcpStream::connect(a)));
            let tunnel = self.client.open(&self.source, &target, dial).await.map_err(|e| {
                let kind = match e.reason() {
                    "connect_failed" | "upstream_unavailable" => io::ErrorKind::ConnectionRefused,
                    "handshake_timeout" => io::ErrorKind::TimedOut,
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, e)
            })?;
            Ok(Box::new(H2Stream::new(tunnel.send, tunnel.recv)) as Box<dyn Io>)
        })
    }
}
