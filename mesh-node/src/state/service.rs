//! A Service: its VIP, ports, the pods behind it, and the waypoint it uses.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use mesh_common::model::Resource;
use mesh_common::model::k8s::{Namespace, Service, ServicePort, TargetPort, USE_WAYPOINT_LABEL};
use mesh_common::model::store::ConfigStore;
use serde::Serialize;

use super::{MeshState, Workload};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    /// Pod IPs selected by the Service, ready or not.
    pub endpoints: Vec<Ipv4Addr>,
    /// Name of the waypoint Service (same namespace) from `istio.io/use-waypoint`
    /// on the Service, else on its namespace. `none` opts a Service out.
    pub waypoint: Option<String>,
}

impl ServiceEntry {
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// Ready endpoints, the only ones load balancing may pick (like ztunnel).
    pub fn ready_endpoints<'a>(&'a self, state: &'a MeshState) -> impl Iterator<Item = &'a Arc<Workload>> {
        self.endpoints
            .iter()
            .filter_map(|ip| state.workload(*ip))
            .filter(|w| w.ready)
    }

    /// What a Service port forwards to (resolved per endpoint with
    /// [`Workload::port`]), `None` when the Service does not expose `port`.
    pub fn target_port(&self, port: u16) -> Option<TargetPort> {
        self.ports.iter().find(|p| p.port == port).map(ServicePort::target)
    }

    fn from_service(
        svc: &Service,
        namespaces: &BTreeMap<String, Namespace>,
        by_namespace: &HashMap<&str, Vec<&Arc<Workload>>>,
    ) -> Option<Self> {
        let vip = svc.vip()?;
        let namespace = svc.metadata.namespace_or_default().to_owned();
        let selector = &svc.spec.selector;
        let candidates = by_namespace.get(namespace.as_str()).filter(|_| !selector.is_empty());
        let mut endpoints: Vec<Ipv4Addr> = candidates
            .into_iter()
            .flatten()
            .filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .map(|w| w.ip)
            .collect();
        endpoints.sort();
        let ns_waypoint = namespaces
            .get(&namespace)
            .and_then(|n| n.metadata.labels.get(USE_WAYPOINT_LABEL));
        let waypoint = svc
            .metadata
            .labels
            .get(USE_WAYPOINT_LABEL)
            .or(ns_waypoint)
            .filter(|w| *w != "none" && **w != svc.metadata.name)
            .cloned();
        Some(Self {
            namespace,
            name: svc.metadata.name.clone(),
            vip,
            ports: svc.spec.ports.clone(),
            endpoints,
            waypoint,
        })
    }
}

pub(super) fn collect(
    store: &ConfigStore,
    namespaces: &BTreeMap<String, Namespace>,
    workloads: &HashMap<Ipv4Addr, Arc<Workload>>,
) -> HashMap<Ipv4Addr, Arc<ServiceEntry>> {
    // Selectors only match within a namespace: index once instead of scanning every
    // workload for every Service (10,000 of each is a configuration we measure).
    let mut by_namespace: HashMap<&str, Vec<&Arc<Workload>>> = HashMap::new();
    for w in workloads.values() {
        by_namespace.entry(w.namespace.as_str()).or_default().push(w);
    }
    store
        .iter()
        .filter_map(|r| match r {
            Resource::Service(s) => ServiceEntry::from_service(s, namespaces, &by_namespace),
            _ => None,
        })
        .map(|s| (s.vip, Arc::new(s)))
        .collect()
}
