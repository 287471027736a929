//! mesh-waypoint: the L7 proxy (waypoint mode, and ingress gateway mode with `--mode gateway`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_common::abi;
use mesh_waypoint::gateway::{GatewayOptions, IngressGateway};
use mesh_waypoint::proxy::server::HttpLimits;
use mesh_waypoint::{Options, Waypoint};

#[derive(Parser)]
#[command(
    version,
    about = "Istio VirtualService / DestinationRule engine for the mesh's waypoints"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Serve HTTP/1.1 and h2 with the rules found in a configuration directory.
    Run(RunArgs),
    /// Validate a configuration directory and print every problem, then exit
    /// (status 1 if anything was rejected or dangles).
    Check {
        /// Directory of Kubernetes-shaped YAML (multi-document files, searched recursively).
        #[arg(long, env = "MESH_CONFIG_DIR")]
        config_dir: PathBuf,
        /// Namespace the waypoint serves; short host names resolve against it.
        #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
        namespace: String,
        /// Waypoint mode: this waypoint's Gateway name (see `run --waypoint-name`).
        #[arg(long, env = "MESH_WAYPOINT_NAME", default_value = "waypoint")]
        waypoint_name: String,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// L7 proxy for a namespace's Services: VirtualServices bound to `mesh` (or `--gateway`).
    Waypoint,
    /// Istio ingress gateway: listens on the ports of the `Gateway` objects whose
    /// `spec.selector` matches `--pod-labels` (HTTP, HTTPS with tls.mode SIMPLE and a
    /// `kubernetes.io/tls` Secret named by credentialName in `--namespace`), and applies
    /// the VirtualServices bound to them. `--listen`, `--gateway` and `--hbone-listen` are not used.
    Gateway,
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// What this process is: a waypoint (default) or an ingress gateway.
    #[arg(long, env = "MESH_MODE", value_enum, default_value = "waypoint")]
    mode: Mode,
    /// Gateway mode: this pod's labels, `key=value` (repeatable), matched against each
    /// Gateway's `spec.selector` (e.g. `--pod-labels istio=ingressgateway`).
    #[arg(long = "pod-labels", value_parser = parse_label)]
    pod_labels: Vec<(String, String)>,
    /// The mesh's root namespace: AuthorizationPolicy and RequestAuthentication there apply
    /// mesh-wide (Istio's `rootNamespace`; must match the node daemons' `--root-namespace`).
    #[arg(long, env = "MESH_ROOT_NAMESPACE", default_value = mesh_common::model::istio::security::ROOT_NAMESPACE)]
    root_namespace: String,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    mesh_waypoint::gateway::identity::parse_label(text)
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of Kubernetes-shaped YAML: VirtualService, DestinationRule, Gateway,
    /// Service and Pod objects (multi-document files, searched recursively). Polled for
    /// changes. Required unless `--kubernetes`.
    #[arg(
        long,
        env = "MESH_CONFIG_DIR",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    config_dir: Option<PathBuf>,
    /// Read the configuration from the Kubernetes API server (the pod's service account)
    /// instead of a directory; serves readiness on `--readiness-addr`.
    #[arg(long, env = "MESH_KUBERNETES")]
    kubernetes: bool,
    /// Readiness endpoint (`GET /healthz/ready`) in Kubernetes mode.
    #[arg(long, env = "MESH_READINESS_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], abi::PORT_READINESS)))]
    readiness_addr: SocketAddr,
    /// Namespace the waypoint serves; short host names in requests resolve against it.
    /// Gateway mode: the gateway workload's namespace, where credentialName Secrets are looked up.
    #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Address the proxy listens on (HTTP/1.1 and h2 prior knowledge).
    #[arg(long, env = "MESH_LISTEN", default_value = "127.0.0.1:15080")]
    listen: SocketAddr,
    /// Admin address (`/config_dump`, `/ready`, `/stats/prometheus`); keep it on loopback.
    #[arg(long, env = "MESH_ADMIN", default_value_t = SocketAddr::from(([127, 0, 0, 1], abi::PORT_ADMIN)))]
    admin: SocketAddr,
    /// Stats address for Prometheus (`/stats/prometheus`, `/metrics`: Istio's request
    /// metrics, the certificate's and the HBONE refusals' counters), e.g. `0.0.0.0:15020` as Istio's proxies; off when unset.
    #[arg(long, env = "MESH_STATS_ADDR")]
    stats_addr: Option<SocketAddr>,
    /// Access log: `text` (key=value lines in the log on stderr), `json` (one JSON object
    /// per request on stdout, Envoy's field names) or `off`.
    #[arg(long, env = "MESH_ACCESS_LOG_FORMAT", value_enum, default_value = "text")]
    access_log_format: mesh_waypoint::proxy::access_log::AccessLogFormat,
    /// Istio's request metrics (`istio_requests_total`, ...): `false` records none (the
    /// endpoints then serve empty families).
    #[arg(long, env = "MESH_REQUEST_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    request_metrics: bool,
    /// A downstream HTTP/1.1 request head not complete within this many milliseconds
    /// closes the connection (slow or stalled clients).
    #[arg(long, default_value_t = HttpLimits::DEFAULT.header_read_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    header_read_timeout_ms: u64,
    /// An HTTPS (gateway `tls.mode: SIMPLE`) handshake not complete within this many
    /// milliseconds closes the connection.
    #[arg(long, default_value_t = HttpLimits::DEFAULT.tls_handshake_timeout.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    tls_handshake_timeout_ms: u64,
    /// Tracing: export a span per request over OTLP/gRPC to this collector
    /// (`http://host:4317`), propagating W3C trace context (and B3 when the request used
    /// it) upstream. Off when unset: no span is created.
    #[arg(long, env = "MESH_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Tracing: finished spans waiting for export at most; spans beyond it are dropped,
    /// requests never wait for the collector.
    #[arg(long, env = "MESH_OTLP_QUEUE_SIZE", default_value_t = mesh_waypoint::trace::DEFAULT_QUEUE_SIZE,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_048_576))]
    otlp_queue_size: usize,
    /// Tracing: the share of new traces recorded, 0.0–1.0 (default 0.01: 1%, Istio's
    /// mesh default; `1` records every request). A request that arrives with a trace
    /// context follows its caller's sampled flag instead.
    #[arg(long, env = "MESH_TRACE_SAMPLING", default_value_t = mesh_waypoint::trace::DEFAULT_SAMPLING,
          value_parser = mesh_waypoint::trace::parse_sampling)]
    trace_sampling: f64,
    /// Gateway names this proxy serves (repeatable); VirtualServices bound to other gateways are ignored.
    #[arg(long = "gateway", default_value = "mesh")]
    gateways: Vec<String>,
    /// How often the configuration directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    config_poll_ms: u64,
    /// Waypoint mode: this waypoint's Gateway name (its pods' `gateway.networking.k8s.io/gateway-name`),
    /// what AuthorizationPolicy / RequestAuthentication `targetRefs` of kind Gateway name.
    #[arg(long, env = "MESH_WAYPOINT_NAME", default_value = "waypoint")]
    waypoint_name: String,
    /// How often every RequestAuthentication `jwksUri` is fetched again, in seconds (Istio's
    /// default: 20 minutes). A failed fetch keeps the last good keys.
    #[arg(long, env = "MESH_JWKS_REFRESH_SECS", default_value_t = 1200)]
    jwks_refresh_secs: u64,
    #[command(flatten)]
    hbone: HboneArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Gateway mode: the address every Gateway server port is bound on (inside the pod's netns).
    #[arg(long, env = "MESH_BIND_IP", default_value = "0.0.0.0")]
    bind_ip: IpAddr,
}

