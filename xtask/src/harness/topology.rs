//! The cluster's model, built and validated from Kubernetes-shaped YAML before
//! anything is created: nodes with their fabric addresses, namespaces with their
//! annotations, pods with their node and address.
//!
//! Addressing: node N (1-based, in document order) is `198.18.0.N` on the fabric
//! and its pods live in `198.18.N.0/24`; `198.18.N.1` is the node's gateway address
//! on every pod veth, pods get `.2`–`.254` (lowest free first) unless pinned with
//! the [`LOCAL_IP_ANNOTATION`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mesh_common::model::k8s::{Namespace, Node, Pod};
use mesh_common::model::{ConfigError, ObjectMeta, ObjectRef, Resource, parse_documents};

use super::HarnessError;

/// Pod annotation that pins the pod's address (it must lie in its node's /24).
pub const LOCAL_IP_ANNOTATION: &str = "mesh.io/local-ip";
/// The cluster's pod and Service address ranges (`mesh-node --cluster-cidrs`): pods in
/// `198.18.N.0/24` (N ≥ 1; `198.18.0.0/24` is the fabric, node addresses), Service
/// VIPs in `198.19.0.0/16`.
pub const CLUSTER_CIDRS: &str = "198.18.1.0/24,198.18.2.0/23,198.18.4.0/22,198.18.8.0/21,198.18.16.0/20,198.18.32.0/19,198.18.64.0/18,198.18.128.0/17,198.19.0.0/16";
/// Most nodes a cluster can have (node N owns `198.18.N.0/24`; fabric addresses above
/// go to [`FABRIC_SERVICE_IP`]).
pub const MAX_NODES: usize = 249;
/// On the fabric bridge, outside every node: services a test runs for the whole
/// cluster (the test API server), reachable from nodes and pods.
pub const FABRIC_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 250);
const LOCAL_IP_FIELD: &str = "metadata.annotations[\"mesh.io/local-ip\"]";

/// A node of the topology.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// 1-based position: the node's fabric address is `198.18.0.<index>`.
    pub index: u8,
    pub labels: BTreeMap<String, String>,
}

impl NodeSpec {
    /// Address on the fabric, `198.18.0.N`.
    pub fn fabric_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, self.index)
    }
    /// Gateway address of the node's pods, `198.18.N.1`.
    pub fn gateway_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.index, 1)
    }
    /// The node's pod network, `198.18.N.0/24`, as (network, prefix length).
    pub fn pod_cidr(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(198, 18, self.index, 0), 24)
    }
}

/// A pod of the topology, with its address decided.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The pod's `Ready` condition as written to the daemons' config: true unless the
    /// topology's `status.conditions` says otherwise or [`Cluster::set_pod_ready`](super::Cluster::set_pod_ready) changed it.
    pub ready: bool,
}

/// A validated topology: what [`Cluster`](super::Cluster) creates.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    nodes: Vec<NodeSpec>,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<(String, String), PodSpec>,
    /// Addresses in use (pods and gateways), so pinned and allocated addresses never clash.
    used: BTreeSet<Ipv4Addr>,
}

impl Topology {
    /// Parses and validates `yaml` (multi-document). Kinds other than Namespace,
    /// Node and Pod are ignored. A pod whose namespace has no Namespace object gets
    /// one implicitly (no annotations), as `kubectl create namespace` would.
    /// All problems are reported together, each naming object and field.
    pub fn parse(yaml: &str) -> Result<Topology, HarnessError> {
        Self::parse_named("topology", yaml)
    }

