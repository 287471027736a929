//! [`Cluster`]: a topology brought to life as network namespaces, veths, routes and
//! cgroups, torn down when dropped.

use std::borrow::BorrowMut;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mesh_common::model::k8s::{Namespace, Pod};
use mesh_common::model::parse_documents;
use mesh_common::model::{ObjectMeta, Resource};

use super::names::{self, Names};
use super::process::{self, Placement, ProcessGuard};
use super::topology::{NodeSpec, PodSpec, Topology};
use super::{HarnessError, hostfs, ip, netns, owner, teardown};

/// How long [`Cluster::run_in_pod`] lets a command run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for [`Cluster::create`]. The defaults suit tests and the demo.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Use this prefix instead of a random one; it must match the harness pattern
    /// (`mh` + 5 of `[0-9a-z]`) and not be in use.
    pub prefix: Option<String>,
    /// Test hook: fail creation after this many steps, to check the rollback.
    #[doc(hidden)]
    pub fail_after_steps: Option<usize>,
}

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

/// A local cluster: one netns + cgroup per node and per pod, a fabric netns with a
/// bridge joining the nodes, veth pairs pod↔node and routes so that every pod
/// reaches every other pod. Nothing is added to the host's own netns.
///
/// Dropping the cluster (also during a panic) stops its processes by PID and
/// removes its namespaces, veths, cgroups, bpffs dir and state dir.
///
/// ```no_run
/// # fn main() -> Result<(), xtask::harness::HarnessError> {
/// use xtask::harness::Cluster;
/// let cluster = Cluster::from_yaml(r#"
/// apiVersion: v1
/// kind: Node
/// metadata: {name: node1}
/// ---
/// apiVersion: v1
/// kind: Pod
/// metadata: {name: client, namespace: demo}
/// spec: {nodeName: node1}
/// "#)?;
/// let out = cluster.run_in_pod("demo", "client", std::process::Command::new("true"))?;
/// assert!(out.status.success());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Cluster {
    names: Names,
    topology: Topology,
    cgroup_dir: PathBuf,
    bpf_dir: PathBuf,
    state_dir: PathBuf,
    /// Interface index of each live pod (never reused, so names never clash).
    pod_index: BTreeMap<(String, String), u32>,
    next_pod_index: u32,
    steps: usize,
    fail_after_steps: Option<usize>,
    torn_down: bool,
}

/// The largest pod index whose interface names still fit in 15 bytes.
const MAX_POD_INDEX: u32 = 99_999;

impl Cluster {
    /// Parses, validates and creates the topology in `yaml` (see [`Topology::parse`]).
    pub fn from_yaml(yaml: &str) -> Result<Cluster, HarnessError> {
        Self::create(Topology::parse(yaml)?, ClusterOptions::default())
    }

    /// [`Cluster::from_yaml`] with options.
    pub fn from_yaml_with(yaml: &str, options: ClusterOptions) -> Result<Cluster, HarnessError> {
        Self::create(Topology::parse(yaml)?, options)
    }