/// The mesh side: with `--ca-address`, this pod obtains its certificate from the mesh CA
/// (key generated here, CSR with its own token), requests arrive over HBONE on
/// `--hbone-listen` and leave over HBONE to each endpoint pod's 15008; without it,
/// plain TCP both ways.
#[derive(clap::Args)]
struct HboneArgs {
    /// The mesh CA, `https://host:port` (Istio's certificate API).
    #[arg(long, env = "MESH_CA_ADDRESS")]
    ca_address: Option<String>,
    /// Name in the CA's serving certificate to verify.
    #[arg(long, env = "MESH_CA_SERVER_NAME", default_value = "mesh-ca.mesh-system.svc")]
    ca_server_name: String,
    /// The mesh root certificate(s), PEM (the `mesh-ca-root-cert` ConfigMap). Required with `--ca-address`.
    #[arg(long, env = "MESH_CA_ROOT_CERT", requires = "ca_address")]
    ca_root_cert: Option<PathBuf>,
    /// This pod's token for the CA (projected ServiceAccount token, audience `mesh-ca`). Required with `--ca-address`.
    #[arg(long, env = "MESH_CA_TOKEN_FILE", requires = "ca_address")]
    ca_token_file: Option<PathBuf>,
    /// Sent to the CA as the `ClusterID` header.
    #[arg(long, env = "MESH_CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// This pod's service account: its identity is spiffe://<trust-domain>/ns/<--namespace>/sa/<this>.
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", default_value = "default")]
    service_account: String,
    /// Lifetime asked for the certificate, in seconds (the CA may shorten it).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(2..))]
    cert_lifetime_secs: u64,
    /// Where HBONE (HTTP/2 CONNECT over mTLS) is accepted when `--ca-address` is set.
    #[arg(long, env = "MESH_HBONE_LISTEN", default_value_t = SocketAddr::from(([0, 0, 0, 0], abi::PORT_HBONE)))]
    hbone_listen: SocketAddr,
    /// SPIFFE trust domain of the mesh.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Seconds to wait at start for the CA to issue this pod's certificate.
    #[arg(long, default_value_t = 60)]
    cert_wait_secs: u64,
    /// A peer that has not finished TLS and HTTP/2 set-up within this many milliseconds is dropped.
    #[arg(long, default_value_t = 10_000)]
    hbone_handshake_timeout_ms: u64,
    /// Upstream HBONE connections idle this many seconds are closed.
    #[arg(long, default_value_t = 60)]
    hbone_idle_timeout_secs: u64,
    #[command(flatten)]
    hbone_limits: mesh_hbone::server::LimitArgs,
}

