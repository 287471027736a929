//! The mesh data path behind capture: [`MeshHandler`] implements the capture seam's
//! [`ConnectionHandler`]. Outbound connections are resolved ([`resolve`]) and tunneled
//! over HBONE from the source pod's netns with the source workload's certificate;
//! 15008 terminates HBONE for the pod ([`inbound`]); plaintext on 15006 obeys
//! PeerAuthentication.

pub mod args;
pub mod inbound;
pub mod metrics;
pub mod passthrough;
pub mod peers;
pub mod resolve;
pub mod telemetry;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::RootCertStore;
use tokio::net::TcpStream;

use crate::capture::handler::{
    BoxFuture, CapturedPod, ConnectionHandler, DirectHandler, connect_from, connect_to_app, is_steering_loop, reject,
    relay as relay_plain,
};
use crate::config::StateRx;
use crate::hbone::client::{Dial, HboneClient, TunnelTarget};
use crate::hbone::relay::relay;
use crate::hbone::server::{self, ServerSettings};
use crate::identity::manager::CertMetrics;
use crate::identity::source::RemoteCa;
use crate::identity::{CertManager, ManagerConfig};
use crate::policy::Mode;
use crate::policy::authz::{self, Connection};
use crate::state::ServiceEntry;
use mesh_common::telemetry::{Peer, ServiceLabels};
use mesh_hbone::RefusalReason;
use mesh_hbone::ca::Backoff;
use mesh_hbone::ca::{CaClient, CaClientConfig};
pub use metrics::TcpMetrics;
use metrics::{Direction, PassthroughReason, Reporter, Security};
use resolve::{Resolver, Route, v4};
use telemetry::{Conn, Telemetry};

/// The handler capture hands connections to: the mesh, or plain forwarding with
/// `--data-path direct`.
pub fn select_handler(p: &crate::daemon::ProxyInputs) -> Result<Arc<dyn ConnectionHandler>, SetupError> {
    match p.args.mesh.data_path {
        args::DataPath::Mesh => handler(p),
        args::DataPath::Direct => Ok(Arc::new(DirectHandler)),
    }
}

/// Builds the mesh handler from the daemon's inputs: metrics on 15020, the
/// `certificates` readiness condition and admin section are registered here.
pub fn handler(p: &crate::daemon::ProxyInputs) -> Result<Arc<dyn ConnectionHandler>, SetupError> {
    let a = &p.args;
    let m = &a.mesh;
    let (Some(address), Some(root_path), Some(token_file)) = (&m.ca_address, &m.ca_root_cert, &m.ca_token_file) else {
        return Err(SetupError::NoCa);
    };
    let root_pem = std::fs::read_to_string(root_path).map_err(|source| SetupError::Root {
        path: root_path.clone(),
        source,
    })?;
    let settings = MeshSettings {
        trust_domain: a.trust_domain.clone(),
        ca: CaClientConfig {
            address: address.clone(),
            server_name: m.ca_server_name.clone(),
            root_pem,
            token_file: token_file.clone(),
            cluster_id: m.cluster_id.clone(),
            timeout: Duration::from_millis(m.ca_timeout_ms),
        },
        cert_lifetime: Duration::from_secs(m.cert_lifetime_secs),
        cert_rotate_fraction: m.cert_rotate_fraction,
        backoff: Backoff {
            min: Duration::from_millis(m.ca_backoff_min_ms),
            max: Duration::from_millis(m.ca_backoff_max_ms.max(m.ca_backoff_min_ms)),
        },
        handshake_timeout: Duration::from_millis(m.hbone_handshake_timeout_ms),
        hbone_limits: m.hbone_limits.limits(),
        idle_timeout: Duration::from_secs(m.hbone_idle_timeout_secs),
        cluster_cidrs: a.mesh.cluster_cidrs.clone(),
        unknown_destination_wait: Duration::from_millis(a.mesh.unknown_destination_wait_ms),
        access_log: a.mesh.access_log_format,
        drain: p.drain.signal(),
    };
    if a.kubernetes && a.mesh.cluster_cidrs.is_empty() {
        tracing::warn!(
            "Kubernetes mode without --cluster-cidrs: a connection to a pod the mesh view does not know yet \
             leaves as plain TCP without waiting (counted in mesh_outbound_passthrough_total)"
        );
    }
    let metrics = TcpMetrics::default();
    p.metrics.register(|reg| metrics.register(reg));
    let cert_metrics = CertMetrics::default();
    p.metrics.register(|reg| cert_metrics.register(reg));
    p.readiness.set(
        "certificates",
        crate::readiness::Condition::Pending("no certificate requested yet".into()),
    );
    let mesh = MeshHandler::start(settings, p.state.clone(), metrics, cert_metrics, p.readiness.clone())?;
    let dump = mesh.clone();
    p.admin_sections.add("certificates", move || dump.certificates());
    Ok(Arc::new(SharedMeshHandler(mesh)))
}

