//! Endpoint discovery, read from the cluster view the node daemon also uses
//! ([`mesh_common::view`]): a Service's endpoints are the ready pods its selector picks
//! there, at `status.podIP:targetPort`; this module only adds what the waypoint needs
//! on top (FQDN keys, upstream protocol per port).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use mesh_common::model::Resource;
use mesh_common::model::k8s::TargetPort;
use mesh_common::view::{ClusterView, ServiceEntry};

use crate::config::hosts::service_fqdn;

#[derive(Clone, Debug, serde::Serialize)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u16,
    /// Resolved per pod ([`PodInfo::port`]): a name may map to different ports.
    pub target_port: TargetPort,
    pub protocol: UpstreamProtocol,
    /// Declared not HTTP ([`is_opaque`]): the waypoint relays its streams as bytes
    /// (`proxy::tcp`) instead of parsing them as HTTP.
    pub opaque: bool,
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

/// Istio's protocol names that are not HTTP (`appProtocol`, or the port name alone
/// or before a `-`). `https` and `tls` are passed through: the waypoint cannot
/// terminate the application's TLS.
const OPAQUE_PROTOCOLS: [&str; 6] = ["tcp", "tls", "https", "mongo", "mysql", "redis"];
/// Istio's HTTP protocol names (`h2c` and `kubernetes.io/h2c` are Kubernetes' own).
const HTTP_PROTOCOLS: [&str; 7] = [
    "http",
    "http2",
    "grpc",
    "grpc-web",
    "h2c",
    "kubernetes.io/h2c",
    "kubernetes.io/ws",
];

/// Whether a port is declared as a non-HTTP protocol, by Istio's protocol selection:
/// `appProtocol` first (`tcp`, `mysql`, ...; an HTTP one means HTTP), else the port
/// name (`tcp`, `tcp-db`, `mongo-main`, ...). A port declaring neither stays HTTP, as
/// the waypoint treated every port before (Istio would sniff it; the waypoint cannot).
pub fn is_opaque(app_protocol: Option<&str>, name: Option<&str>) -> bool {
    let named = |s: &str, list: &[&str]| {
        let s = s.to_ascii_lowercase();
        list.iter().any(|k| s == *k || s.starts_with(&format!("{k}-")))
    };
    match app_protocol {
        Some(a) if named(a, &OPAQUE_PROTOCOLS) => true,
        Some(a) if named(a, &HTTP_PROTOCOLS) => false,
        _ => name.is_some_and(|n| named(n, &OPAQUE_PROTOCOLS)),
    }
}

/// A pod as the waypoint sees it: the shared view's workload.
pub type PodInfo = mesh_common::view::Workload;

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

/// The waypoint reads no identity from the view (its peers prove theirs with their
/// certificates), so the view's trust domain is a placeholder.
const VIEW_TRUST_DOMAIN: &str = "cluster.local";

pub fn discover(resources: &[Resource]) -> Discovery {
    let view = ClusterView::from_resources(VIEW_TRUST_DOMAIN, resources);
    let mut d = Discovery {
        pods_by_ip: view
            .workloads()
            .filter(|w| w.ready)
            .map(|w| (IpAddr::V4(w.ip), w.as_ref().clone()))
            .collect(),
        ..Discovery::default()
    };
    for svc in view.services() {
        let info = service_info(&view, svc);
        if let Some(ip) = info.cluster_ip {
            d.by_cluster_ip.insert(ip, info.fqdn.clone());
        }
        d.services.insert(info.fqdn.clone(), info);
    }
    d
}

fn service_info(view: &ClusterView, s: &ServiceEntry) -> ServiceInfo {
    ServiceInfo {
        fqdn: service_fqdn(&s.name, &s.namespace),
        namespace: s.namespace.clone(),
        cluster_ip: s.vip.map(IpAddr::V4),
        ports: s
            .ports
            .iter()
            .map(|p| ServicePortInfo {
                name: p.name.clone(),
                port: p.port,
                target_port: p.target(),
                protocol: protocol_of(p),
                opaque: is_opaque(p.app_protocol.as_deref(), p.name.as_deref()),
            })
            .collect(),
        pods: view.ready_endpoints(s).map(|w| w.as_ref().clone()).collect(),
        waypoint: s.waypoint.clone(),
        ingress_use_waypoint: s.ingress_use_waypoint,
    }
}

/// Pods of `service` whose labels contain `labels` (a DestinationRule subset).
pub fn subset_pods<'a>(
    service: &'a ServiceInfo,
    labels: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = &'a PodInfo> {
    service.pods.iter().filter(move |p| p.has_labels(labels))
}

#[cfg(test)]
mod tests {
    use super::is_opaque;

    #[test]
    fn port_names_select_tcp_by_istio_prefixes() {
        for name in ["tcp", "tcp-db", "TLS-x", "https", "mongo", "mysql-main", "redis-cache"] {
            assert!(is_opaque(None, Some(name)), "{name}");
        }
        for name in [
            "http", "http-web", "http2", "grpc", "grpc-web", "web", "tcpish", "mongodb",
        ] {
            assert!(!is_opaque(None, Some(name)), "{name}");
        }
        assert!(!is_opaque(None, None), "an undeclared port stays HTTP");
    }

    #[test]
    fn app_protocol_wins_over_the_name() {
        assert!(is_opaque(Some("mysql"), Some("http-db")));
        assert!(is_opaque(Some("TCP"), None));
        assert!(!is_opaque(Some("http"), Some("tcp-db")));
        assert!(!is_opaque(Some("kubernetes.io/h2c"), Some("tcp")));
        // An appProtocol Istio does not know leaves the decision to the name.
        assert!(is_opaque(Some("example.com/custom"), Some("tcp-db")));
        assert!(!is_opaque(Some("example.com/custom"), Some("db")));
    }
}