impl HboneArgs {
    fn options(&self, namespace: &str) -> anyhow::Result<Option<mesh_waypoint::hbone::HboneOptions>> {
        let Some(address) = &self.ca_address else {
            return Ok(None);
        };
        let (Some(root), Some(token_file)) = (&self.ca_root_cert, &self.ca_token_file) else {
            anyhow::bail!("--ca-address needs --ca-root-cert and --ca-token-file");
        };
        let root_pem = std::fs::read_to_string(root)
            .with_context(|| format!("cannot read the mesh root certificate {}", root.display()))?;
        let ca = mesh_waypoint::hbone::identity::CaOptions {
            client: mesh_hbone::ca::CaClientConfig {
                address: address.clone(),
                server_name: self.ca_server_name.clone(),
                root_pem,
                token_file: token_file.clone(),
                cluster_id: self.cluster_id.clone(),
                timeout: Duration::from_secs(5),
            },
            identity: mesh_hbone::SpiffeId::new(&self.trust_domain, namespace, &self.service_account),
            workload: format!(
                "{namespace}/{}",
                std::env::var("POD_NAME").unwrap_or_else(|_| self.service_account.clone())
            ),
            lifetime: Duration::from_secs(self.cert_lifetime_secs),
            rotate_fraction: 0.5,
            backoff: mesh_hbone::ca::Backoff {
                min: Duration::from_millis(200),
                max: Duration::from_secs(30),
            },
        };
        Ok(Some(mesh_waypoint::hbone::HboneOptions {
            ca,
            trust_domain: self.trust_domain.clone(),
            cert_wait: Duration::from_secs(self.cert_wait_secs),
            handshake_timeout: Duration::from_millis(self.hbone_handshake_timeout_ms),
            idle_timeout: Duration::from_secs(self.hbone_idle_timeout_secs),
            limits: self.hbone_limits.limits(),
        }))
    }
}