/// Tunables from the command line.
#[derive(Clone, Debug)]
pub struct MeshSettings {
    pub trust_domain: String,
    pub ca: CaClientConfig,
    pub cert_lifetime: Duration,
    pub cert_rotate_fraction: f64,
    pub backoff: Backoff,
    pub handshake_timeout: Duration,
    /// What one peer may hold of a pod's 15008.
    pub hbone_limits: mesh_hbone::server::Limits,
    pub idle_timeout: Duration,
    /// Pod and Service CIDRs: an unknown destination there waits for the view.
    pub cluster_cidrs: Vec<crate::cli::Cidr>,
    pub unknown_destination_wait: Duration,
    /// One line per connection (`--access-log-format`).
    pub access_log: mesh_common::telemetry::access_log::AccessLogFormat,
    /// Flips on hand-over: the pods' HBONE connections send GOAWAY and finish.
    pub drain: tokio::sync::watch::Receiver<bool>,
}

/// One pod's 15008: its TLS config and its connections in set-up per peer IP.
type PodServer = (Arc<rustls::ServerConfig>, Arc<server::Handshakes>);

pub struct MeshHandler {
    state: StateRx,
    certs: Arc<CertManager>,
    client: Arc<HboneClient>,
    roots: Arc<RootCertStore>,
    resolver: Resolver,
    telemetry: Telemetry,
    passthrough: passthrough::Passthrough,
    settings: MeshSettings,
    /// Per pod: its 15008's TLS config, and the connections in set-up there per peer IP.
    server_configs: Mutex<HashMap<String, PodServer>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "--data-path mesh needs the mesh CA: pass --ca-address, --ca-root-cert and --ca-token-file (the node holds no CA key)"
    )]
    NoCa,
    #[error("cannot read the mesh root certificate {path}: {source}")]
    Root {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("CA client: {0}")]
    Ca(#[from] mesh_hbone::ca::CaClientError),
}

