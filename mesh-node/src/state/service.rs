//! A Service: its VIP, ports, the pods behind it, and the waypoint it uses.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use mesh_common::model::Resource;
use mesh_common::model::k8s::{Namespace, Service, ServicePort, USE_WAYPOINT_LABEL};
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
        self.endpoints.iter().filter_map(|ip| state.workload(*ip)).filter(|w| w.ready)
    }

    /// The pod port for a Service port, `None` when the Service does not expose it.
    pub fn target_port(&self, port: u16) -> Option<u16> {
        self.ports.iter().find(|p| p.port == port).map(ServicePort::target_port_number)
    }

    fn from_service(
        svc: &Service,
        namespaces: &BTreeMap<String, Namespace>,
        workloads: &HashMap<Ipv4Addr, Arc<Workload>>,
    ) -> Option<Self> {
        let vip = svc.spec.cluster_ip?;
        let namespace = svc.metadata.namespace_or_default().to_owned();
        let selector = &svc.spec.selector;
        let mut endpoints: Vec<Ipv4Addr> = workloads
            .values()
            .filter(|w| w.namespace == namespace && !selector.is_empty())
            .filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
            .map(|w| w.ip)
            .collect();
        endpoints.sort();
        let ns_waypoint = namespaces.get(&namespace).and_then(|n| n.metadata.labels.get(USE_WAYPOINT_LABEL));
        let waypoint = svc.metadata.labels.get(USE_WAYPOINT_LABEL).or(ns_waypoint).filter(|w| *w != "none").cloned();
        Some(Self { namespace, name: svc.metadata.name.clone(), vip, ports: svc.spec.ports.clone(), endpoints, waypoint })
    }
}

pub(super) fn collect(
    store: &ConfigStore,
    namespaces: &BTreeMap<String, Namespace>,
    workloads: &HashMap<Ipv4Addr, Arc<Workload>>,
) -> HashMap<Ipv4Addr, Arc<ServiceEntry>> {
    store
        .iter()
        .filter_map(|r| match r {
            Resource::Service(s) => ServiceEntry::from_service(s, namespaces, workloads),
            _ => None,
        })
        .map(|s| (s.vip, Arc::new(s)))
        .collect()
}