fn main() -> anyhow::Result<()> {
    // Logs on stderr: stdout carries `check`'s JSON.
    // Plain text when redirected to a file: operators and tests grep `status=`, `reason=`.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Check {
            config_dir,
            namespace,
            waypoint_name,
            gateway,
        } => check(config_dir, &namespace, &waypoint_name, &gateway),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let service = service_name(&args);
    runtime.block_on(async {
        let mut opts = Options {
            listen: args.listen,
            namespace: args.namespace,
            gateways: args.gateways,
            config_dir: args.config_dir,
            poll_interval: Duration::from_millis(args.config_poll_ms.max(10)),
            admin: Some(args.admin),
            stats: args.stats_addr,
            access_log: args.access_log_format,
            request_metrics: args.request_metrics,
            waypoint_name: args.waypoint_name,
            jwks_refresh: Duration::from_secs(args.jwks_refresh_secs.max(1)),
            root_namespace: args.gateway.root_namespace.clone(),
            otlp: args
                .otlp_endpoint
                .clone()
                .map(|endpoint| mesh_waypoint::trace::OtlpOptions {
                    endpoint,
                    queue_size: args.otlp_queue_size,
                    service_name: service,
                    sampling: args.trace_sampling,
                }),
            identity: None,
            http_limits: HttpLimits {
                header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
                tls_handshake_timeout: Duration::from_millis(args.tls_handshake_timeout_ms),
            },
        };
        let hbone = match args.hbone.options(&opts.namespace)? {
            Some(o) => Some(
                mesh_waypoint::hbone::HboneSide::prepare(o)
                    .await
                    .context("cannot join the mesh")?,
            ),
            None => None,
        };
        opts.identity = hbone.as_ref().map(|h| h.identity.clone());
        let connector: std::sync::Arc<dyn mesh_waypoint::endpoint::connector::Connector> = match &hbone {
            Some(h) => h.connector.clone(),
            None => std::sync::Arc::new(mesh_waypoint::endpoint::connector::PlainTcp),
        };
        if args.gateway.mode == Mode::Gateway {
            // The gateway accepts from outside the mesh on its Gateway ports; upstream it
            // uses the same connector (HBONE with --ca-address) as a waypoint.
            let gw = GatewayOptions {
                pod_labels: args.gateway.pod_labels.into_iter().collect(),
                bind_ip: args.bind_ip,
            };
            let own_namespace = opts.namespace.clone();
            let gateway = IngressGateway::start_with(opts, gw, connector)
                .await
                .context("cannot start the ingress gateway")?;
            if let Some(h) = &hbone {
                // Upstream identities come from the gateway's live configuration.
                h.connector.bind(&gateway.config);
            }
            if args.kubernetes {
                // The gateway alone reads Secrets: its credentialNames, in its namespace.
                let secrets = Some(own_namespace);
                let identity = hbone.as_ref().map(|h| h.identity.clone());
                start_kubernetes(gateway.config.clone(), identity, args.readiness_addr, secrets).await?;
            }
            shutdown_signal().await?;
            tracing::info!("shutting down");
            mesh_common::telemetry::access_log::flush();
            return Ok(());
        }
        let waypoint = Waypoint::start_with(opts, connector)
            .await
            .context("cannot start the waypoint")?;
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(h) = &hbone {
            h.listen(args.hbone.hbone_listen, waypoint.proxy.clone(), stop_rx)
                .await
                .context("cannot serve HBONE")?;
        }
        if args.kubernetes {
            let identity = hbone.as_ref().map(|h| h.identity.clone());
            start_kubernetes(waypoint.config.clone(), identity, args.readiness_addr, None).await?;
        }
        shutdown_signal().await?;
        tracing::info!("shutting down");
        mesh_common::telemetry::access_log::flush();
        Ok(())
    })
}

