//! Ingress gateway mode (`mesh-waypoint run --mode gateway`), as Istio's ingress
//! gateway behaves: the `Gateway` objects whose `spec.selector` matches this pod's
//! labels decide which ports it listens on (HTTP, and HTTPS with `tls.mode: SIMPLE`
//! and a certificate from a `kubernetes.io/tls` Secret), which hosts each port
//! accepts ([`server_host`]) and which VirtualServices apply ([`routing`]). The
//! request path after routing — fault, retries, DestinationRule, load balancing,
//! the [`Connector`] to endpoints — is the waypoint's, unchanged.
//!
//! [`plan`] compiles the Gateways (and their Secrets, [`secret`]) into one immutable
//! plan per configuration snapshot; [`listeners`] binds and unbinds ports to follow it.

pub mod edge_headers;
pub mod identity;
pub mod listeners;
pub mod plan;
pub mod routing;
pub mod secret;
pub mod server_host;
pub mod tls;
pub mod via_waypoint;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_common::model::Resource;
use tokio::sync::watch;

pub use identity::GatewayIdentity;
pub use listeners::ListenerStatus;
pub use plan::Plan;

use crate::config::feed::DirFeed;
use crate::config::{Config, Snapshot};
use crate::endpoint::connector::{Connector, PlainTcp};
use crate::proxy::Proxy;
use crate::{Options, StartError};

/// Gateway-mode inputs on top of [`Options`] (whose `namespace` is the gateway
/// workload's namespace and whose `listen` is unused).
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The gateway pod's labels (`--pod-labels istio=ingressgateway`).
    pub pod_labels: BTreeMap<String, String>,
    /// Address every Gateway port is bound on (`--bind-ip`, default 0.0.0.0).
    pub bind_ip: IpAddr,
}

impl GatewayOptions {
    pub fn new(pod_labels: &[(&str, &str)]) -> Self {
        Self {
            pod_labels: pod_labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            bind_ip: IpAddr::from([0, 0, 0, 0]),
        }
    }
}

/// What the configuration keeps for gateway mode: who we are, and how the listeners fare.
#[derive(Debug, Default)]
pub struct GatewayState {
    pub identity: GatewayIdentity,
    pub listeners: listeners::StatusMap,
}

/// Adds the gateway plan to a freshly built snapshot; its problems join `rejected`.
pub(crate) fn attach(snap: &mut Snapshot, resources: &[Resource], identity: &GatewayIdentity, prev: Option<&Plan>) {
    let plan = plan::build(resources, &snap.rejected, identity, prev);
    for e in &plan.errors {
        tracing::warn!("rejected: {e}");
    }
    snap.rejected.extend(plan.errors.iter().cloned());
    snap.gateway = Some(Arc::new(plan));
    via_waypoint::reroute(snap);
}

/// A running ingress gateway. Dropping it closes every listener; open connections
/// finish their in-flight requests.
pub struct IngressGateway {
    pub config: Arc<Config>,
    pub proxy: Arc<Proxy>,
    pub admin_addr: Option<SocketAddr>,
    status: listeners::StatusMap,
    /// Local mode's configuration directory, polled until the gateway is dropped.
    dir_feed: Option<DirFeed>,
    shutdown: watch::Sender<bool>,
}

impl IngressGateway {
    pub async fn start(opts: Options, gateway: GatewayOptions) -> Result<Self, StartError> {
        Self::start_with(opts, gateway, Arc::new(PlainTcp)).await
    }

    /// Like [`IngressGateway::start`] with the upstream [`Connector`] (HBONE in the mesh).
    pub async fn start_with(
        opts: Options,
        gateway: GatewayOptions,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, StartError> {
        if gateway.pod_labels.is_empty() {
            tracing::warn!("no --pod-labels given: only Gateways with an empty selector apply to this gateway");
        }
        let identity = GatewayIdentity {
            namespace: opts.namespace.clone(),
            labels: gateway.pod_labels,
        };
        let config = Config::for_gateway(identity, &opts.root_namespace, connector);
        let dir_feed = opts
            .config_dir
            .as_deref()
            .map(|dir| DirFeed::start(dir, opts.poll_interval, config.clone()))
            .transpose()?;
        let status = config.gateway_state().map(|g| g.listeners.clone()).unwrap_or_default();
        let (shutdown, rx) = watch::channel(false);
        let proxy = Arc::new(Proxy {
            config: config.clone(),
            gateways: Vec::new(),
            metrics: Arc::new(opts.build_metrics(crate::metrics::Reporter::source)),
            access_log: opts.access_log,
            tracer: crate::trace::start(opts.otlp.as_ref())?,
            series: Default::default(),
            limits: opts.http_limits,
        });
        tokio::spawn(listeners::run(
            gateway.bind_ip,
            config.clone(),
            proxy.clone(),
            status.clone(),
            rx.clone(),
        ));
        let admin_addr = match opts.admin {
            Some(a) => Some(
                crate::admin::spawn(
                    a,
                    config.clone(),
                    proxy.metrics.clone(),
                    opts.identity.clone(),
                    rx.clone(),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(a) = opts.stats {
            crate::admin::spawn_stats(a, proxy.metrics.clone(), rx.clone()).await?;
        }
        crate::spawn_jwks_refresher(&config, opts.jwks_refresh, rx);
        tracing::info!(bind_ip = %gateway.bind_ip, namespace = opts.namespace, "ingress gateway started");
        Ok(Self {
            config,
            proxy,
            admin_addr,
            status,
            dir_feed,
            shutdown,
        })
    }

    /// Reads the configuration directory now (tests; the poller does it every
    /// `poll_interval`). True if anything changed.
    pub fn reload_config(&self) -> Result<bool, mesh_common::model::ConfigError> {
        self.dir_feed.as_ref().map_or(Ok(false), DirFeed::reload)
    }

    /// Ports listening right now, and where.
    pub fn listening(&self) -> BTreeMap<u16, SocketAddr> {
        let Ok(s) = self.status.lock() else {
            return BTreeMap::new();
        };
        s.iter()
            .filter_map(|(port, st)| match st {
                ListenerStatus::Listening { addr, .. } => Some((*port, *addr)),
                ListenerStatus::Failed { .. } => None,
            })
            .collect()
    }
}

impl Drop for IngressGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Snapshot of listener states for the admin dump.
pub(crate) fn listener_summary(state: &GatewayState) -> serde_json::Value {
    let map: BTreeMap<u16, ListenerStatus> = state.listeners.lock().map(|m| m.clone()).unwrap_or_default();
    serde_json::to_value(map).unwrap_or(serde_json::Value::Null)
}
