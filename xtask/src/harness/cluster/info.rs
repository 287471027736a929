//! What the harness tells callers about a created node or pod.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::super::topology::PodSpec;

/// A node as created: where it lives and how it is addressed.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    /// 1-based; the node owns `198.18.<index>.0/24`.
    pub index: u8,
    /// Address on the fabric, `198.18.0.<index>`.
    pub ip: Ipv4Addr,
    /// The node's address on every pod veth (pods' default gateway), `198.18.<index>.1`.
    pub gateway_ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    /// Netns name (`ip netns` name) and its path under /run/netns.
    pub netns: String,
    pub netns_path: PathBuf,
    /// cgroup2 directory for the node's daemons.
    pub cgroup: PathBuf,
    /// Per-node bpffs directory for pins, `/sys/fs/bpf/<prefix>/<node>`.
    pub bpf_dir: PathBuf,
    /// Per-node state directory (certificates, sockets...), under the cluster's state dir.
    pub state_dir: PathBuf,
    /// The node's fabric interface (in the node netns).
    pub uplink: String,
}

/// A pod as created: its [`PodSpec`] (namespace, name, node, ip, service account,
/// labels, annotations; reachable through `Deref`, e.g. `pod.ip`) and where it lives.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub spec: PodSpec,
    /// Default gateway (the node's `198.18.N.1`).
    pub gateway_ip: Ipv4Addr,
    pub netns: String,
    pub netns_path: PathBuf,
    pub cgroup: PathBuf,
    /// The pod's interface (in the pod netns).
    pub iface: String,
    /// The node-side end of the pod's veth (in the node netns).
    pub host_iface: String,
}

impl std::ops::Deref for PodInfo {
    type Target = PodSpec;
    fn deref(&self) -> &PodSpec {
        &self.spec
    }
}
