//! Endpoint discovery from the config directory: a Service's endpoints are the
//! ready Pods of its namespace whose labels contain its selector, at
//! `status.podIP:targetPort`. (The Kubernetes source will feed EndpointSlices into
//! the same shape.)

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use mesh_common::model::Resource;
use mesh_common::model::k8s::{Pod, Service, TargetPort, USE_WAYPOINT_LABEL};

use crate::config::hosts::service_fqdn;

#[derive(Clone, Debug, serde::Serialize)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u16,
    /// Resolved per pod ([`PodInfo::port`]): a name may map to different ports.
    pub target_port: TargetPort,
    pub protocol: UpstreamProtocol,
}

/// How the waypoint speaks to a port's endpoints, by Istio's protocol selection:
/// `appProtocol` (`grpc`, `http2`, `h2c`, `grpc-web`) or the port name's prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
}

fn protocol_of(p: &mesh_common::model::k8s::ServicePort) -> UpstreamProtocol {
    let h2 = |s: &str| {
        let s = s.to_ascii_lowercase();
        ["grpc", "http2", "h2c", "kubernetes.io/h2c"]
            .iter()
            .any(|k| s == *k || s.starts_with(&format!("{k}-")))
    };
    if p.app_protocol.as_deref().is_some_and(h2) || p.name.as_deref().is_some_and(h2) {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    /// Its identity is `spiffe://<trust domain>/ns/<namespace>/sa/<service_account>`.
    pub service_account: String,
    pub ip: IpAddr,
    pub labels: BTreeMap<String, String>,
    /// Named container ports, for a `targetPort` that names one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<(String, u16)>,
}

impl PodInfo {
    /// The pod port a Service's `target` means here; `None` when the pod has no
    /// container port of that name (it is then no endpoint of that port).
    pub fn port(&self, target: &TargetPort) -> Option<u16> {
        target.resolve(|name| self.named_ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p))
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ServiceInfo {
    pub fqdn: String,
    pub namespace: String,
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<ServicePortInfo>,
    /// Ready pods selected by the Service.
    pub pods: Vec<PodInfo>,
    /// The waypoint Service (same namespace) named by `istio.io/use-waypoint` on the
    /// Service, else on its namespace (`none` opts out).
    pub waypoint: Option<String>,
    /// `istio.io/ingress-use-waypoint: "true"` (Service, else namespace): the ingress
    /// gateway sends this Service's traffic through its waypoint instead of to its pods.
    pub ingress_use_waypoint: bool,
}

impl ServiceInfo {
    /// The service port a request for `wanted` (or, when absent, `request_port`)
    /// lands on; a single-port Service takes everything.
    pub fn port(&self, wanted: Option<u16>, request_port: u16) -> Option<&ServicePortInfo> {
        match wanted {
            Some(p) => self.ports.iter().find(|sp| sp.port == p),
            None if self.ports.len() == 1 => self.ports.first(),
            None => self.ports.iter().find(|sp| sp.port == request_port),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Discovery {
    pub services: BTreeMap<String, ServiceInfo>,
    pub by_cluster_ip: HashMap<IpAddr, String>,
    pub pods_by_ip: HashMap<IpAddr, PodInfo>,
}

pub fn discover(resources: &[Resource]) -> Discovery {
    let pods: Vec<PodInfo> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) if p.is_ready() => pod_info(p),
            _ => None,
        })
        .collect();
    let mut d = Discovery {
        pods_by_ip: pods.iter().map(|p| (p.ip, p.clone())).collect(),
        ..Discovery::default()
    };
    let namespaces: HashMap<&str, &BTreeMap<String, String>> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Namespace(n) => Some((n.metadata.name.as_str(), &n.metadata.labels)),
            _ => None,
        })
        .collect();
    for r in resources {
        if let Resource::Service(s) = r {
            let ns_labels = namespaces.get(s.metadata.namespace_or_default()).copied();
            let info = service_info(s, &pods, ns_labels);
            if let Some(ip) = info.cluster_ip {
                d.by_cluster_ip.insert(ip, info.fqdn.clone());
            }
            d.services.insert(info.fqdn.clone(), info);
        }
    }
    d
}

fn pod_info(p: &Pod) -> Option<PodInfo> {
    Some(PodInfo {
        name: p.metadata.name.clone(),
        namespace: p.metadata.namespace_or_default().to_owned(),
        service_account: p.service_account().to_owned(),
        ip: IpAddr::V4(p.ipv4()?),
        labels: p.metadata.labels.clone(),
        named_ports: p.named_ports().map(|(n, port)| (n.to_owned(), port)).collect(),
    })
}

/// Istio's label sending ingress gateway traffic for a Service through its waypoint.
pub const INGRESS_USE_WAYPOINT_LABEL: &str = "istio.io/ingress-use-waypoint";

/// A label on the Service, else on its namespace.
fn label<'a>(s: &'a Service, ns: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a String> {
    s.metadata.labels.get(key).or_else(|| ns.and_then(|l| l.get(key)))
}

fn service_info(s: &Service, pods: &[PodInfo], ns_labels: Option<&BTreeMap<String, String>>) -> ServiceInfo {
    let ns = s.metadata.namespace_or_default();
    let waypoint = label(s, ns_labels, USE_WAYPOINT_LABEL)
        .filter(|w| *w != "none" && **w != s.metadata.name)
        .cloned();
    let ingress_use_waypoint = label(s, ns_labels, INGRESS_USE_WAYPOINT_LABEL).is_some_and(|v| v == "true");
    let selector = &s.spec.selector;
    let selected = pods
        .iter()
        .filter(|p| {
            p.namespace == ns && !selector.is_empty() && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .cloned()
        .collect();
    ServiceInfo {
        fqdn: service_fqdn(&s.metadata.name, ns),
        namespace: ns.to_owned(),
        cluster_ip: s.vip().map(IpAddr::V4),
        ports: s
            .spec
            .ports
            .iter()
            .map(|p| ServicePortInfo {
                name: p.name.clone(),
                port: p.port,
                target_port: p.target(),
                protocol: protocol_of(p),
            })
            .collect(),
        pods: selected,
        waypoint,
        ingress_use_waypoint,
    }
}

/// Pods of `service` whose labels contain `labels` (a DestinationRule subset).
pub fn subset_pods<'a>(
    service: &'a ServiceInfo,
    labels: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a PodInfo> {
    service
        .pods
        .iter()
        .filter(move |p| labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
}