/// `service.name` of the spans, `<workload>.<namespace>` as Istio's proxies report it:
/// the waypoint's Gateway name, or the gateway pod's `app` / `istio` label.
fn service_name(args: &RunArgs) -> String {
    let workload = match args.gateway.mode {
        Mode::Waypoint => args.waypoint_name.clone(),
        Mode::Gateway => ["app", "istio"]
            .iter()
            .find_map(|k| args.gateway.pod_labels.iter().find(|(l, _)| l == k))
            .map_or_else(|| "ingress-gateway".to_owned(), |(_, v)| v.clone()),
    };
    format!("{workload}.{}", args.namespace)
}

/// Ctrl-C or SIGTERM (how Kubernetes and the netns harness stop a pod).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(feature = "kubernetes")]
async fn start_kubernetes(
    config: std::sync::Arc<mesh_waypoint::config::Config>,
    identity: Option<std::sync::Arc<mesh_waypoint::hbone::identity::ProxyIdentity>>,
    readiness: SocketAddr,
    secrets_namespace: Option<String>,
) -> anyhow::Result<()> {
    let feed = mesh_waypoint::kubernetes::start(config.clone(), std::env::var("POD_NAME").ok(), secrets_namespace)
        .await
        .context("Kubernetes mode (--kubernetes)")?;
    let listener = tokio::net::TcpListener::bind(readiness)
        .await
        .with_context(|| format!("cannot listen on {readiness}"))?;
    // The readiness server holds the feed: the process follows the API server for its
    // whole life.
    tokio::spawn(async move {
        let _feed = feed;
        mesh_waypoint::readiness::serve(listener, config, identity).await
    });
    tracing::info!(%readiness, "configuration from the Kubernetes API server");
    Ok(())
}

#[cfg(not(feature = "kubernetes"))]
async fn start_kubernetes(
    _: std::sync::Arc<mesh_waypoint::config::Config>,
    _: Option<std::sync::Arc<mesh_waypoint::hbone::identity::ProxyIdentity>>,
    _: SocketAddr,
    _: Option<String>,
) -> anyhow::Result<()> {
    anyhow::bail!("--kubernetes: this mesh-waypoint was built without the `kubernetes` feature")
}

fn check(dir: PathBuf, namespace: &str, waypoint_name: &str, gateway: &GatewayArgs) -> anyhow::Result<()> {
    let connector = std::sync::Arc::new(mesh_waypoint::endpoint::connector::PlainTcp);
    let config = match gateway.mode {
        Mode::Waypoint => {
            mesh_waypoint::config::Config::for_waypoint(namespace, waypoint_name, &gateway.root_namespace, connector)
        }
        Mode::Gateway => {
            let identity = mesh_waypoint::gateway::GatewayIdentity {
                namespace: namespace.to_owned(),
                labels: gateway.pod_labels.iter().cloned().collect(),
            };
            mesh_waypoint::config::Config::for_gateway(identity, &gateway.root_namespace, connector)
        }
    };
    mesh_waypoint::config::feed::DirFeed::read_once(&dir, &config)
        .with_context(|| format!("cannot read {}", dir.display()))?;
    let dump = mesh_waypoint::admin::config_dump(&config);
    println!("{}", serde_json::to_string_pretty(&dump)?);
    let snap = config.load();
    if snap.rejected.is_empty() && snap.warnings.is_empty() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
