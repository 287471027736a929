//! [`Cluster`]: a topology brought to life as network namespaces, veths, routes and
//! cgroups, torn down when dropped. Wiring is in `wiring`, processes and sockets in
//! `workloads`.

mod info;
mod wiring;
mod workloads;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_common::model::k8s::{Namespace, Pod};
use mesh_common::model::parse_documents;
use mesh_common::model::{ObjectMeta, Resource};

pub use info::{NodeInfo, PodInfo};

use super::names::Names;
use super::topology::{NodeSpec, PodSpec, Topology};
use super::{HarnessError, hostfs, ip, owner, teardown};

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
pub(super) const MAX_POD_INDEX: u32 = 99_999;

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
        let prefix = owner::claim_prefix(options.prefix.as_deref())?;
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
            cgroup: self.cgroup_dir.join(self.names.pod_cgroup(&pod.namespace, &pod.name)),
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
        self.topology.nodes().iter().map(|n| self.node_info(n)).collect()
    }

    /// One node by name.
    pub fn node(&self, name: &str) -> Result<NodeInfo, HarnessError> {
        let spec = self.topology.node(name).ok_or_else(|| HarnessError::UnknownNode {
            prefix: self.names.prefix.clone(),
            name: name.into(),
        })?;
        Ok(self.node_info(spec))
    }

    /// All pods, sorted by namespace then name.
    pub fn pods(&self) -> Vec<PodInfo> {
        self.topology.pods().filter_map(|p| self.pod_info_of(p)).collect()
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
        let index = *self.pod_index.get(&(pod.namespace.clone(), pod.name.clone()))?;
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
                    tracing::warn!("rolling back pod {}/{}: {cleanup}", spec.namespace, spec.name);
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
        let Some(index) = self.pod_index.remove(&(namespace.to_owned(), name.to_owned())) else {
            return Ok(());
        };
        let info = self.pod_info(&spec, index);
        tracing::info!(pod = %format!("{namespace}/{name}"), "removing pod");
        let left = super::cgroup::stop_all(&info.cgroup, Duration::from_secs(2), Duration::from_secs(5));
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
        Ok(self.topology.namespace_mut(namespace).expect("inserted above"))
    }

    /// Marks a pod ready or not ready (its `Ready` condition), as a failing readiness
    /// probe would. Takes effect for daemons at the next [`Cluster::write_config`].
    pub fn set_pod_ready(&mut self, namespace: &str, name: &str, ready: bool) -> Result<(), HarnessError> {
        self.pod(namespace, name)?;
        self.topology.set_pod_ready(namespace, name, ready);
        Ok(())
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
        writeln!(f, "cluster {} (fabric netns {})", self.prefix(), self.fabric_netns())?;
        let pods: Vec<_> = self
            .pods()
            .into_iter()
            .map(|p| (format!("{}/{}", p.namespace, p.name), p))
            .collect();
        let nodes = self.nodes();
        let width = pods
            .iter()
            .map(|(n, _)| n.len())
            .chain(nodes.iter().map(|n| n.name.len()))
            .max()
            .unwrap_or(0);
        for node in &nodes {
            let (name, ip, index) = (&node.name, node.ip, node.index);
            writeln!(
                f,
                "  node {name:<width$}  {ip:<15} pods 198.18.{index}.0/24, netns {}",
                node.netns
            )?;
        }
        for (name, pod) in &pods {
            let (ip, node, sa) = (pod.ip, &pod.node, &pod.service_account);
            writeln!(f, "  pod  {name:<width$}  {ip:<15} on {node}, service account {sa}")?;
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