impl MeshHandler {
    /// Starts the certificate manager (certificates from the CA) and the pool reaper.
    pub fn start(
        settings: MeshSettings,
        state: StateRx,
        metrics: TcpMetrics,
        cert_metrics: CertMetrics,
        readiness: crate::readiness::Readiness,
    ) -> Result<Arc<Self>, SetupError> {
        let client = CaClient::new(settings.ca.clone())?;
        let roots = client.roots();
        let source = Arc::new(RemoteCa {
            client,
            lifetime: settings.cert_lifetime,
        });
        let cfg = ManagerConfig {
            lifetime: settings.cert_lifetime,
            rotate_fraction: settings.cert_rotate_fraction,
            backoff: settings.backoff,
        };
        let certs = Arc::new(CertManager::new(source, cfg, cert_metrics));
        tokio::spawn(certs.clone().run(state.clone(), readiness));
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
            passthrough: passthrough::Passthrough::new(metrics.clone()),
            telemetry: Telemetry {
                metrics,
                access_log: settings.access_log,
            },
            settings,
            server_configs: Mutex::new(HashMap::new()),
        }))
    }

    pub fn certificates(&self) -> serde_json::Value {
        self.certs.dump()
    }

    /// The route for `dst`. An address inside the cluster CIDRs that the view does not
    /// know yet waits (bounded) for the next views: the pod may have just been created.
    async fn route(&self, dst: SocketAddrV4) -> Route {
        let mut state = self.state.clone();
        let in_cluster = self.settings.cluster_cidrs.iter().any(|c| c.contains(*dst.ip()));
        let deadline = tokio::time::Instant::now() + self.settings.unknown_destination_wait;
        loop {
            let route = self.resolver.resolve(&state.borrow_and_update(), dst);
            if let Some(route) = route {
                return route;
            }
            if self.settings.cluster_cidrs.is_empty() {
                return Route::Passthrough(dst, PassthroughReason::unknown_no_cluster_cidrs, None);
            }
            if !in_cluster {
                return Route::Passthrough(dst, PassthroughReason::outside_cluster, None);
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Route::Passthrough(dst, PassthroughReason::unknown_in_cluster, None),
            }
        }
    }

    async fn outbound(self: Arc<Self>, pod: Arc<CapturedPod>, orig_dst: SocketAddrV4, stream: TcpStream) {
        let downstream = stream
            .peer_addr()
            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(pod.workload.ip, 0)));
        let route = self.route(orig_dst).await;
        let conn = |upstream: SocketAddrV4, security, destination, service: Option<&Arc<ServiceEntry>>| Conn {
            reporter: Reporter::source,
            security,
            source: self.local_source(&pod),
            destination,
            service: service.map_or_else(ServiceLabels::unknown, |s| ServiceLabels::of(s)),
            downstream,
            requested: v4(orig_dst),
            upstream: v4(upstream),
        };
        match route {
            Route::Passthrough(dst, reason, service) => {
                self.passthrough.record(&pod, dst, reason);
                let destination = peers::remote(&self.state.borrow(), IpAddr::V4(*dst.ip()));
                let c = conn(dst, Security::none, destination, service.as_ref());
                let upstream = connect_from(&pod.netns, dst).await;
                self.forward_plaintext(stream, upstream, &pod, dst, c).await;
            }
            Route::Refuse(reason) => {
                tracing::info!(pod = %pod.workload.key(), dst = %orig_dst, %reason, "outbound connection refused");
                self.telemetry.metrics.refused(Direction::outbound, reason);
                let c = conn(orig_dst, Security::mutual_tls, Peer::unknown(), None);
                self.telemetry.failed(c, reason);
                reset(stream);
            }
            Route::Tunnel {
                hbone,
                identity,
                authority,
                workload,
                service,
            } => {
                let c = conn(
                    hbone,
                    Security::mutual_tls,
                    Peer::of_workload(&workload),
                    service.as_ref(),
                );
                let target = TunnelTarget {
                    hbone_addr: v4(hbone),
                    identity,
                    authority: v4(authority),
                    forwarded_for: Some(IpAddr::V4(pod.workload.ip)),
                    // One trace context per connection on CONNECT, and the source's
                    // metadata as baggage, as ztunnel sends them.
                    traceparent: Some(mesh_hbone::TraceParent::random()),
                    baggage: Some(self.source_baggage(&pod)),
                };
                self.tunnel(stream, &pod, target, c).await;
            }
        }
    }

    /// The source pod's labels from the current view (they may have changed since it
    /// was enrolled).
    fn local_source(&self, pod: &CapturedPod) -> Peer {
        let state = self.state.borrow();
        Peer::of_workload(state.workload(pod.workload.ip).unwrap_or(&pod.workload))
    }

    fn source_baggage(&self, pod: &CapturedPod) -> String {
        let state = self.state.borrow();
        let w = state.workload(pod.workload.ip).unwrap_or(&pod.workload);
        mesh_common::telemetry::baggage(w, &self.settings.ca.cluster_id)
    }

    async fn tunnel(&self, stream: TcpStream, pod: &Arc<CapturedPod>, target: TunnelTarget, c: Conn) {
        let key = pod.workload.key();
        let source = match self.certs.obtain(&pod.workload).await {
            Ok(cert) => cert,
            Err(e) => {
                tracing::warn!(pod = %key, dst = %target.authority, "outbound refused: {e}");
                self.telemetry.metrics.refused(Direction::outbound, e.reason());
                self.telemetry.failed(c, e.reason());
                return reset(stream);
            }
        };
        let traceparent = target.traceparent;
        match self.client.open(&source, &target, dial_from(pod)).await {
            Ok(tunnel) => {
                let open = self.telemetry.open(c);
                let (copied, err) = relay(stream, tunnel.send, tunnel.recv).await;
                if let Some(e) = err {
                    tracing::debug!(pod = %key, dst = %target.authority, ?traceparent, "tunnel ended with error: {e}");
                }
                open.close(copied.sent, copied.received);
            }
            Err(e) => {
                tracing::info!(pod = %key, dst = %target.authority, via = %target.hbone_addr, ?traceparent, "HBONE tunnel failed: {e}");
                self.telemetry.metrics.refused(Direction::outbound, e.reason());
                self.telemetry.failed(c, e.reason());
                reset(stream);
            }
        }
    }

    /// Plain TCP between `stream` and the connected `upstream` (passthrough, or
    /// PERMISSIVE plaintext to the pod's app), counted as `none`.
    async fn forward_plaintext(
        &self,
        stream: TcpStream,
        upstream: std::io::Result<TcpStream>,
        pod: &CapturedPod,
        dst: SocketAddrV4,
        c: Conn,
    ) {
        let upstream = match upstream {
            Ok(up) => up,
            Err(e) => {
                self.telemetry.failed(c, RefusalReason::ConnectFailed);
                return reject(stream, &pod.workload.key(), dst, &e).await;
            }
        };
        let open = self.telemetry.open(c);
        let copied = relay_plain(stream, upstream, &pod.workload.key(), dst).await;
        open.close(copied.sent, copied.received);
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

    /// PERMISSIVE plaintext arriving at a local pod: reported by the destination, `none`.
    fn plaintext_conn(&self, pod: &CapturedPod, orig_dst: SocketAddrV4, peer: SocketAddr) -> Conn {
        let state = self.state.borrow();
        let (destination, service) = peers::local_destination(&state, &pod.workload, orig_dst.port());
        Conn {
            reporter: Reporter::destination,
            security: Security::none,
            source: peers::plaintext_source(&state, peer),
            destination,
            service,
            downstream: peer,
            requested: v4(orig_dst),
            upstream: v4(orig_dst),
        }
    }

    /// TLS settings for the pod's 15008, or the refusal reason when it has no valid certificate.
    async fn server_settings(&self, pod: &CapturedPod) -> Result<ServerSettings, RefusalReason> {
        let cert = match self.certs.obtain(&pod.workload).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pod = %pod.workload.key(), "inbound HBONE refused: {e}");
                return Err(e.reason());
            }
        };
        let key = pod.workload.key();
        let mut configs = self.server_configs.lock().unwrap_or_else(|p| p.into_inner());
        let (tls, handshakes) = match configs.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c =
                    crate::tls::server_config(cert.resolver.clone(), self.roots.clone(), &self.settings.trust_domain)
                        .map_err(|_| RefusalReason::Config)?;
                let entry = (c, Arc::default());
                configs.insert(key, entry.clone());
                entry
            }
        };
        Ok(ServerSettings {
            tls,
            handshake_timeout: self.settings.handshake_timeout,
            limits: self.settings.hbone_limits,
            handshakes,
            drain: self.settings.drain.clone(),
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
        let mesh = self.0.clone();
        Box::pin(async move {
            let c = mesh.plaintext_conn(&pod, orig_dst, peer);
            if let Some(reason) = mesh.plaintext_refusal(&pod, orig_dst, peer) {
                mesh.telemetry.metrics.refused(Direction::plaintext, reason);
                mesh.telemetry.failed(c, reason);
                return reset(stream);
            }
            if is_steering_loop(&pod, peer, orig_dst) {
                return;
            }
            let (upstream, _registered) = match connect_to_app(&pod, peer.ip(), orig_dst).await {
                Ok((up, registered)) => (Ok(up), registered),
                Err(e) => (Err(e), None),
            };
            mesh.forward_plaintext(stream, upstream, &pod, orig_dst, c).await;
        })
    }

    fn hbone(&self, pod: Arc<CapturedPod>, peer: SocketAddr, stream: TcpStream) -> BoxFuture<'static, ()> {
        let mesh = self.0.clone();
        Box::pin(async move {
            let settings = match mesh.server_settings(&pod).await {
                Ok(s) => s,
                Err(reason) => {
                    // Fail closed: no certificate, no TLS, no plaintext either.
                    mesh.telemetry.metrics.refused(Direction::inbound, reason);
                    return reset(stream);
                }
            };
            let inbound = Arc::new(inbound::PodInbound::new(
                pod,
                mesh.state.clone(),
                mesh.telemetry.clone(),
            ));
            server::serve(settings, stream, peer, inbound).await
        })
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
