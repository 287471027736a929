//! A pod as the mesh sees it: address, identity, node, and where it lives on the host.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use mesh_common::model::Resource;
use mesh_common::model::enrollment::is_enrolled;
use mesh_common::model::k8s::{LOCAL_CGROUP_ANNOTATION, LOCAL_NETNS_ANNOTATION, Namespace, Pod, TargetPort};
use mesh_common::model::store::ConfigStore;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
    /// Its namespace opts into the mesh and the pod does not opt out: captured.
    pub enrolled: bool,
    /// A waypoint or gateway pod: not captured, speaks HBONE itself with a certificate
    /// this daemon issues into its certificate directory.
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

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod port a Service's `target` means on this pod.
    pub fn port(&self, target: &TargetPort) -> Option<u16> {
        target.resolve(|name| self.named_ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p))
    }

    fn from_pod(pod: &Pod, namespaces: &BTreeMap<String, Namespace>, trust_domain: &str) -> Option<Self> {
        let ip = pod.ipv4()?;
        let namespace = pod.metadata.namespace_or_default().to_owned();
        let annotation = |k: &str| pod.metadata.annotations.get(k).map(PathBuf::from);
        Some(Self {
            enrolled: is_enrolled(pod, namespaces.get(&namespace)),
            proxy: pod.is_mesh_proxy(),
            namespace,
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

/// Pods without an IPv4 address yet are not workloads (nothing the mesh captures can
/// address them); they become workloads when the update with their address arrives.
pub(super) fn collect(
    store: &ConfigStore,
    namespaces: &BTreeMap<String, Namespace>,
    trust_domain: &str,
) -> HashMap<Ipv4Addr, Arc<Workload>> {
    store
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) => Workload::from_pod(p, namespaces, trust_domain),
            _ => None,
        })
        .map(|w| (w.ip, Arc::new(w)))
        .collect()
}
