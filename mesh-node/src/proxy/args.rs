//! Command-line flags of the mesh data path (flattened into `mesh-node run`).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPath {
    /// HBONE mutual-TLS tunnel between pods, PeerAuthentication enforced.
    Mesh,
    /// Plain TCP forwarding, no TLS and no policy (debugging, baseline benchmarks).
    Direct,
}

#[derive(Debug, Clone, Args)]
pub struct MeshArgs {
    /// What carries captured connections.
    #[arg(long, value_enum, default_value_t = DataPath::Mesh)]
    pub data_path: DataPath,

    /// The mesh CA (`mesh-ca`, or istiod): `https://host:port`, Istio's certificate API.
    /// Required with `--data-path mesh`: the daemon holds no CA key.
    #[arg(long, env = "MESH_CA_ADDRESS")]
    pub ca_address: Option<String>,

    /// Name in the CA's serving certificate to verify (`mesh-ca.mesh-system.svc`; istiod's is `istiod.istio-system.svc`).
    #[arg(long, default_value = "mesh-ca.mesh-system.svc")]
    pub ca_server_name: String,

    /// The mesh root certificate(s), PEM (the `mesh-ca-root-cert` ConfigMap): trust anchor
    /// for the CA's TLS and for every HBONE peer.
    #[arg(long, env = "MESH_CA_ROOT_CERT")]
    pub ca_root_cert: Option<PathBuf>,

    /// The token presented to the CA (a projected ServiceAccount token, audience `mesh-ca`);
    /// re-read at every request.
    #[arg(long, env = "MESH_CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,

    /// Sent to the CA as the `ClusterID` header.
    #[arg(long, default_value = "Kubernetes")]
    pub cluster_id: String,

    /// Bound on one CA request, connect included, in ms.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub ca_timeout_ms: u64,

    /// First retry delay after a failed CA request, in ms (doubling, jittered, up to `--ca-backoff-max-ms`).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub ca_backoff_min_ms: u64,

    /// Largest retry delay after failed CA requests, in ms.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ca_backoff_max_ms: u64,

    /// Lifetime of workload certificates, in seconds.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(2..))]
    pub cert_lifetime_secs: u64,

    /// Workload certificates are replaced after this fraction of their lifetime.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    pub cert_rotate_fraction: f64,

    /// Time a peer gets to finish TLS and HTTP/2 set-up on 15008 (and we get as a client), in ms.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub hbone_handshake_timeout_ms: u64,

    #[command(flatten)]
    pub hbone_limits: mesh_hbone::server::LimitArgs,

    /// Pooled HBONE connections unused for this long are closed, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub hbone_idle_timeout_secs: u64,

    /// The cluster's pod and Service IPv4 CIDRs (comma-separated, e.g.
    /// `10.244.0.0/16,10.96.0.0/12`). A captured connection to an address inside them
    /// that the mesh view does not know yet (a pod just created) waits for the view up to
    /// `--unknown-destination-wait-ms` instead of leaving as plain TCP at once. Empty:
    /// unknown destinations pass through without waiting (counted and logged).
    #[arg(long, value_delimiter = ',', env = "MESH_CLUSTER_CIDRS")]
    pub cluster_cidrs: Vec<crate::cli::Cidr>,

    /// How long a connection to an unknown address inside `--cluster-cidrs` waits for
    /// the view to learn it before passthrough, in milliseconds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub unknown_destination_wait_ms: u64,

    /// One line per connection the mesh data path carries or refuses (the waypoint's
    /// flag): `text` through the log (target `mesh_node::access`), `json` one object per
    /// line on stdout, `off` none.
    #[arg(long, env = "MESH_ACCESS_LOG_FORMAT", value_enum, default_value = "text")]
    pub access_log_format: mesh_common::telemetry::access_log::AccessLogFormat,
}

fn fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if f > 0.0 && f < 1.0 {
        Ok(f)
    } else {
        Err(format!("{f} must be strictly between 0 and 1"))
    }
}