    /// [`Topology::parse`] with `source_name` (e.g. the file path) in YAML errors.
    pub fn parse_named(source_name: &str, yaml: &str) -> Result<Topology, HarnessError> {
        let mut errors = Vec::new();
        let (mut namespaces, mut nodes, mut pods) = (Vec::new(), Vec::new(), Vec::new());
        for doc in parse_documents(source_name, yaml) {
            match doc {
                Ok(Resource::Namespace(ns)) => namespaces.push(ns),
                Ok(Resource::Node(node)) => nodes.push(node),
                Ok(Resource::Pod(pod)) => pods.push(pod),
                Ok(other) => {
                    tracing::debug!(object = %other.object_ref(), "topology: kind ignored by the harness")
                }
                Err(e) => errors.push(e),
            }
        }
        let mut topology = Topology::default();
        for ns in namespaces {
            topology.add_namespace(ns).unwrap_or_else(|e| errors.push(e));
        }
        for node in nodes {
            topology.add_node(node).unwrap_or_else(|e| errors.push(e));
        }
        // Pinned addresses first, so a dynamically allocated pod never takes one.
        let (pinned, dynamic): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .partition(|p| p.metadata.annotations.contains_key(LOCAL_IP_ANNOTATION));
        for pod in pinned.into_iter().chain(dynamic) {
            if let Err(e) = topology.add_pod(pod) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(topology)
        } else {
            Err(HarnessError::Topology(errors))
        }
    }

    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.get(name)
    }

    pub(crate) fn namespace_mut(&mut self, name: &str) -> Option<&mut Namespace> {
        self.namespaces.get_mut(name)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodSpec> {
        self.pods.values()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodSpec> {
        self.pods.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Adds a Namespace object; duplicates and invalid names are errors.
    pub fn add_namespace(&mut self, ns: Namespace) -> Result<(), ConfigError> {
        let object = ObjectRef::new("Namespace", None, &ns.metadata.name);
        check_name(&object, &ns.metadata.name, false)?;
        if self.namespaces.contains_key(&ns.metadata.name) {
            return Err(ConfigError::invalid(&object, "metadata.name", "duplicate Namespace"));
        }
        self.namespaces.insert(ns.metadata.name.clone(), ns);
        Ok(())
    }

    fn add_node(&mut self, node: Node) -> Result<(), ConfigError> {
        let name = node.metadata.name;
        let object = ObjectRef::new("Node", None, &name);
        check_name(&object, &name, true)?;
        if self.node(&name).is_some() {
            return Err(ConfigError::invalid(&object, "metadata.name", "duplicate Node"));
        }
        if self.nodes.len() >= MAX_NODES {
            return Err(ConfigError::invalid(
                &object,
                "metadata.name",
                format!("too many nodes: at most {MAX_NODES}"),
            ));
        }
        let index = u8::try_from(self.nodes.len() + 1).expect("bounded by MAX_NODES");
        let spec = NodeSpec {
            name,
            index,
            labels: node.metadata.labels,
        };
        self.used.insert(spec.gateway_ip());
        self.nodes.push(spec);
        Ok(())
    }

    /// Validates `pod` against the topology, decides its address and adds it.
    /// Its namespace is created implicitly when missing.
    pub fn add_pod(&mut self, pod: Pod) -> Result<&PodSpec, ConfigError> {
        let spec = self.check_pod(pod)?;
        let key = (spec.namespace.clone(), spec.name.clone());
        if !self.namespaces.contains_key(&spec.namespace) {
            let meta = ObjectMeta {
                name: spec.namespace.clone(),
                ..ObjectMeta::default()
            };
            self.namespaces
                .insert(spec.namespace.clone(), Namespace { metadata: meta });
        }
        self.used.insert(spec.ip);
        Ok(self.pods.entry(key).or_insert(spec))
    }

    fn check_pod(&self, pod: Pod) -> Result<PodSpec, ConfigError> {
        let ready = pod.is_ready();
        let meta = pod.metadata;
        let namespace = meta.namespace_or_default().to_owned();
        let object = ObjectRef::new("Pod", Some(&namespace), &meta.name);
        check_name(&object, &meta.name, true)?;
        if !self.namespaces.contains_key(&namespace) {
            check_name(&object, &namespace, false).map_err(|_| {
                ConfigError::invalid(
                    &object,
                    "metadata.namespace",
                    "must be a DNS label ([a-z0-9-], at most 63)",
                )
            })?;
        }
        if self.pod(&namespace, &meta.name).is_some() {
            return Err(ConfigError::invalid(
                &object,
                "metadata.name",
                "duplicate Pod in this namespace",
            ));
        }
        let node_name = pod.spec.node_name.ok_or_else(|| {
            ConfigError::invalid(
                &object,
                "spec.nodeName",
                "required: the harness places every pod on a Node",
            )
        })?;
        let node = self
            .node(&node_name)
            .ok_or_else(|| ConfigError::invalid(&object, "spec.nodeName", format!("unknown node \"{node_name}\"")))?;
        let ip = match meta.annotations.get(LOCAL_IP_ANNOTATION) {
            Some(text) => self.check_pinned_ip(&object, node, text)?,
            None => self.free_ip(node).ok_or_else(|| {
                ConfigError::invalid(
                    &object,
                    "spec.nodeName",
                    format!("node \"{node_name}\" has no free pod address left"),
                )
            })?,
        };
        let service_account = pod.spec.service_account_name.unwrap_or_else(|| "default".into());
        Ok(PodSpec {
            namespace,
            name: meta.name,
            node: node_name,
            ip,
            service_account,
            labels: meta.labels,
            annotations: meta.annotations,
            ready,
        })
    }

    /// Sets a pod's readiness; false when there is no such pod.
    pub(crate) fn set_pod_ready(&mut self, namespace: &str, name: &str, ready: bool) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        self.pods.get_mut(&key).map(|p| p.ready = ready).is_some()
    }

    fn check_pinned_ip(&self, object: &ObjectRef, node: &NodeSpec, text: &str) -> Result<Ipv4Addr, ConfigError> {
        let ip: Ipv4Addr = text
            .trim()
            .parse()
            .map_err(|_| ConfigError::invalid(object, LOCAL_IP_FIELD, format!("\"{text}\" is not an IPv4 address")))?;
        let [a, b, c, d] = ip.octets();
        if (a, b, c) != (198, 18, node.index) || !(2..=254).contains(&d) {
            let (net, _) = node.pod_cidr();
            return Err(ConfigError::invalid(
                object,
                LOCAL_IP_FIELD,
                format!(
                    "{ip} is outside node \"{}\"'s pod range {net}/24 (.2 to .254)",
                    node.name
                ),
            ));
        }
        if let Some(owner) = self.pods.values().find(|p| p.ip == ip) {
            return Err(ConfigError::invalid(
                object,
                LOCAL_IP_FIELD,
                format!("{ip} is already the address of Pod {}/{}", owner.namespace, owner.name),
            ));
        }
        Ok(ip)
    }

    fn free_ip(&self, node: &NodeSpec) -> Option<Ipv4Addr> {
        (2..=254)
            .map(|d| Ipv4Addr::new(198, 18, node.index, d))
            .find(|ip| !self.used.contains(ip))
    }

    /// Forgets a pod (its address becomes free again).
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> Option<PodSpec> {
        let spec = self.pods.remove(&(namespace.to_owned(), name.to_owned()))?;
        self.used.remove(&spec.ip);
        Some(spec)
    }
}

/// Names become netns and cgroup names: restrict them to what Kubernetes allows
/// (DNS subdomain for nodes and pods, DNS label for namespaces), at most 63 bytes.
fn check_name(object: &ObjectRef, name: &str, dots: bool) -> Result<(), ConfigError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let edges_ok =
        name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() <= 63 && edges_ok && name.chars().all(ok_char) {
        return Ok(());
    }
    let allowed = if dots { "[a-z0-9.-]" } else { "[a-z0-9-]" };
    Err(ConfigError::invalid(
        object,
        "metadata.name",
        format!("\"{name}\" is not a valid name: use {allowed}, start and end alphanumeric, at most 63 characters"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str =
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n";

    fn pod(ns: &str, name: &str, node: &str, extra_meta: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}{extra_meta}}}\nspec: {{nodeName: {node}}}\n"
        )
    }

    /// Asserts that `yaml` is rejected with an error containing every `expected` text.
    fn assert_rejected(yaml: &str, expected: &[&str]) {
        let err = Topology::parse(yaml)
            .expect_err("topology should be rejected")
            .to_string();
        for text in expected {
            assert!(err.contains(text), "expected {text:?} in: {err}");
        }
    }

    #[test]
    fn valid_topology_gets_addresses_and_implicit_namespaces() {
        let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a, annotations: {mesh.io/dataplane-mode: ambient}}\n";
        let pinned = pod("b", "y", "n2", ", annotations: {mesh.io/local-ip: 198.18.2.2}");
        let yaml = format!(
            "{NODES}{ns}{}{pinned}{}",
            pod("a", "x", "n1", ""),
            pod("b", "z", "n2", "")
        );
        let t = Topology::parse(&yaml).unwrap();
        assert_eq!(t.node("n2").unwrap().fabric_ip(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(t.pod("a", "x").unwrap().ip, Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(t.pod("b", "y").unwrap().ip, Ipv4Addr::new(198, 18, 2, 2));
        assert_eq!(
            t.pod("b", "z").unwrap().ip,
            Ipv4Addr::new(198, 18, 2, 3),
            "pinned address is skipped"
        );
        assert_eq!(t.pod("b", "z").unwrap().service_account, "default");
        assert!(t.namespace("a").unwrap().is_enrolled());
        assert!(t.namespace("b").is_some(), "namespace b is created implicitly");
    }

    #[test]
    fn pod_readiness_comes_from_its_ready_condition() {
        let not_ready = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: y, namespace: a}\nspec: {nodeName: n1}\n\
                         status: {conditions: [{type: Ready, status: 'False'}]}\n";
        let mut t = Topology::parse(&format!("{NODES}{}{not_ready}", pod("a", "x", "n1", ""))).unwrap();
        assert!(
            t.pod("a", "x").unwrap().ready,
            "ready unless a condition says otherwise"
        );
        assert!(!t.pod("a", "y").unwrap().ready);
        assert!(t.set_pod_ready("a", "y", true));
        assert!(t.pod("a", "y").unwrap().ready);
        assert!(!t.set_pod_ready("a", "nope", true));
    }

    #[test]
    fn pod_placement_errors_name_pod_and_field() {
        assert_rejected(
            &format!("{NODES}{}", pod("a", "x", "n9", "")),
            &["Pod a/x: spec.nodeName: unknown node \"n9\""],
        );
        let no_node = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: a}\n";
        assert_rejected(&format!("{NODES}{no_node}"), &["Pod a/x: spec.nodeName: required"]);
        let two_bad = format!("{NODES}{}{}", pod("a", "x", "n8", ""), pod("a", "y", "n9", ""));
        assert_rejected(&two_bad, &["Pod a/x: spec.nodeName", "Pod a/y: spec.nodeName"]);
    }

    #[test]
    fn duplicates_name_the_object() {
        let dup_pod = format!("{NODES}{}{}", pod("a", "x", "n1", ""), pod("a", "x", "n2", ""));
        assert_rejected(&dup_pod, &["Pod a/x: metadata.name: duplicate Pod"]);
        let node = "---\napiVersion: v1\nkind: Node\nmetadata: {name: n1}\n";
        assert_rejected(&format!("{NODES}{node}"), &["Node n1: metadata.name: duplicate Node"]);
        let ns = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
        assert_rejected(
            &format!("{NODES}{ns}{ns}"),
            &["Namespace a: metadata.name: duplicate Namespace"],
        );
    }

    #[test]
    fn address_clash_and_range_name_the_annotation() {
        let pinned = |name: &str, ip: &str| {
            pod(
                "a",
                name,
                "n1",
                &format!(", annotations: {{mesh.io/local-ip: \"{ip}\"}}"),
            )
        };
        let field = "metadata.annotations[\"mesh.io/local-ip\"]";
        let clash = format!("{NODES}{}{}", pinned("x", "198.18.1.7"), pinned("y", "198.18.1.7"));
        assert_rejected(
            &clash,
            &[&format!(
                "Pod a/y: {field}: 198.18.1.7 is already the address of Pod a/x"
            )],
        );
        let other_node = format!("{NODES}{}", pinned("x", "198.18.2.7"));
        assert_rejected(
            &other_node,
            &[&format!("Pod a/x: {field}: 198.18.2.7 is outside node \"n1\"")],
        );
        assert_rejected(&format!("{NODES}{}", pinned("x", "198.18.1.1")), &["is outside"]);
        assert_rejected(
            &format!("{NODES}{}", pinned("x", "nope")),
            &[&format!("{field}: \"nope\" is not an IPv4 address")],
        );
    }

    #[test]
    fn malformed_yaml_and_bad_names_are_rejected() {
        assert_rejected(
            &format!("{NODES}---\nkind: [unclosed\n"),
            &["topology: document 2: malformed YAML"],
        );
        let bad_node = "apiVersion: v1\nkind: Node\nmetadata: {name: N_1}\n";
        assert_rejected(bad_node, &["Node N_1: metadata.name: \"N_1\" is not a valid name"]);
        assert_rejected(
            &format!("{NODES}{}", pod("a.b", "x", "n1", "")),
            &["Pod a.b/x: metadata.namespace: must be a DNS label"],
        );
    }

    #[test]
    fn the_demo_topology_is_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/bookinfo/platform/topology.yaml"
        );
        let text = std::fs::read_to_string(path).expect("the demo topology exists");
        let t = Topology::parse_named(path, &text).unwrap();
        assert!(t.nodes().len() >= 2 && t.pods().count() >= 3);
    }

    #[test]
    fn full_node_is_reported_and_removal_frees_the_address() {
        let mut t = Topology::parse(NODES).unwrap();
        for i in 0..253 {
            let p: Pod = serde_yaml::from_str(&format!(
                "metadata: {{name: p{i}, namespace: a}}\nspec: {{nodeName: n1}}"
            ))
            .unwrap();
            t.add_pod(p).unwrap();
        }
        let extra: Pod = serde_yaml::from_str("metadata: {name: extra, namespace: a}\nspec: {nodeName: n1}").unwrap();
        let err = t.add_pod(extra.clone()).unwrap_err().to_string();
        assert!(
            err.contains("Pod a/extra: spec.nodeName: node \"n1\" has no free pod address left"),
            "{err}"
        );
        let freed = t.remove_pod("a", "p7").unwrap().ip;
        assert_eq!(t.add_pod(extra).unwrap().ip, freed);
    }
}
