//! Command line. Every limit and location has a flag (and an env var for the DaemonSet).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mesh_common::abi::{PORT_ADMIN, PORT_METRICS, PORT_READINESS};

#[derive(Debug, Parser)]
#[command(
    name = "mesh-node",
    version,
    about = "Per-node daemon of the mesh: eBPF capture, HBONE tunnel, identities, L4 policy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the node daemon.
    Run(RunArgs),
    /// Waypoints (Kubernetes mode).
    #[command(subcommand)]
    Waypoint(crate::waypoint_render::WaypointCommand),
    /// The listener fd store (keeps capture listeners open while the daemon restarts or
    /// is replaced). The daemon starts one for itself unless `--fd-holder-spawn false`
    /// (the DaemonSet runs it as its own pod).
    FdHolder(FdHolderArgs),
    /// Exit status 0 once the daemon of this container serves (its `--started-file`
    /// exists): the DaemonSet's startup probe.
    Started(StartedArgs),
}

#[derive(Debug, Clone, Args)]
pub struct StartedArgs {
    #[arg(long)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct FdHolderArgs {
    /// Unix SEQPACKET socket to serve on.
    #[arg(long)]
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Directory of Kubernetes-shaped YAML (Namespaces, Pods, Services, Istio resources),
    /// read recursively and re-read when files change. Required unless `--kubernetes`.
    #[arg(
        long,
        env = "MESH_CONFIG_DIR",
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub config_dir: Option<PathBuf>,

    /// Read the configuration from the Kubernetes API server (in-cluster service account,
    /// else the local kubeconfig) instead of a directory: watches every pod of the
    /// cluster (trimmed), captures only this node's.
    #[arg(long, env = "MESH_KUBERNETES")]
    pub kubernetes: bool,

    /// Name of the node this daemon serves; only pods with this `spec.nodeName` are enrolled.
    #[arg(long, visible_alias = "node-name", env = "NODE_NAME")]
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
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], PORT_ADMIN)))]
    pub admin_addr: SocketAddr,

    /// Readiness endpoint (`GET /healthz/ready`).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], PORT_READINESS)))]
    pub readiness_addr: SocketAddr,

    /// Prometheus metrics endpoint (`GET /metrics`).
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], PORT_METRICS)))]
    pub metrics_addr: SocketAddr,

    /// How often the configuration directory is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub config_poll_ms: u64,

    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,

    /// Istio's root namespace: AuthorizationPolicies in it apply to the whole mesh
    /// (with a selector: to matching pods of every namespace).
    #[arg(long, env = "MESH_ROOT_NAMESPACE", default_value = mesh_common::model::istio::security::ROOT_NAMESPACE)]
    pub root_namespace: String,

    #[command(flatten)]
    pub capture: CaptureArgs,

    #[command(flatten)]
    pub upgrade: UpgradeArgs,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `mesh_node=debug,info`.
    #[arg(long, env = "MESH_LOG", default_value = "info")]
    pub log: String,

    #[command(flatten)]
    pub mesh: crate::proxy::args::MeshArgs,
}

