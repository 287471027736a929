//! The waypoint in the mesh: HBONE in on 15008 ([`inbound`]), HBONE out to the chosen
//! endpoint's pod ([`connector`]), with the certificate this pod obtains from the mesh
//! CA by CSR ([`identity`]). Both directions use the `mesh-hbone` crate, as the node daemon does.

pub mod connector;
pub mod identity;
pub mod inbound;

/// Istio's HBONE port.
pub use mesh_common::abi::PORT_HBONE as HBONE_PORT;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_hbone::client::HboneClient;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Proxy;
use identity::{CaOptions, IdentityError, ProxyIdentity};

/// Knobs of the waypoint's HBONE side (flags of `mesh-waypoint run`).
#[derive(Clone, Debug)]
pub struct HboneOptions {
    /// The CA, this pod's identity and the certificate lifetime.
    pub ca: CaOptions,
    pub trust_domain: String,
    /// How long to wait at start for the CA to issue the certificate.
    pub cert_wait: Duration,
    pub handshake_timeout: Duration,
    /// Pooled upstream HBONE connections unused this long are closed.
    pub idle_timeout: Duration,
    /// What one peer may hold of the HBONE listener.
    pub limits: mesh_hbone::server::Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot listen for HBONE on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("HBONE TLS configuration: {0}")]
    Tls(#[from] mesh_hbone::tls::TlsError),
}

/// This proxy's identity and its upstream connector, ready before the configuration
/// is built (the configuration owns the connector).
pub struct HboneSide {
    pub identity: Arc<ProxyIdentity>,
    pub connector: Arc<connector::HboneConnector>,
    opts: HboneOptions,
}

impl HboneSide {
    pub async fn prepare(opts: HboneOptions) -> Result<Self, HboneError> {
        let identity = Arc::new(ProxyIdentity::obtain(opts.ca.clone(), opts.cert_wait).await?);
        tracing::info!(identity = %identity.cert.identity, ca = %opts.ca.client.address, "workload certificate issued by the CA");
        tokio::spawn(identity.clone().keep_fresh());
        let client = Arc::new(HboneClient::new(
            identity.roots.clone(),
            opts.handshake_timeout,
            opts.idle_timeout,
        ));
        tokio::spawn(client.clone().run_reaper());
        let connector = connector::HboneConnector::new(client, identity.cert.clone(), &opts.trust_domain);
        Ok(Self {
            identity,
            connector,
            opts,
        })
    }

    /// Serves HBONE on `addr` into `proxy` until `stop` flips; returns the bound address.
    pub async fn listen(
        &self,
        addr: SocketAddr,
        proxy: Arc<Proxy>,
        stop: watch::Receiver<bool>,
    ) -> Result<SocketAddr, HboneError> {
        self.connector.bind(&proxy.config);
        let tls = mesh_hbone::tls::server_config(
            self.identity.cert.resolver.clone(),
            self.identity.roots.clone(),
            &self.opts.trust_domain,
        )?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HboneError::Listen { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| HboneError::Listen { addr, source })?;
        let stats = Arc::new(inbound::InboundStats::default());
        let settings = mesh_hbone::server::ServerSettings {
            tls,
            handshake_timeout: self.opts.handshake_timeout,
            limits: self.opts.limits,
            handshakes: Arc::default(),
            drain: stop.clone(),
        };
        tokio::spawn(inbound::serve(listener, settings, proxy, stats, stop));
        tracing::info!(%bound, identity = %self.identity.cert.identity, "HBONE listening");
        Ok(bound)
    }
}
