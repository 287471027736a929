//! mesh-waypoint: the L7 proxy applying Istio VirtualService / DestinationRule.
//!
//! The request path reads as three layers (docs/architecture.md, "Services and waypoints"):
//! [`route`] (VirtualService: match, fault, retries, timeouts, rewrite, redirect,
//! header ops, mirror, CORS) → [`backend`] (Service + DestinationRule subset:
//! connection pool / circuit breaker, outlier detection) → [`endpoint`] (load
//! balancer, connector). [`config`] validates Istio YAML into those types and
//! publishes immutable snapshots; [`proxy`] is the HTTP server tying it together.

pub mod admin;
pub mod authn;
pub mod authz;
pub mod backend;
pub mod body;
pub mod config;
pub mod discovery;
pub mod endpoint;
pub mod gateway;
pub mod hbone;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod metrics;
pub mod proxy;
pub mod readiness;
pub mod route;
pub mod trace;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::config::feed::DirFeed;
use crate::endpoint::connector::{Connector, PlainTcp};
use crate::proxy::Proxy;

#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    pub namespace: String,
    /// Gateways served, as written (`mesh`, `name`, `ns/name`).
    pub gateways: Vec<String>,
    pub config_dir: Option<PathBuf>,
    pub poll_interval: Duration,
    pub admin: Option<SocketAddr>,
    /// The stats port (Istio's 15020): `/stats/prometheus` and `/metrics` only.
    pub stats: Option<SocketAddr>,
    /// One line per request: key=value in the log, or JSON on stdout.
    pub access_log: proxy::access_log::AccessLogFormat,
    /// Istio's request metrics recorded (`--request-metrics`, default on).
    pub request_metrics: bool,
    /// This waypoint's Gateway name (what `targetRefs` kind `Gateway` names).
    pub waypoint_name: String,
    /// How often `jwksUri` key sets are fetched again.
    pub jwks_refresh: Duration,
    /// Where mesh-wide AuthorizationPolicy and RequestAuthentication live.
    pub root_namespace: String,
    /// Spans exported over OTLP; `None` (the default): no tracing at all.
    pub otlp: Option<trace::OtlpOptions>,
    /// This proxy's mesh certificate (with `--ca-address`): its CA metrics on the stats
    /// and admin ports, its identity, serial and expiry in `/config_dump`.
    pub identity: Option<Arc<hbone::identity::ProxyIdentity>>,
    /// Downstream header read and TLS handshake timeouts.
    pub http_limits: proxy::server::HttpLimits,
}

impl Options {
    /// Request metrics (recorded unless `request_metrics` is off), with this proxy's
    /// certificate metrics when it has a certificate.
    fn build_metrics(&self, reporter: crate::metrics::Reporter) -> crate::metrics::RequestMetrics {
        let certs = self.identity.as_deref().map(hbone::identity::ProxyIdentity::metrics);
        crate::metrics::RequestMetrics::with_certificates(reporter, certs).recording(self.request_metrics)
    }

    pub fn new(listen: SocketAddr, namespace: &str) -> Self {
        Self {
            listen,
            namespace: namespace.to_owned(),
            gateways: vec!["mesh".into()],
            config_dir: None,
            poll_interval: Duration::from_millis(500),
            admin: None,
            stats: None,
            access_log: Default::default(),
            request_metrics: true,
            waypoint_name: crate::config::DEFAULT_WAYPOINT_NAME.into(),
            jwks_refresh: crate::authn::jwks::DEFAULT_REFRESH,
            root_namespace: mesh_common::model::istio::security::ROOT_NAMESPACE.into(),
            otlp: None,
            identity: None,
            http_limits: Default::default(),
        }
    }
}

/// A running waypoint. Dropping it stops accepting new connections.
pub struct Waypoint {
    pub addr: SocketAddr,
    /// The request path, for streams that arrive by other means (HBONE, `tcp` routes).
    pub proxy: Arc<Proxy>,
    pub admin_addr: Option<SocketAddr>,
    pub config: Arc<Config>,
    /// Local mode's configuration directory, polled until the waypoint is dropped.
    dir_feed: Option<DirFeed>,
    shutdown: watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot load configuration: {0}")]
    Config(#[from] mesh_common::model::ConfigError),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
}

impl Waypoint {
    pub async fn start(opts: Options) -> Result<Self, StartError> {
        Self::start_with(opts, Arc::new(PlainTcp)).await
    }

    /// Like [`Waypoint::start`] with a custom upstream [`Connector`] (HBONE later).
    pub async fn start_with(opts: Options, connector: Arc<dyn Connector>) -> Result<Self, StartError> {
        let config = Config::for_waypoint(&opts.namespace, &opts.waypoint_name, &opts.root_namespace, connector);
        let dir_feed = opts
            .config_dir
            .as_deref()
            .map(|dir| DirFeed::start(dir, opts.poll_interval, config.clone()))
            .transpose()?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: opts.listen,
            source,
        })?;
        let (shutdown, rx) = watch::channel(false);
        let gateways = crate::config::virtual_service::normalize_gateways(&opts.gateways, &opts.namespace);
        let proxy = Arc::new(Proxy {
            config: config.clone(),
            gateways,
            metrics: Arc::new(opts.build_metrics(crate::metrics::Reporter::waypoint)),
            access_log: opts.access_log,
            tracer: trace::start(opts.otlp.as_ref())?,
            series: Default::default(),
            limits: opts.http_limits,
        });
        tokio::spawn(proxy::server::serve(listener, proxy.clone(), rx.clone()));
        let admin_addr = match opts.admin {
            Some(a) => Some(
                admin::spawn(
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
            admin::spawn_stats(a, proxy.metrics.clone(), rx.clone()).await?;
        }
        spawn_jwks_refresher(&config, opts.jwks_refresh, rx);
        tracing::info!(%addr, namespace = opts.namespace, "waypoint listening");
        Ok(Self {
            addr,
            proxy,
            admin_addr,
            config,
            dir_feed,
            shutdown,
        })
    }

    /// Reads the configuration directory now (tests; the poller does it every
    /// `poll_interval`). True if anything changed.
    pub fn reload_config(&self) -> Result<bool, mesh_common::model::ConfigError> {
        self.dir_feed.as_ref().map_or(Ok(false), DirFeed::reload)
    }
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Refreshes `jwksUri` key sets every `every` until `stop` flips.
pub(crate) fn spawn_jwks_refresher(config: &Arc<Config>, every: Duration, mut stop: watch::Receiver<bool>) {
    let refresher = config
        .jwks()
        .clone()
        .run_refresher(every, crate::authn::rule::DEFAULT_FETCH_TIMEOUT);
    tokio::spawn(async move {
        tokio::select! { _ = refresher => {}, _ = stop.changed() => {} }
    });
}