/// Capture limits and exclusions (docs/architecture.md "Outbound" / "Inbound").
#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// Destination ports never captured outbound nor steered inbound (comma-separated),
    /// on top of the mesh ports 15001/15006/15008.
    #[arg(long, value_delimiter = ',', env = "MESH_CAPTURE_EXCLUDE_PORTS")]
    pub capture_exclude_ports: Vec<u16>,

    /// IPv4 CIDRs never captured as destinations nor steered as sources (comma-separated,
    /// e.g. `10.0.0.0/8,192.168.1.7/32`).
    #[arg(long, value_delimiter = ',', env = "MESH_CAPTURE_EXCLUDE_CIDRS")]
    pub capture_exclude_cidrs: Vec<Cidr>,

    /// Size of the original-destination maps: concurrent captured connections per node
    /// (LRU beyond that; entries are deleted when connections close). Also sizes
    /// DAEMON_CONNECTS: concurrent inbound connections made from clients' IPs (beyond it,
    /// from the pod's own IP).
    #[arg(long, default_value_t = mesh_common::abi::DEFAULT_CONN_ENTRIES, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub capture_conn_entries: u32,

    /// Maximum enrolled pods on this node (size of the per-pod maps).
    #[arg(long, default_value_t = mesh_common::abi::DEFAULT_POD_ENTRIES, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub capture_pod_entries: u32,

    /// Maximum excluded ports and, separately, excluded CIDRs.
    #[arg(long, default_value_t = mesh_common::abi::DEFAULT_EXCLUDE_ENTRIES, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub capture_exclude_entries: u32,

    /// Accept backlog of the per-pod capture listeners (15001/15006/15008); it also holds
    /// connections arriving while the daemon restarts. Capped by net.core.somaxconn.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub listen_backlog: u32,

    /// Inbound plaintext to an enrolled pod whose 15006 listener is gone (daemon down) is
    /// dropped instead of reaching the app unmeshed (fail closed).
    #[arg(long, env = "MESH_INBOUND_STRICT_ON_MISS")]
    pub inbound_strict_on_miss: bool,

    /// On SIGTERM/SIGINT, un-enroll every pod and remove all pins (node drain / uninstall).
    /// Without it, capture stays attached so a restarted daemon takes over seamlessly.
    #[arg(long)]
    pub detach_on_exit: bool,

    /// Start the fd-holder process when none is running. `false` where the holder runs
    /// on its own (the DaemonSet's mesh-fd-holder): a holder started inside the daemon's
    /// container would die with the daemon's pod.
    #[arg(long, env = "MESH_FD_HOLDER_SPAWN", default_value_t = true, action = clap::ArgAction::Set)]
    pub fd_holder_spawn: bool,

    /// Do not keep listener duplicates in the fd-holder process: a crashed daemon then
    /// closes the pods' listeners (captured connects are refused, inbound follows
    /// `--inbound-strict-on-miss`) until it restarts.
    #[arg(long)]
    pub no_fd_store: bool,

    /// Connect to a pod's application from the calling pod's IP (the HBONE peer, or the
    /// `forwarded` client its identity vouches for; the plaintext peer), so the
    /// application's peer address is the caller's. `false`: the application sees its
    /// own pod IP as every inbound peer (docs/capture.md §5).
    #[arg(long, env = "MESH_PRESERVE_CLIENT_IP", default_value_t = true, action = clap::ArgAction::Set)]
    pub preserve_client_ip: bool,

    /// Socket mark of those connections; inside each pod's netns a policy rule routes
    /// packets with this mark to `--client-ip-table`. Pick one nothing else in the pods uses.
    #[arg(long, default_value = "0x15006", value_parser = parse_mark)]
    pub client_ip_mark: u32,

    /// Routing table (inside each pod's netns) holding the route that delivers the
    /// application's replies to those connections back to the daemon.
    #[arg(long, default_value_t = 15006, value_parser = clap::value_parser!(u32).range(256..=0xFFFF_FFFF))]
    pub client_ip_table: u32,

    /// How often failed enrollments are retried, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub enroll_retry_ms: u64,
}

/// Hand-over between an old and a new daemon on one node (README.md, "Upgrades").
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    /// After handing over to a new daemon, how long this one keeps relaying the
    /// connections it holds before exiting (those still open then are closed). Keep the
    /// DaemonSet's terminationGracePeriodSeconds above it.
    #[arg(long, env = "MESH_DRAIN_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub drain_timeout_secs: u64,

    /// Written once this daemon serves (after taking over from a running one): a
    /// startup probe that cannot be confused with the old daemon's 15021 on the same
    /// host network. Keep it on container-local storage.
    #[arg(long, env = "MESH_STARTED_FILE")]
    pub started_file: Option<PathBuf>,

    /// A new daemon that finds one running waits this long for its own configuration and
    /// certificates before taking over; if they are not ready by then it exits and the
    /// running daemon keeps serving.
    #[arg(long, env = "MESH_HANDOFF_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handoff_timeout_secs: u64,
}

