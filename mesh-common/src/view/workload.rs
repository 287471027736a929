//! A pod as the mesh sees it: address, identity, node, labels, and where it lives on
//! the host.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

use crate::model::enrollment::is_enrolled;
use crate::model::k8s::{LOCAL_CGROUP_ANNOTATION, LOCAL_NETNS_ANNOTATION, Namespace, Pod, TargetPort};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// Its namespace opts into the mesh and the pod does not opt out: captured by the
    /// daemon of its node.
    pub enrolled: bool,
    /// A waypoint or gateway pod: not captured, speaks HBONE itself with the
    /// certificate it obtains from the mesh CA.
    pub proxy: bool,
    pub trust_domain: String,
    /// Network namespace path (local mode annotation, or discovered in Kubernetes mode).
    pub netns: Option<PathBuf>,
    /// cgroup v2 directory of the pod.
    pub cgroup: Option<PathBuf>,
    /// `metadata.uid`: Kubernetes mode finds the pod's cgroup and netns from it.
    pub uid: Option<String>,
    /// Named container ports, for Services whose `targetPort` is a name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<(String, u16)>,
}

impl Workload {
    /// SPIFFE id: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn identity(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn is(&self, key: &super::NamespacedName) -> bool {
        self.namespace == key.namespace && self.name == key.name
    }

    /// The pod port a Service's `target` means on this pod; `None` when the pod has no
    /// container port of that name (it is then no endpoint of that Service port).
    pub fn port(&self, target: &TargetPort) -> Option<u16> {
        target.resolve(|name| self.named_ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p))
    }

    /// Whether `selector` (a Service selector, a DestinationRule subset) is a subset of
    /// this pod's labels. An empty selector matches.
    pub fn has_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        crate::model::k8s::selects(selector, &self.labels)
    }

    /// `None` for a pod without an IPv4 address yet: nothing the mesh captures can
    /// address it; it becomes a workload with the update that gives it one.
    pub fn from_pod(pod: &Pod, namespace: Option<&Namespace>, trust_domain: &str) -> Option<Self> {
        let ip = pod.ipv4()?;
        let annotation = |k: &str| pod.metadata.annotations.get(k).map(PathBuf::from);
        Some(Self {
            enrolled: is_enrolled(pod, namespace),
            proxy: pod.is_mesh_proxy(),
            namespace: pod.metadata.namespace_or_default().to_owned(),
            name: pod.metadata.name.clone(),
            service_account: pod.service_account().to_owned(),
            node: pod.spec.node_name.clone().unwrap_or_default(),
            ip,
            labels: pod.metadata.labels.clone(),
            ready: pod.is_ready(),
            trust_domain: trust_domain.to_owned(),
            netns: annotation(LOCAL_NETNS_ANNOTATION),
            cgroup: annotation(LOCAL_CGROUP_ANNOTATION),
            uid: pod.metadata.uid.clone(),
            named_ports: pod.named_ports().map(|(n, p)| (n.to_owned(), p)).collect(),
        })
    }
}
