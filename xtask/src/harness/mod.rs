//! The local cluster harness: nodes and pods as network namespaces and cgroups on
//! this machine, for the demo and for every e2e test.
//!
//! # Topology
//! Kubernetes-shaped multi-document YAML ([`Topology::parse`]):
//! `Node` objects (in order: node N), `Namespace` objects (annotations and labels
//! are kept and written back by [`Cluster::write_config`]), and `Pod` objects with
//! `metadata.namespace`, `metadata.name`, `metadata.labels`, `spec.nodeName`
//! (required) and `spec.serviceAccountName` (default `default`). A pod whose
//! namespace has no Namespace object gets one implicitly. Other kinds are ignored.
//! Every problem is reported before anything is created, naming object and field,
//! e.g. `Pod a/x: spec.nodeName: unknown node "n9"`.
//!
//! # Network
//! ```text
//!   pod netns                node N netns                        fabric netns
//!   <p>e<k> 198.18.N.x/32 ── <p>v<k> 198.18.N.1/32   <p>n<N> 198.18.0.N/24 ── <p>b<N> ─ bridge <p>xbr
//!   default via 198.18.N.1   route 198.18.N.x/32 dev <p>v<k>
//!                            route 198.18.M.0/24 via 198.18.0.M (other nodes), ip_forward=1
//! ```
//! Pods reach pods on any node; Service VIPs (198.19.0.0/16) leave the pod through its
//! node and get no answer unless the mesh captures them. The host's netns and its
//! sysctls are never touched; every veth is created directly inside the cluster's
//! namespaces.
//!
//! # Names
//! Everything carries the cluster prefix ([`Cluster::prefix`], `mh` + 5 random
//! characters): netns `<p>-fabric`, `<p>-node-<node>`, `<p>-pod-<ns>.<pod>`;
//! cgroups `<cgroup2>/mesh-harness/<p>/{node-<node>,pod-<ns>.<pod>}`; bpffs
//! `/sys/fs/bpf/<p>/<node>`; state `$TMPDIR/mesh-harness/<p>`.
//!
//! # Use
//! ```no_run
//! # fn main() -> Result<(), xtask::harness::HarnessError> {
//! use std::process::Command;
//! use std::time::Duration;
//! use xtask::harness::{self, Cluster};
//!
//! let mut cluster = Cluster::from_file("samples/bookinfo/platform/topology.yaml".as_ref())?;
//! println!("{cluster}"); // nodes, pods, addresses
//! let config = cluster.state_dir().join("config");
//! cluster.write_config(&config)?; // Namespaces, Nodes, Pods (+ podIP, netns/cgroup paths)
//! let mut daemon = Command::new(harness::bin_path("mesh-node")?);
//! daemon.args(["run", "--node", "node1", "--config-dir"]).arg(&config);
//! let _node1 = cluster.spawn_on_node("node1", daemon)?; // node netns + node cgroup
//! cluster.wait_tcp_on_node("node1", ([127, 0, 0, 1], 15021).into(), Duration::from_secs(10))?;
//! let app = cluster.spawn_in_pod("bookinfo", "details-v1", Command::new("sleep").arg("60"))?;
//! let listener = cluster.listen_in_pod("bookinfo", "ratings-v1", 9080)?; // a socket in that netns
//! cluster.add_pod(harness::pod("bookinfo", "extra", "node2"))?;
//! cluster.set_namespace_annotation("bookinfo", "mesh.io/dataplane-mode", Some("ambient"))?;
//! cluster.write_config(&config)?;
//! # drop((app, listener)); Ok(()) }
//! ```
//!
//! # Cleanup
//! Dropping a [`Cluster`] (also while unwinding from a panic) removes all of it.
//! [`clean_leftovers`] removes what killed processes left behind; the demo calls
//! [`install_shutdown_handler`] so Ctrl-C ends its loop and the drop runs.

mod cgroup;
mod clean;
mod cluster;
mod config;
mod error;
pub mod fabric;
mod hostfs;
mod ip;
mod metrics;
mod names;
mod netns;
mod owner;
mod poll;
mod process;
mod shutdown;
mod teardown;
mod topology;

use std::path::PathBuf;

use mesh_common::model::ObjectMeta;
use mesh_common::model::k8s::Pod;

pub use clean::{CleanOptions, CleanReport, all_leftovers, clean_leftovers, clean_leftovers_with};
pub use cluster::{Cluster, ClusterOptions, NodeInfo, PodInfo, RUN_TIMEOUT};
pub use config::{TOPOLOGY_FILE, render as render_config};
pub use error::HarnessError;
pub use fabric::FabricCapture;
pub use hostfs::{BPFFS_MOUNT, NETNS_DIR, cgroup2_root, ensure_bpffs};
pub use mesh_common::model::k8s::{LOCAL_CGROUP_ANNOTATION, LOCAL_NETNS_ANNOTATION};
pub use metrics::metric_sum;
pub use names::{TAG, is_prefix, new_prefix};
pub use netns::in_netns;
pub use poll::{POLL_INTERVAL, Ticker, wait_for, wait_until};
pub use process::{
    DEFAULT_STOP_TIMEOUT, ProcessGuard, Signal, cgroup_of, netns_id_of_path, netns_id_of_pid, test_helper,
};
pub use shutdown::{Shutdown, install_shutdown_handler};
pub use teardown::leftovers;
pub use topology::{CLUSTER_CIDRS, FABRIC_SERVICE_IP, LOCAL_IP_ANNOTATION, NodeSpec, PodSpec, Topology};

/// A Pod object for [`Cluster::add_pod`]: `namespace/name` on `node`. Add labels
/// or annotations through its `metadata` before passing it in.
pub fn pod(namespace: &str, name: &str, node: &str) -> Pod {
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    };
    pod.spec.node_name = Some(node.into());
    pod
}

/// Path of a workspace binary (e.g. `mesh-node`) next to the running executable:
/// `target/<profile>/NAME`, also when called from a test in `target/<profile>/deps/`.
pub fn bin_path(name: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|e| HarnessError::sys("finding the current executable", e))?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::BinaryMissing {
            name: name.into(),
            path,
        })
    }
}
