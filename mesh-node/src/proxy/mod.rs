//! The mesh data path behind capture: [`MeshHandler`] implements the capture seam's
//! [`ConnectionHandler`]. Outbound connections are resolved ([`resolve`]) and tunneled
//! over HBONE from the source pod's netns with the source workload's certificate;
//! 15008 terminates HBONE for the pod ([`inbound`]); plaintext on 15006 obeys
//! PeerAuthentication.

pub mod args;
pub mod inbound;
pub mod metrics;
pub mod resolve;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::RootCertStore;
use tokio::net::TcpStream;

use crate::capture::handler::{BoxFuture, CapturedPod, ConnectionHandler, DirectHandler};
use crate::config::StateRx;
use crate::hbone::client::{Dial, HboneClient, TunnelTarget};
use crate::hbone::relay::relay;
use crate::hbone::server::{self, ServerSettings};
use crate::identity::{CertManager, LocalCa, ManagerConfig, NodeScopedCa};
use crate::policy::Mode;
use crate::policy::authz::{self, Connection};
use mesh_hbone::RefusalReason;
pub use metrics::TcpMetrics;
use metrics::{Direction, Reporter, Security, TcpLabels};
use resolve::{Resolver, Route, v4};

/// The handler capture hands connections to: the mesh, or plain forwarding with
/// `--data-path direct`.
pub fn select_handler(p: &crate::daemon::ProxyInputs) -> Result<Arc<dyn ConnectionHandler>, SetupError> {
    match p.args.mesh.data_path {
        args::DataPath::Mesh => handler(p),
        args::DataPath::Direct => Ok(Arc::new(DirectHandler)),
    }
}

/// Builds the mesh handler from the daemon's inputs: metrics on 15020 and the
/// `certificates` admin section are registered here.
pub fn handler(p: &crate::daemon::ProxyInputs) -> Result<Arc<dyn ConnectionHandler>, SetupError> {
    let a = &p.args;
    let settings = MeshSettings {
        node: a.node.clone(),
        trust_domain: a.trust_domain.clone(),
        ca_dir: a.mesh.ca_dir.clone().unwrap_or_else(|| default_ca_dir(&a.state_dir())),
        proxy_cert_dir: a.state_dir().join(PROXY_CERTS_DIR),
        cert_lifetime: Duration::from_secs(a.mesh.cert_lifetime_secs),
        cert_rotate_fraction: a.mesh.cert_rotate_fraction,
        handshake_timeout: Duration::from_millis(a.mesh.hbone_handshake_timeout_ms),
        idle_timeout: Duration::from_secs(a.mesh.hbone_idle_timeout_secs),
    };
    let metrics = TcpMetrics::default();
    p.metrics.register(|reg| metrics.register(reg));
    let mesh = MeshHandler::start(settings, p.state.clone(), metrics)?;
    let dump = mesh.clone();
    p.admin_sections.add("certificates", move || dump.certificates());
    Ok(Arc::new(SharedMeshHandler(mesh)))
}

/// Under the state directory: `<ns>/<pod>/{cert-chain,key,root-cert}.pem` for each
/// waypoint or gateway pod of this node (they run `--cert-dir` on it).
pub const PROXY_CERTS_DIR: &str = "proxy-certs";

/// Beside the node's state directory, so the node daemons of one local cluster (state
/// dirs `<cluster>/node-<name>`) share one CA without a flag.
fn default_ca_dir(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir
        .parent()
        .map_or_else(|| state_dir.join("ca"), |p| p.join("mesh-ca"))
}

/// Tunables from the command line.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    pub node: String,
    pub trust_domain: String,
    pub ca_dir: std::path::PathBuf,
    pub proxy_cert_dir: std::path::PathBuf,
    pub cert_lifetime: Duration,
    pub cert_rotate_fraction: f64,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

