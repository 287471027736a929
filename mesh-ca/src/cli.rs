//! `mesh-ca run` and `mesh-ca root create`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{PodView, Policy, TokenReviewer};
use crate::authority::{Authority, create_root};
use crate::service::{CaMetrics, CaServer, CaService};

#[derive(Debug, Parser)]
#[command(
    name = "mesh-ca",
    about = "The mesh certificate authority (Istio's certificate API, node-scoped)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve `istio.v1.auth.IstioCertificateService` over gRPC/TLS.
    Run(RunArgs),
    /// Create a self-signed root in the `cacerts` layout (for a new cluster's Secret).
    Root {
        #[command(subcommand)]
        command: RootCommand,
    },
    /// Ask a CA for a certificate as a client would (key generated here, never written):
    /// prints the identity and expiry it got, or why it was refused (exit 1) or not
    /// answered (exit 2). For checking a token's rights and the CA's reachability.
    Request(RequestArgs),
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// `https://host:port` of the CA.
    #[arg(long)]
    pub address: String,
    #[arg(long, default_value = "mesh-ca.mesh-system.svc")]
    pub server_name: String,
    /// The mesh root certificate(s), PEM.
    #[arg(long)]
    pub root_cert: PathBuf,
    #[arg(long)]
    pub token_file: PathBuf,
    /// The identity asked for (`spiffe://<td>/ns/<ns>/sa/<sa>`).
    #[arg(long)]
    pub identity: mesh_hbone::SpiffeId,
    /// Ask on behalf of a pod (node agents), as ztunnel's `ImpersonatedIdentity`.
    #[arg(long)]
    pub impersonate: bool,
    #[arg(long, default_value = "Kubernetes")]
    pub cluster_id: String,
}

