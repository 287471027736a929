//! Command line. Every limit and location has a flag (and an env var for the DaemonSet).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "mesh-node", version, about = "Per-node daemon of the mesh: eBPF capture, HBONE tunnel, identities, L4 policy")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon.
    Run(RunArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Directory of Kubernetes-shaped YAML (Namespaces, Pods, Services, Istio resources),
    /// read recursively and re-read when files change.
    #[arg(long, env = "MESH_CONFIG_DIR")]
    pub config_dir: PathBuf,

    /// Name of the node this daemon serves; only pods with this `spec.nodeName` are enrolled.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,

    /// Where the daemon keeps state it must find again after a restart (CA, certificates).
    /// Defaults to /var/lib/mesh/<node>.
    #[arg(long, env = "MESH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// bpffs directory for pinned maps and links, so capture outlives the daemon.
    /// Defaults to /sys/fs/bpf/mesh/<node>; bpffs is mounted at /sys/fs/bpf if missing.
    #[arg(long, env = "MESH_BPFFS_DIR")]
    pub bpffs_dir: Option<PathBuf>,

    /// Admin endpoint (config dump, workloads, certificates). Keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,

    /// Readiness endpoint (`GET /healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,

    /// Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, default_value = "0.0.0.0:15020")]
    pub metrics_addr: SocketAddr,

    /// How often the configuration directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub config_poll_ms: u64,

    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mesh_node=debug,info`.
    #[arg(long, env = "MESH_LOG", default_value = "info")]
    pub log: String,
}

impl RunArgs {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| PathBuf::from("/var/lib/mesh").join(&self.node))
    }

    pub fn bpffs_dir(&self) -> PathBuf {
        self.bpffs_dir.clone().unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/mesh").join(&self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_carry_the_node_name() {
        let cli = Cli::try_parse_from(["mesh-node", "run", "--config-dir", "/c", "--node", "n1"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.state_dir(), PathBuf::from("/var/lib/mesh/n1"));
        assert_eq!(args.bpffs_dir(), PathBuf::from("/sys/fs/bpf/mesh/n1"));
    }
}
