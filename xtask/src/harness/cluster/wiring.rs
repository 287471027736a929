//! The network of a cluster: the fabric bridge, node uplinks and routes, pod veths
//! and routes. Every `ip` command targets one of the cluster's own namespaces.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use super::super::topology::{FABRIC_SERVICE_IP, NodeSpec, PodSpec};
use super::super::{HarnessError, NETNS_DIR, ip, netns};
use super::{Cluster, MAX_POD_INDEX, PodInfo};

impl Cluster {
    /// Puts [`FABRIC_SERVICE_IP`] on the fabric bridge, with routes back to every
    /// node's pods, and returns a function that binds `FABRIC_SERVICE_IP:port` there
    /// (callable again, e.g. to restart a server on the same address). Reachable from
    /// every node and pod; only the cluster's own namespaces change.
    pub fn fabric_binder(
        &self,
        port: u16,
    ) -> Result<impl Fn() -> std::io::Result<TcpListener> + Send + Sync + 'static, HarnessError> {
        let netns = self.names.fabric_netns();
        let mut lines = vec![format!(
            "addr replace {FABRIC_SERVICE_IP}/24 dev {}",
            self.names.bridge()
        )];
        for node in self.topology.nodes() {
            let (net, len) = node.pod_cidr();
            lines.push(format!("route replace {net}/{len} via {}", node.fabric_ip()));
        }
        ip::batch(&netns, &lines)?;
        let path = Path::new(NETNS_DIR).join(&netns);
        let addr = SocketAddr::from((FABRIC_SERVICE_IP, port));
        Ok(move || netns::in_netns(&path, || TcpListener::bind(addr)).map_err(std::io::Error::other)?)
    }

    pub(super) fn create_fabric(&mut self) -> Result<(), HarnessError> {
        let netns = self.names.fabric_netns();
        tracing::info!(%netns, "fabric: bridge {}", self.names.bridge());
        ip::netns_add(&netns)?;
        self.step("fabric netns")?;
        let br = self.names.bridge();
        ip::batch(
            &netns,
            &[
                "link set lo up".into(),
                format!("link add {br} type bridge"),
                format!("link set {br} up"),
            ],
        )
    }

    pub(super) fn create_node(&mut self, node: &NodeSpec, all: &[NodeSpec]) -> Result<(), HarnessError> {
        let info = self.node_info(node);
        tracing::info!(node = %node.name, ip = %info.ip, netns = %info.netns, "creating node");
        ip::netns_add(&info.netns)?;
        self.make_dir(&info.cgroup)?;
        self.make_dir(&info.bpf_dir)?;
        self.make_dir(&info.state_dir)?;
        self.step(&format!("node {}", node.name))?;
        let (port, uplink) = (self.names.fabric_port(node.index), &info.uplink);
        ip::batch(
            &self.names.fabric_netns(),
            &[
                format!("link add {port} type veth peer name {uplink} netns {}", info.netns),
                format!("link set {port} master {}", self.names.bridge()),
                format!("link set {port} up"),
            ],
        )?;
        let mut lines = vec![
            "link set lo up".into(),
            format!("addr add {}/24 dev {uplink}", info.ip),
            format!("link set {uplink} up"),
        ];
        for other in all.iter().filter(|o| o.index != node.index) {
            let (net, len) = other.pod_cidr();
            lines.push(format!("route add {net}/{len} via {} dev {uplink}", other.fabric_ip()));
        }
        ip::batch(&info.netns, &lines)?;
        netns::write_sysctl(&info.netns_path, "net/ipv4/ip_forward", "1")
    }

    pub(super) fn create_pod(&mut self, pod: &PodSpec) -> Result<PodInfo, HarnessError> {
        if self.next_pod_index > MAX_POD_INDEX {
            return Err(HarnessError::sys(
                "allocating a pod interface index",
                std::io::Error::other("cluster ran out of pod indexes"),
            ));
        }
        let index = self.next_pod_index;
        self.next_pod_index += 1;
        self.pod_index.insert((pod.namespace.clone(), pod.name.clone()), index);
        let info = self.pod_info(pod, index);
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), node = %pod.node, ip = %pod.ip, "creating pod");
        ip::netns_add(&info.netns)?;
        self.make_dir(&info.cgroup)?;
        self.step(&format!("pod {}/{}", pod.namespace, pod.name))?;
        let node_netns = self.names.node_netns(&pod.node);
        let (host, iface, gw) = (&info.host_iface, &info.iface, info.gateway_ip);
        ip::batch(
            &node_netns,
            &[
                format!("link add {host} type veth peer name {iface} netns {}", info.netns),
                format!("addr add {gw}/32 dev {host}"),
                format!("link set {host} up"),
                // `replace`: a removed pod whose netns a socket still holds keeps its old route.
                format!("route replace {}/32 dev {host}", pod.ip),
            ],
        )?;
        ip::batch(
            &info.netns,
            &[
                "link set lo up".into(),
                format!("addr add {}/32 dev {iface}", pod.ip),
                format!("link set {iface} up"),
                format!("route add {gw}/32 dev {iface} scope link"),
                format!("route add default via {gw} dev {iface}"),
            ],
        )?;
        Ok(info)
    }
}