/// Exit code of `mesh-ca request`: 0 issued, 1 refused or unusable, 2 unreachable.
pub async fn request(args: RequestArgs) -> anyhow::Result<i32> {
    use mesh_hbone::ca::{CaClient, CaClientConfig, CaResult};
    let root_pem =
        std::fs::read_to_string(&args.root_cert).with_context(|| format!("reading {}", args.root_cert.display()))?;
    let client = CaClient::new(CaClientConfig {
        address: args.address,
        server_name: args.server_name,
        root_pem,
        token_file: args.token_file,
        cluster_id: args.cluster_id,
        timeout: Duration::from_secs(5),
    })?;
    match client
        .fetch(&args.identity, args.impersonate, Duration::from_secs(3600), 1)
        .await
    {
        Ok(c) => {
            let expiry = c.not_after.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            println!(
                "issued {} expiry_unix={} chain_len={}",
                args.identity,
                expiry.as_secs(),
                c.certified.cert.len()
            );
            Ok(0)
        }
        Err(e) => {
            println!("result={:?} error={e}", e.result());
            Ok(if e.result() == CaResult::unreachable { 2 } else { 1 })
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RootCommand {
    Create {
        /// Directory to write `ca-cert.pem`, `ca-key.pem` (0600), `root-cert.pem`, `cert-chain.pem`.
        #[arg(long)]
        cacerts_dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// gRPC/TLS listen address.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub listen: SocketAddr,
    /// Plug-in CA certificates in Istio's `cacerts` layout: `ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem` (the Secret `cacerts` in Kubernetes).
    #[arg(long, env = "MESH_CA_CACERTS_DIR")]
    pub cacerts_dir: PathBuf,
    /// When `--cacerts-dir` holds no CA, create a self-signed root there (local clusters).
    #[arg(long)]
    pub create_root: bool,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Requests whose `ClusterID` header names another cluster are refused.
    #[arg(long, default_value = "Kubernetes")]
    pub cluster_id: String,
    /// `namespace/serviceaccount` of node agents that may request the identities of pods
    /// scheduled on their node (repeatable).
    #[arg(long = "node-agent", default_value = "mesh-system/mesh-node", value_parser = ns_sa)]
    pub node_agents: Vec<(String, String)>,
    /// DNS names in the CA's serving certificate; clients verify one of them (repeatable).
    #[arg(long = "server-name", default_value = "mesh-ca.mesh-system.svc")]
    pub server_names: Vec<String>,
    /// Upper bound (and default) of issued certificate lifetimes, in seconds.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(2..))]
    pub max_cert_lifetime_secs: u64,
    /// Verify tokens with the API server's TokenReview and read pods from it.
    #[arg(long, conflicts_with_all = ["token_review_file", "config_dir"])]
    pub kubernetes: bool,
    /// Audience the projected ServiceAccount tokens must carry (`--kubernetes`).
    #[arg(long, default_value = "mesh-ca")]
    pub audience: String,
    /// `--kubernetes`: publish the root certificate (key `root-cert.pem`) in a ConfigMap of
    /// this name in every namespace, as istiod publishes `istio-ca-root-cert`.
    #[arg(long, requires = "kubernetes")]
    pub publish_root_configmap: Option<String>,
    /// How often that ConfigMap is applied again in every namespace (new namespaces,
    /// edited or deleted copies), in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub root_configmap_resync_secs: u64,
    /// Local mode: the token file the cluster harness writes (token → ServiceAccount, pod, node).
    #[arg(long, requires = "config_dir")]
    pub token_review_file: Option<PathBuf>,
    /// Local mode: the configuration directory whose Pods say which pod runs where.
    #[arg(long, requires = "token_review_file")]
    pub config_dir: Option<PathBuf>,
    /// `RUST_LOG`-style filter.
    #[arg(long, default_value = "info")]
    pub log: String,
}

fn ns_sa(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => Ok((ns.into(), sa.into())),
        _ => Err(format!("{s:?} is not namespace/serviceaccount")),
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.create_root && create_root(&args.cacerts_dir, &args.trust_domain)? {
        tracing::info!(dir = %args.cacerts_dir.display(), "created a self-signed mesh root");
    }
    let authority = Arc::new(Authority::load(&args.cacerts_dir)?);
    let (reviewer, pods) = auth_backends(&args).await?;
    let (cert, key) = authority.serving_cert(&args.server_names)?;
    let service = CaService {
        authority,
        policy: Policy {
            trust_domain: args.trust_domain.clone(),
            cluster_id: args.cluster_id.clone(),
            node_agents: args.node_agents.clone(),
        },
        reviewer,
        pods,
        max_lifetime: Duration::from_secs(args.max_cert_lifetime_secs),
        metrics: CaMetrics::default(),
    };
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    tracing::info!(listen = %args.listen, names = ?args.server_names, "mesh CA serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    Server::builder()
        .tls_config(tls)
        .context("TLS configuration")?
        .serve_with_shutdown(args.listen, CaServer(Arc::new(service)), shutdown)
        .await
        .with_context(|| format!("serving on {}", args.listen))
}

async fn auth_backends(args: &RunArgs) -> anyhow::Result<(Arc<dyn TokenReviewer>, Arc<dyn PodView>)> {
    if args.kubernetes {
        return kube_backends(args).await;
    }
    let (Some(file), Some(dir)) = (&args.token_review_file, &args.config_dir) else {
        bail!("no way to verify callers: pass --kubernetes, or --token-review-file with --config-dir (local mode)");
    };
    let reviewer = Arc::new(crate::auth::file::FileReviewer::new(file.clone()));
    let pods = Arc::new(crate::auth::dir_pods::DirPods::new(dir.clone()));
    Ok((reviewer, pods))
}

#[cfg(feature = "kubernetes")]
async fn kube_backends(args: &RunArgs) -> anyhow::Result<(Arc<dyn TokenReviewer>, Arc<dyn PodView>)> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server")?;
    if let Some(name) = &args.publish_root_configmap {
        let root = Authority::load(&args.cacerts_dir)?.root_pem().to_owned();
        let every = std::time::Duration::from_secs(args.root_configmap_resync_secs);
        tokio::spawn(crate::publish::run(client.clone(), name.clone(), root, every));
    }
    let k = Arc::new(crate::auth::kube::KubeAuth::new(client, args.audience.clone()));
    Ok((k.clone(), k))
}

#[cfg(not(feature = "kubernetes"))]
async fn kube_backends(_: &RunArgs) -> anyhow::Result<(Arc<dyn TokenReviewer>, Arc<dyn PodView>)> {
    bail!("this mesh-ca was built without the `kubernetes` feature")
}
