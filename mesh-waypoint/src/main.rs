//! mesh-waypoint: the L7 proxy (waypoint mode; ingress gateway mode later).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_waypoint::{Options, Waypoint};

#[derive(Parser)]
#[command(version, about = "Istio VirtualService / DestinationRule engine for the mesh's waypoints")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of Kubernetes-shaped YAML: VirtualService, DestinationRule, Gateway,
    /// Service and Pod objects (multi-document files, searched recursively). Polled for changes.
    #[arg(long, env = "MESH_CONFIG_DIR")]
    config_dir: PathBuf,
    /// Namespace the waypoint serves; short host names in requests resolve against it.
    #[arg(long, env = "MESH_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Address the proxy listens on (HTTP/1.1 and h2 prior knowledge).
    #[arg(long, env = "MESH_LISTEN", default_value = "127.0.0.1:15080")]
    listen: SocketAddr,
    /// Admin address (`/config_dump`, `/ready`); keep it on loopback.
    #[arg(long, env = "MESH_ADMIN", default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Gateway names this proxy serves (repeatable); VirtualServices bound to other gateways are ignored.
    #[arg(long = "gateway", default_value = "mesh")]
    gateways: Vec<String>,
    /// How often the configuration directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    config_poll_ms: u64,
}

fn main() -> anyhow::Result<()> {
    // Logs on stderr: stdout carries `check`'s JSON.
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Check { config_dir, namespace } => check(config_dir, &namespace),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let opts = Options {
            listen: args.listen,
            namespace: args.namespace,
            gateways: args.gateways,
            config_dir: Some(args.config_dir),
            poll_interval: Duration::from_millis(args.config_poll_ms.max(10)),
            admin: Some(args.admin),
        };
        let _waypoint = Waypoint::start(opts).await.context("cannot start the waypoint")?;
        tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
        tracing::info!("shutting down");
        Ok(())
    })
}

fn check(dir: PathBuf, namespace: &str) -> anyhow::Result<()> {
    let config = mesh_waypoint::config::Config::new(namespace, std::sync::Arc::new(mesh_waypoint::endpoint::connector::PlainTcp));
    config.poll_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let dump = mesh_waypoint::admin::config_dump(&config);
    println!("{}", serde_json::to_string_pretty(&dump)?);
    let snap = config.load();
    if snap.rejected.is_empty() && snap.warnings.is_empty() { Ok(()) } else { std::process::exit(1) }
}