    /// Reads, validates and creates the topology in the YAML file `path` (errors
    /// name the file).
    pub fn from_file(path: &Path) -> Result<Cluster, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(|e| HarnessError::io("read", path, e))?;
        Self::create(
            Topology::parse_named(&path.display().to_string(), &text)?,
            ClusterOptions::default(),
        )
    }

    /// Creates `topology`. On any failure, everything created so far is removed
    /// before the error is returned.
    pub fn create(topology: Topology, options: ClusterOptions) -> Result<Cluster, HarnessError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(HarnessError::NotRoot);
        }
        let bpffs = hostfs::ensure_bpffs()?;
        let cgroup_root = hostfs::harness_cgroup_root()?;
        let prefix = reserve_prefix(options.prefix.as_deref())?;
        let mut cluster = Cluster {
            cgroup_dir: cgroup_root.join(&prefix),
            bpf_dir: bpffs.join(&prefix),
            state_dir: hostfs::state_root().join(&prefix),
            names: Names { prefix },
            topology: Topology::default(),
            pod_index: BTreeMap::new(),
            next_pod_index: 1,
            steps: 0,
            fail_after_steps: options.fail_after_steps,
            torn_down: false,
        };
        // On error `cluster` drops here, which removes whatever was created.
        cluster.build(topology)?;
        Ok(cluster)
    }

    fn build(&mut self, topology: Topology) -> Result<(), HarnessError> {
        let prefix = self.names.prefix.clone();
        tracing::info!(%prefix, nodes = topology.nodes().len(), pods = topology.pods().count(), "creating local cluster");
        // `_all`: `clean_leftovers` may remove the shared parent when it sees it empty.
        std::fs::create_dir_all(&self.cgroup_dir)
            .map_err(|e| HarnessError::io("create cgroup", &self.cgroup_dir, e))?;
        self.step("cluster cgroup")?;
        self.make_dir(&self.bpf_dir.clone())?;
        self.create_fabric()?;
        let nodes: Vec<NodeSpec> = topology.nodes().to_vec();
        for node in &nodes {
            self.create_node(node, &nodes)?;
        }
        let pods: Vec<PodSpec> = topology.pods().cloned().collect();
        self.topology = topology;
        for pod in &pods {
            self.create_pod(pod)?;
        }
        tracing::info!(%prefix, "local cluster ready");
        Ok(())
    }

    /// Marks one object as (partly) created; the test hook fails here, so rollback
    /// is exercised with half-made objects in place.
    fn step(&mut self, what: &str) -> Result<(), HarnessError> {
        self.steps += 1;
        if self.fail_after_steps.is_some_and(|n| self.steps > n) {
            return Err(HarnessError::sys(
                format!("{what} (injected failure)"),
                std::io::Error::other("test hook"),
            ));
        }
        tracing::debug!(prefix = %self.names.prefix, "{what}");
        Ok(())
    }

    fn make_dir(&mut self, dir: &Path) -> Result<(), HarnessError> {
        std::fs::create_dir_all(dir).map_err(|e| HarnessError::io("create", dir, e))
    }

    fn create_fabric(&mut self) -> Result<(), HarnessError> {
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

    fn create_node(&mut self, node: &NodeSpec, all: &[NodeSpec]) -> Result<(), HarnessError> {
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
                format!(
                    "link add {port} type veth peer name {uplink} netns {}",
                    info.netns
                ),
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
            lines.push(format!(
                "route add {net}/{len} via {} dev {uplink}",
                other.fabric_ip()
            ));
        }
        ip::batch(&info.netns, &lines)?;
        netns::write_sysctl(&info.netns_path, "net/ipv4/ip_forward", "1")
    }

    fn create_pod(&mut self, pod: &PodSpec) -> Result<PodInfo, HarnessError> {
        if self.next_pod_index > MAX_POD_INDEX {
            return Err(HarnessError::sys(
                "allocating a pod interface index",
                std::io::Error::other("cluster ran out of pod indexes"),
            ));
        }
        let index = self.next_pod_index;
        self.next_pod_index += 1;
        self.pod_index
            .insert((pod.namespace.clone(), pod.name.clone()), index);
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
                format!(
                    "link add {host} type veth peer name {iface} netns {}",
                    info.netns
                ),
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

    fn node_info(&self, node: &NodeSpec) -> NodeInfo {
        let netns = self.names.node_netns(&node.name);
        NodeInfo {
            name: node.name.clone(),
            index: node.index,
            ip: node.fabric_ip(),
            gateway_ip: node.gateway_ip(),
            labels: node.labels.clone(),
            netns_path: Path::new(hostfs::NETNS_DIR).join(&netns),
            netns,
            cgroup: self.cgroup_dir.join(self.names.node_cgroup(&node.name)),
            bpf_dir: self.bpf_dir.join(&node.name),
            state_dir: self.state_dir.join(format!("node-{}", node.name)),
            uplink: self.names.node_uplink(node.index),
        }
    }

    fn pod_info(&self, pod: &PodSpec, index: u32) -> PodInfo {
        let netns = self.names.pod_netns(&pod.namespace, &pod.name);
        let [a, b, c, _] = pod.ip.octets();
        PodInfo {
            spec: pod.clone(),
            gateway_ip: Ipv4Addr::new(a, b, c, 1),
            netns_path: Path::new(hostfs::NETNS_DIR).join(&netns),
            netns,
            cgroup: self
                .cgroup_dir
                .join(self.names.pod_cgroup(&pod.namespace, &pod.name)),
            iface: self.names.pod_veth(index),
            host_iface: self.names.pod_host_veth(index),
        }
    }

    // ---- accessors ----

    /// The cluster prefix every object name starts with (e.g. `mh3k9zq`).
    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    /// The validated topology (nodes, namespaces with annotations, pods).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The cluster's bpffs directory, `/sys/fs/bpf/<prefix>` (per-node dirs below it).
    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    /// The cluster's state directory (removed at teardown).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The cluster's cgroup2 directory (node and pod cgroups are its children).
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup_dir
    }

    /// The fabric netns name.
    pub fn fabric_netns(&self) -> String {
        self.names.fabric_netns()
    }

    /// All nodes, in topology order.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.topology
            .nodes()
            .iter()
            .map(|n| self.node_info(n))
            .collect()
    }

    /// One node by name.
    pub fn node(&self, name: &str) -> Result<NodeInfo, HarnessError> {
        let spec = self
            .topology
            .node(name)
            .ok_or_else(|| HarnessError::UnknownNode {
                prefix: self.names.prefix.clone(),
                name: name.into(),
            })?;
        Ok(self.node_info(spec))
    }

    /// All pods, sorted by namespace then name.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.topology
            .pods()
            .filter_map(|p| self.pod_info_of(p))
            .collect()
    }

    /// One pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<PodInfo, HarnessError> {
        self.topology
            .pod(namespace, name)
            .and_then(|p| self.pod_info_of(p))
            .ok_or_else(|| HarnessError::UnknownPod {
                prefix: self.names.prefix.clone(),
                namespace: namespace.into(),
                name: name.into(),
            })
    }

    fn pod_info_of(&self, pod: &PodSpec) -> Option<PodInfo> {
        let index = *self
            .pod_index
            .get(&(pod.namespace.clone(), pod.name.clone()))?;
        Some(self.pod_info(pod, index))
    }

    /// All namespaces (declared or implied by pods), with their annotations.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.topology.namespaces().cloned().collect()
    }

    // ---- dynamic changes ----

    /// Adds and creates a pod (see [`pod`](super::pod) to build one). Its namespace
    /// is created implicitly when unknown. On failure nothing of the pod remains.
    pub fn add_pod(&mut self, pod: Pod) -> Result<PodInfo, HarnessError> {
        let spec = self.topology.add_pod(pod)?.clone();
        match self.create_pod(&spec) {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(cleanup) = self.destroy_pod(&spec.namespace, &spec.name) {
                    tracing::warn!(
                        "rolling back pod {}/{}: {cleanup}",
                        spec.namespace,
                        spec.name
                    );
                }
                Err(e)
            }
        }
    }

    /// Adds every Pod in `yaml` (other kinds are errors); stops at the first failure.
    pub fn add_pods_yaml(&mut self, yaml: &str) -> Result<Vec<PodInfo>, HarnessError> {
        let mut pods = Vec::new();
        for doc in parse_documents("pod", yaml) {
            match doc? {
                Resource::Pod(p) => pods.push(p),
                other => {
                    let object = other.object_ref();
                    return Err(mesh_common::model::ConfigError::invalid(
                        &object,
                        "kind",
                        "only Pods can be added to a running cluster",
                    )
                    .into());
                }
            }
        }
        pods.into_iter().map(|p| self.add_pod(p)).collect()
    }

    /// Stops the pod's processes (SIGTERM, then SIGKILL) and removes its netns,
    /// veth and cgroup. Its address becomes free for later pods.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> Result<(), HarnessError> {
        self.pod(namespace, name)?;
        self.destroy_pod(namespace, name)
    }

    fn destroy_pod(&mut self, namespace: &str, name: &str) -> Result<(), HarnessError> {
        let Some(spec) = self.topology.remove_pod(namespace, name) else {
            return Ok(());
        };
        let Some(index) = self
            .pod_index
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return Ok(());
        };
        let info = self.pod_info(&spec, index);
        tracing::info!(pod = %format!("{namespace}/{name}"), "removing pod");
        let left =
            super::cgroup::stop_all(&info.cgroup, Duration::from_secs(2), Duration::from_secs(5));
        if !left.is_empty() {
            return Err(HarnessError::Teardown {
                prefix: self.names.prefix.clone(),
                leftovers: vec![format!("processes {left:?}")],
            });
        }
        if ip::netns_list().contains(&info.netns) {
            ip::netns_del(&info.netns)?;
        }
        super::cgroup::remove_tree(&info.cgroup, Duration::from_secs(5))
    }

    /// Sets (`Some`) or removes (`None`) an annotation of a namespace, creating the
    /// namespace when unknown. Takes effect for daemons at the next [`Cluster::write_config`].
    pub fn set_namespace_annotation(
        &mut self,
        namespace: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), HarnessError> {
        let annotations = &mut self.namespace_entry(namespace)?.metadata.annotations;
        match value {
            Some(v) => annotations.insert(key.into(), v.into()),
            None => annotations.remove(key),
        };
        Ok(())
    }

    /// The namespace `namespace` for editing its labels or annotations, created when
    /// unknown. Changes reach daemons at the next [`Cluster::write_config`].
    pub fn namespace_mut(&mut self, namespace: &str) -> Result<&mut Namespace, HarnessError> {
        self.namespace_entry(namespace)
    }

    fn namespace_entry(&mut self, namespace: &str) -> Result<&mut Namespace, HarnessError> {
        if self.topology.namespace(namespace).is_none() {
            let meta = ObjectMeta {
                name: namespace.into(),
                ..ObjectMeta::default()
            };
            self.topology.add_namespace(Namespace { metadata: meta })?;
        }
        Ok(self
            .topology
            .namespace_mut(namespace)
            .expect("inserted above"))
    }

    // ---- processes and sockets ----

    fn pod_place(&self, namespace: &str, name: &str) -> Result<Placement, HarnessError> {
        let pod = self.pod(namespace, name)?;
        Ok(Placement {
            netns_path: pod.netns_path,
            cgroup_dir: pod.cgroup,
            label: format!("pod {namespace}/{name}"),
        })
    }

    fn node_place(&self, node: &str) -> Result<Placement, HarnessError> {
        let n = self.node(node)?;
        Ok(Placement {
            netns_path: n.netns_path,
            cgroup_dir: n.cgroup,
            label: format!("node {node}"),
        })
    }

    /// Starts `cmd` inside the pod: in its cgroup and netns. `cmd` may be a
    /// `Command` or `&mut Command` (reusing one adds another pre-exec hook each time).
    pub fn spawn_in_pod(
        &self,
        namespace: &str,
        name: &str,
        cmd: impl BorrowMut<Command>,
    ) -> Result<ProcessGuard, HarnessError> {
        process::spawn(&self.pod_place(namespace, name)?, cmd)
    }

    /// Starts `cmd` on the node (its netns and cgroup): how daemons are run.
    pub fn spawn_on_node(
        &self,
        node: &str,
        cmd: impl BorrowMut<Command>,
    ) -> Result<ProcessGuard, HarnessError> {
        process::spawn(&self.node_place(node)?, cmd)
    }

    /// Runs `cmd` in the pod to completion (at most [`RUN_TIMEOUT`]) and returns its
    /// output. A non-zero exit is not an error: check `status`.
    pub fn run_in_pod(
        &self,
        namespace: &str,
        name: &str,
        cmd: impl BorrowMut<Command>,
    ) -> Result<Output, HarnessError> {
        process::run(&self.pod_place(namespace, name)?, cmd, RUN_TIMEOUT)
    }

    /// Runs `cmd` on the node to completion (at most [`RUN_TIMEOUT`]).
    pub fn run_on_node(
        &self,
        node: &str,
        cmd: impl BorrowMut<Command>,
    ) -> Result<Output, HarnessError> {
        process::run(&self.node_place(node)?, cmd, RUN_TIMEOUT)
    }

    /// Runs `f` on a thread inside the pod's netns (not its cgroup: sockets made
    /// there belong to the calling process's cgroup, so cgroup eBPF hooks of the
    /// pod do not apply to them; spawn a process for captured traffic).
    pub fn in_pod<T: Send>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, HarnessError> {
        netns::in_netns(&self.pod(namespace, name)?.netns_path, f)
    }

    /// Runs `f` on a thread inside the node's netns.
    pub fn in_node<T: Send>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, HarnessError> {
        netns::in_netns(&self.node(node)?.netns_path, f)
    }

    /// A TCP listener on `0.0.0.0:port` inside the pod's netns (port 0: any).
    pub fn listen_in_pod(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Result<TcpListener, HarnessError> {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        self.in_pod(namespace, name, || TcpListener::bind(addr))?
            .map_err(|e| HarnessError::sys(format!("bind {addr} in pod {namespace}/{name}"), e))
    }

    /// A TCP connection to `addr` made from inside the pod's netns (source: the pod IP).
    pub fn connect_from_pod(
        &self,
        namespace: &str,
        name: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, HarnessError> {
        self.in_pod(namespace, name, || {
            TcpStream::connect_timeout(&addr, timeout)
        })?
        .map_err(|e| HarnessError::sys(format!("connect to {addr} from pod {namespace}/{name}"), e))
    }

    /// Polls until a TCP connect to `addr` from inside the netns at `netns_path`
    /// succeeds (e.g. a daemon's readiness port), or fails with a timeout error.
    fn wait_tcp(
        &self,
        netns_path: &Path,
        place: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let deadline = std::time::Instant::now() + timeout;
        let ready = netns::in_netns(netns_path, || {
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if TcpStream::connect_timeout(
                    &addr,
                    left.clamp(Duration::from_millis(1), Duration::from_millis(200)),
                )
                .is_ok()
                {
                    return true;
                }
                if left.is_zero() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20).min(left));
            }
        })?;
        if ready {
            Ok(())
        } else {
            Err(HarnessError::Timeout {
                what: format!("waiting for {addr} to accept from {place}"),
                timeout,
            })
        }
    }

    /// Waits until `addr` accepts TCP connections from the node's netns (e.g. the
    /// node daemon's readiness port `127.0.0.1:15021`).
    pub fn wait_tcp_on_node(
        &self,
        node: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_tcp(
            &self.node(node)?.netns_path,
            &format!("node {node}"),
            addr,
            timeout,
        )
    }

    /// Waits until `addr` accepts TCP connections from the pod's netns.
    pub fn wait_tcp_in_pod(
        &self,
        namespace: &str,
        name: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_tcp(
            &self.pod(namespace, name)?.netns_path,
            &format!("pod {namespace}/{name}"),
            addr,
            timeout,
        )
    }

    // ---- config and teardown ----

    /// Writes the topology for a local-mode daemon into `dir/`[`TOPOLOGY_FILE`](super::TOPOLOGY_FILE)
    /// (atomically) and returns the file's path: Namespaces with their annotations,
    /// Nodes, and Pods with `status.podIP` and the [`LOCAL_NETNS_ANNOTATION`](super::LOCAL_NETNS_ANNOTATION)
    /// / [`LOCAL_CGROUP_ANNOTATION`](super::LOCAL_CGROUP_ANNOTATION) paths. Call it again
    /// after adding/removing pods or changing namespaces.
    pub fn write_config(&self, dir: &Path) -> Result<PathBuf, HarnessError> {
        super::config::write(self, dir)
    }

    /// Tears the cluster down now and reports what could not be removed
    /// (dropping does the same but can only log).
    pub fn shutdown(mut self) -> Result<(), HarnessError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), HarnessError> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Ok(());
        }
        let prefix = self.names.prefix.clone();
        tracing::info!(%prefix, "tearing down local cluster");
        let failures = teardown::remove_prefix(&prefix);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(HarnessError::Teardown {
                prefix,
                leftovers: failures,
            })
        }
    }
}