impl UpgradeArgs {
    pub fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn handoff_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.handoff_timeout_secs)
    }
}

/// An IPv4 CIDR (`a.b.c.d/n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::Ipv4Addr,
    pub prefix_len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, n) = s.split_once('/').unwrap_or((s, "32"));
        let addr = a.parse().map_err(|e| format!("CIDR {s:?}: address {a:?}: {e}"))?;
        let prefix_len: u8 = n.parse().map_err(|e| format!("CIDR {s:?}: prefix length {n:?}: {e}"))?;
        if prefix_len > 32 {
            return Err(format!("CIDR {s:?}: prefix length {prefix_len} is over 32"));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl RunArgs {
    pub fn state_params(&self) -> crate::state::StateParams {
        crate::state::StateParams {
            node: self.node.clone(),
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.root_namespace.clone(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib/mesh").join(&self.node))
    }

    pub fn bpffs_dir(&self) -> PathBuf {
        self.bpffs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/mesh").join(&self.node))
    }
}

/// A non-zero socket mark, decimal or `0x` hexadecimal.
fn parse_mark(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not a 32-bit mark: {e}"))?;
    if v == 0 {
        return Err("the mark must not be 0 (unmarked packets would match)".into());
    }
    Ok(v)
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
        let Command::Run(args) = cli.command else { panic!("run") };
        assert_eq!(args.state_dir(), PathBuf::from("/var/lib/mesh/n1"));
        assert_eq!(args.bpffs_dir(), PathBuf::from("/sys/fs/bpf/mesh/n1"));
        assert_eq!(args.capture.listen_backlog, 4096);
    }

    #[test]
    fn kubernetes_mode_needs_no_config_dir_and_excludes_one() {
        let cli = Cli::try_parse_from(["mesh-node", "run", "--kubernetes", "--node-name", "n1"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert!(args.kubernetes && args.config_dir.is_none());
        assert_eq!(args.node, "n1");
        let both = Cli::try_parse_from(["mesh-node", "run", "--kubernetes", "--config-dir", "/c", "--node", "n1"]);
        assert!(both.unwrap_err().to_string().contains("--config-dir"));
        let neither = Cli::try_parse_from(["mesh-node", "run", "--node", "n1"])
            .unwrap_err()
            .to_string();
        assert!(neither.contains("--config-dir"), "{neither}");
    }

    #[test]
    fn capture_exclusions_parse_and_bad_cidrs_are_named() {
        let cli = Cli::try_parse_from([
            "mesh-node",
            "run",
            "--config-dir",
            "/c",
            "--node",
            "n1",
            "--capture-exclude-ports",
            "22,9090",
            "--capture-exclude-cidrs",
            "10.0.0.0/8,192.168.1.7",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert_eq!(args.capture.capture_exclude_ports, vec![22, 9090]);
        assert_eq!(
            args.capture.capture_exclude_cidrs[1],
            Cidr {
                addr: [192, 168, 1, 7].into(),
                prefix_len: 32
            }
        );
        let c: Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(c.contains([198, 19, 255, 1].into()) && !c.contains([198, 20, 0, 1].into()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains([8, 8, 8, 8].into()));
        let e = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(e.contains("10.0.0.0/33") && e.contains("33"), "{e}");
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn client_ip_marks_are_non_zero_decimal_or_hex() {
        assert_eq!(parse_mark("0x15006"), Ok(0x15006));
        assert_eq!(parse_mark("1337"), Ok(1337));
        assert!(parse_mark("0").unwrap_err().contains("must not be 0"));
        assert!(parse_mark("0xzz").unwrap_err().contains("\"0xzz\""));
    }
}
