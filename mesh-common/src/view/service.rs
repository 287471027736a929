//! A Service: its VIP, ports, the pods its selector picks, and the waypoint it uses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::k8s::{Namespace, Service, ServicePort, TargetPort, USE_WAYPOINT_LABEL};

/// Istio's label sending ingress gateway traffic for a Service through its waypoint.
pub const INGRESS_USE_WAYPOINT_LABEL: &str = "istio.io/ingress-use-waypoint";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    /// The IPv4 VIP; `None` for a headless Service (clients address its pods directly).
    pub vip: Option<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// IPs of the pods the selector picks, ready or not, ascending.
    pub endpoints: Vec<Ipv4Addr>,
    /// Name of the waypoint Service (same namespace) from `istio.io/use-waypoint` on the
    /// Service, else on its namespace. `none` opts a Service out.
    pub waypoint: Option<String>,
    /// `istio.io/ingress-use-waypoint: "true"` (Service, else namespace): the ingress
    /// gateway sends this Service's traffic through its waypoint instead of to its pods.
    pub ingress_use_waypoint: bool,
}

impl ServiceEntry {
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// What a Service port forwards to (resolved per endpoint with
    /// [`super::Workload::port`]), `None` when the Service does not expose `port`.
    pub fn target_port(&self, port: u16) -> Option<TargetPort> {
        self.ports.iter().find(|p| p.port == port).map(ServicePort::target)
    }

    /// The entry for `svc`, with `endpoints` chosen by the caller (the view's label
    /// index).
    pub(super) fn new(svc: &Service, namespace: Option<&Namespace>, endpoints: Vec<Ipv4Addr>) -> Self {
        let ns_labels = namespace.map(|n| &n.metadata.labels);
        let label = |key: &str| {
            svc.metadata
                .labels
                .get(key)
                .or_else(|| ns_labels.and_then(|l| l.get(key)))
        };
        let waypoint = label(USE_WAYPOINT_LABEL)
            .filter(|w| *w != "none" && **w != svc.metadata.name)
            .cloned();
        Self {
            namespace: svc.metadata.namespace_or_default().to_owned(),
            name: svc.metadata.name.clone(),
            vip: svc.vip(),
            ports: svc.spec.ports.clone(),
            selector: svc.spec.selector.clone(),
            endpoints,
            waypoint,
            ingress_use_waypoint: label(INGRESS_USE_WAYPOINT_LABEL).is_some_and(|v| v == "true"),
        }
    }
}