/// Nodes and pods with their addresses, one per line (what the demo prints).
impl std::fmt::Display for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cluster {} (fabric netns {})",
            self.prefix(),
            self.fabric_netns()
        )?;
        for node in self.nodes() {
            writeln!(
                f,
                "  node {:<12} {:<15} pods 198.18.{}.0/24  netns {}",
                node.name, node.ip, node.index, node.netns
            )?;
        }
        for pod in self.pods() {
            let pod_name = format!("{}/{}", pod.namespace, pod.name);
            writeln!(
                f,
                "  pod  {pod_name:<28} {:<15} on {:<8} sa {}",
                pod.ip, pod.node, pod.service_account
            )?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!("{e}");
            eprintln!("mesh harness: {e}; run `cargo xtask clean` to remove leftovers");
        }
    }
}

/// Claims a prefix by creating its state directory, owner record included, in one
/// atomic rename: two processes never get the same prefix, and `clean_leftovers`
/// never sees a cluster of a live process without its owner record.
fn reserve_prefix(wanted: Option<&str>) -> Result<String, HarnessError> {
    if let Some(prefix) = wanted
        && !names::is_prefix(prefix)
    {
        return Err(HarnessError::sys(
            format!("using cluster prefix {prefix:?}"),
            std::io::Error::other(format!(
                "a prefix is `{}` followed by {} of [0-9a-z]",
                names::TAG,
                names::ID_LEN
            )),
        ));
    }
    let root = hostfs::state_root();
    std::fs::create_dir_all(&root).map_err(|e| HarnessError::io("create", &root, e))?;
    let tmp = root.join(format!(".new-{}", names::new_prefix()));
    std::fs::create_dir(&tmp).map_err(|e| HarnessError::io("create", &tmp, e))?;
    let claimed = owner::record(&tmp).and_then(|()| claim(&root, &tmp, wanted));
    let _ = std::fs::remove_dir_all(&tmp);
    claimed
}

fn claim(root: &Path, tmp: &Path, wanted: Option<&str>) -> Result<String, HarnessError> {
    let attempts = if wanted.is_some() { 1 } else { 16 };
    let mut last_err = None;
    for _ in 0..attempts {
        let prefix = wanted.map_or_else(names::new_prefix, str::to_owned);
        let dir = root.join(&prefix);
        if dir.exists() {
            last_err = Some(HarnessError::io(
                "claim",
                dir,
                std::io::ErrorKind::AlreadyExists.into(),
            ));
            continue;
        }
        // rename(2) fails if `dir` appeared meanwhile with content (the owner record).
        match std::fs::rename(tmp, &dir) {
            Ok(()) => return Ok(prefix),
            Err(e) => last_err = Some(HarnessError::io("claim", dir, e)),
        }
    }
    Err(last_err.expect("at least one attempt"))
}