pub struct MeshHandler {
    state: StateRx,
    certs: Arc<CertManager>,
    client: Arc<HboneClient>,
    roots: Arc<RootCertStore>,
    resolver: Resolver,
    metrics: TcpMetrics,
    settings: MeshSettings,
    server_configs: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("identity: {0}")]
    Ca(#[from] crate::identity::CaError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl MeshHandler {
    /// Opens (or creates) the CA and starts the certificate manager and the pool reaper.
    pub fn start(settings: MeshSettings, state: StateRx, metrics: TcpMetrics) -> Result<Arc<Self>, SetupError> {
        let ca = Arc::new(LocalCa::load_or_create(&settings.ca_dir, &settings.trust_domain)?);
        let roots = crate::tls::root_store(&ca.root())?;
        let root_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca.root().to_vec()));
        let signer = Arc::new(NodeScopedCa::new(ca, state.clone()));
        let cfg = ManagerConfig {
            node: settings.node.clone(),
            lifetime: settings.cert_lifetime,
            rotate_fraction: settings.cert_rotate_fraction,
            proxy_cert_dir: Some(settings.proxy_cert_dir.clone()),
            root_pem,
        };
        let certs = Arc::new(CertManager::new(signer, cfg));
        tokio::spawn(certs.clone().run(state.clone()));
        let client = Arc::new(HboneClient::new(
            roots.clone(),
            settings.handshake_timeout,
            settings.idle_timeout,
        ));
        tokio::spawn(client.clone().run_reaper());
        Ok(Arc::new(Self {
            state,
            certs,
            client,
            roots,
            resolver: Resolver::default(),
            metrics,
            settings,
            server_configs: Mutex::new(HashMap::new()),
        }))
    }

    pub fn certificates(&self) -> serde_json::Value {
        self.certs.dump()
    }

    async fn outbound(self: Arc<Self>, pod: Arc<CapturedPod>, orig_dst: SocketAddrV4, stream: TcpStream) {
        let route = {
            let state = self.state.borrow();
            self.resolver.resolve(&state, orig_dst)
        };
        match route {
            Route::Direct(dst) => DirectHandler.outbound(pod, dst, stream).await,
            Route::Refuse(reason) => {
                tracing::info!(pod = %pod.workload.key(), dst = %orig_dst, %reason, "outbound connection refused");
                self.metrics.refused(Direction::outbound, reason);
                reset(stream);
            }
            Route::Tunnel {
                hbone,
                identity,
                authority,
                workload,
                service,
            } => {
                let source = match self.certs.get(&pod.workload) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(pod = %pod.workload.key(), "no certificate for outbound: {e}");
                        self.metrics.refused(Direction::outbound, RefusalReason::NoCertificate);
                        return reset(stream);
                    }
                };
                let target = TunnelTarget {
                    hbone_addr: v4(hbone),
                    identity,
                    authority: v4(authority),
                    forwarded_for: Some(IpAddr::V4(pod.workload.ip)),
                };
                match self.client.open(&source, &target, dial_from(&pod)).await {
                    Ok(tunnel) => {
                        let labels = TcpLabels::new(Reporter::source, Security::mutual_tls)
                            .source(Some(&pod.workload), None)
                            .destination(Some(&workload), service);
                        self.metrics.opened(&labels);
                        let (copied, err) = relay(stream, tunnel.send, tunnel.recv).await;
                        if let Some(e) = err {
                            tracing::debug!(pod = %pod.workload.key(), dst = %orig_dst, "tunnel ended with error: {e}");
                        }
                        self.metrics.closed(&labels, copied.sent, copied.received);
                    }
                    Err(e) => {
                        tracing::info!(pod = %pod.workload.key(), dst = %orig_dst, via = %hbone, "HBONE tunnel failed: {e}");
                        self.metrics.refused(Direction::outbound, e.reason());
                        reset(stream);
                    }
                }
            }
        }
    }

    /// Plaintext on 15006: PeerAuthentication STRICT refuses it, then AuthorizationPolicy
    /// decides as for a peer without a principal.
    fn plaintext_refusal(&self, pod: &CapturedPod, orig_dst: SocketAddrV4, peer: SocketAddr) -> Option<RefusalReason> {
        let state = self.state.borrow();
        if state.peer_authn.mode(&pod.workload, orig_dst.port()) == Mode::Strict {
            tracing::info!(pod = %pod.workload.key(), %peer, dst = %orig_dst, "plaintext refused: PeerAuthentication STRICT");
            return Some(RefusalReason::StrictMtls);
        }
        let workload = state.workload(pod.workload.ip).unwrap_or(&pod.workload);
        let conn = Connection {
            principal: None,
            source_ip: peer.ip(),
            destination: orig_dst,
        };
        let eval = authz::evaluate(&state, workload, conn);
        (!authz::allowed(&eval, workload, conn)).then_some(RefusalReason::Authorization)
    }

    fn server_settings(&self, pod: &CapturedPod) -> Option<ServerSettings> {
        let cert = match self.certs.get(&pod.workload) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pod = %pod.workload.key(), "no certificate to serve HBONE: {e}");
                return None;
            }
        };
        let key = pod.workload.key();
        let mut configs = self.server_configs.lock().unwrap_or_else(|p| p.into_inner());
        let tls = match configs.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c =
                    crate::tls::server_config(cert.resolver.clone(), self.roots.clone(), &self.settings.trust_domain)
                        .ok()?;
                configs.insert(key, c.clone());
                c
            }
        };
        Some(ServerSettings {
            tls,
            handshake_timeout: self.settings.handshake_timeout,
        })
    }
}

/// The handler runs on many futures; it is shared behind an Arc.
pub struct SharedMeshHandler(pub Arc<MeshHandler>);

impl ConnectionHandler for SharedMeshHandler {
    fn outbound(&self, pod: Arc<CapturedPod>, orig_dst: SocketAddrV4, stream: TcpStream) -> BoxFuture<'static, ()> {
        Box::pin(self.0.clone().outbound(pod, orig_dst, stream))
    }

    fn inbound_plaintext(
        &self,
        pod: Arc<CapturedPod>,
        orig_dst: SocketAddrV4,
        peer: SocketAddr,
        stream: TcpStream,
    ) -> BoxFuture<'static, ()> {
        if let Some(reason) = self.0.plaintext_refusal(&pod, orig_dst, peer) {
            self.0.metrics.refused(Direction::plaintext, reason);
            reset(stream);
            return Box::pin(async {});
        }
        DirectHandler.inbound_plaintext(pod, orig_dst, peer, stream)
    }

    fn hbone(&self, pod: Arc<CapturedPod>, peer: SocketAddr, stream: TcpStream) -> BoxFuture<'static, ()> {
        let Some(settings) = self.0.server_settings(&pod) else {
            self.0.metrics.refused(Direction::inbound, RefusalReason::NoCertificate);
            return Box::pin(async {});
        };
        let inbound = Arc::new(inbound::PodInbound::new(
            pod,
            self.0.state.clone(),
            self.0.metrics.clone(),
        ));
        Box::pin(server::serve(settings, stream, peer, inbound))
    }
}

/// Upstream sockets are made in the source pod's netns, so the pod IP is the source on the wire.
fn dial_from(pod: &Arc<CapturedPod>) -> Dial {
    let pod = pod.clone();
    Box::new(move |addr| {
        Box::pin(async move {
            let sock = pod.netns.tcp_socket().await?;
            sock.set_nodelay(true)?;
            sock.connect(addr).await
        })
    })
}

/// Linger 0 turns the close into a RST, so the client sees a failure, not a clean EOF.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
