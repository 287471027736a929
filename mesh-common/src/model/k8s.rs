//! Kubernetes core kinds, mirrored with only the fields the mesh reads.
//! Unknown fields are accepted: these objects come from the API server or
//! `kubectl get -o yaml`, which carry many fields the mesh does not need.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// Project annotation that enrolls a namespace (value `ambient`).
pub const ENROLL_ANNOTATION: &str = "mesh.io/dataplane-mode";
/// Istio's label with the same meaning, honoured as well.
pub const ISTIO_DATAPLANE_LABEL: &str = "istio.io/dataplane-mode";
/// Label Istio puts on the pods of a waypoint or gateway (Gateway API): such a pod
/// speaks HBONE itself, so the node daemon gives it a certificate instead of capturing it.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Istio's label that sends a namespace's or Service's traffic through a waypoint.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Local mode only: the pod's network namespace path (written by the netns harness,
/// where Kubernetes mode discovers it from the container runtime instead).
pub const LOCAL_NETNS_ANNOTATION: &str = "mesh.io/local-netns";
/// Local mode only: the pod's cgroup v2 directory.
pub const LOCAL_CGROUP_ANNOTATION: &str = "mesh.io/local-cgroup";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

/// Whether `selector` (`matchLabels` of a Service, a subset, a policy) is a subset of
/// `labels`: the one label-selector rule. An empty selector matches everything.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Namespace {
    /// True when the namespace opts in, by our annotation or Istio's label.
    pub fn is_enrolled(&self) -> bool {
        let m = &self.metadata;
        m.annotations.get(ENROLL_ANNOTATION).is_some_and(|v| v == "ambient")
            || m.labels.get(ISTIO_DATAPLANE_LABEL).is_some_and(|v| v == "ambient")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub metadata: ObjectMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Only the named ports are read (a Service's `targetPort` may name one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// The primary address: IPv6 in an IPv6-primary dual-stack cluster, so any family.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podIP")]
    pub pod_ip: Option<IpAddr>,
    /// Every address of a dual-stack pod (the first equals `podIP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    /// `Running`, `Pending`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl Pod {
    /// The IPv4 address the mesh captures and addresses the pod by (pods are captured
    /// over IPv4 only); `None` before the pod has one, or on an IPv6-only pod.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let primary = self.status.pod_ip.into_iter();
        primary
            .chain(self.status.pod_ips.iter().map(|p| p.ip))
            .find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
    }

    /// The container port named `name`, for a Service `targetPort` that names one.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.named_ports().find(|(n, _)| *n == name).map(|(_, p)| p)
    }

    /// Every named container port.
    pub fn named_ports(&self) -> impl Iterator<Item = (&str, u16)> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter_map(|p| Some((p.name.as_deref()?, p.container_port)))
    }

    pub fn service_account(&self) -> &str {
        self.spec.service_account_name.as_deref().unwrap_or("default")
    }

    /// A pod opts out of capture with `istio.io/dataplane-mode: none` (as in Istio);
    /// waypoint and gateway pods are never captured.
    pub fn opts_out(&self) -> bool {
        self.metadata
            .labels
            .get(ISTIO_DATAPLANE_LABEL)
            .is_some_and(|v| v == "none")
            || self.is_mesh_proxy()
    }

    /// A waypoint or ingress gateway pod: it terminates and originates HBONE itself.
    pub fn is_mesh_proxy(&self) -> bool {
        self.metadata.labels.contains_key(GATEWAY_NAME_LABEL)
    }

    /// Ready unless a `Ready` condition says otherwise (local YAML rarely carries status).
    pub fn is_ready(&self) -> bool {
        !self
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status != "True")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clusterIP")]
    pub cluster_ip: Option<ClusterIp>,
    /// Every cluster IP of a dual-stack Service (the first equals `clusterIP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "clusterIPs")]
    pub cluster_ips: Vec<ClusterIp>,
}

/// `spec.clusterIP`: an address of either family, `None` for a headless Service, or
/// empty (an `ExternalName` Service has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ClusterIp {
    Addr(IpAddr),
    Headless,
    Unset,
}

impl TryFrom<String> for ClusterIp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "None" => Ok(Self::Headless),
            "" => Ok(Self::Unset),
            _ => s
                .parse()
                .map(Self::Addr)
                .map_err(|_| format!("{s:?} is neither an IP address nor \"None\"")),
        }
    }
}

impl From<ClusterIp> for String {
    fn from(c: ClusterIp) -> String {
        match c {
            ClusterIp::Addr(ip) => ip.to_string(),
            ClusterIp::Headless => "None".into(),
            ClusterIp::Unset => String::new(),
        }
    }
}

impl Service {
    /// The IPv4 VIP clients connect to; `None` for a headless Service (`clusterIP:
    /// None`, clients address its pods directly) or an IPv6-only one.
    pub fn vip(&self) -> Option<Ipv4Addr> {
        self.cluster_addrs().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Any cluster IP (v4 or v6), for consumers that match request addresses.
    pub fn cluster_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let spec = &self.spec;
        spec.cluster_ip.iter().chain(&spec.cluster_ips).filter_map(|c| match c {
            ClusterIp::Addr(ip) => Some(*ip),
            ClusterIp::Headless | ClusterIp::Unset => None,
        })
    }
}

/// What a Service port forwards to on each endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per pod (pods of one Service may differ).
    Name(String),
}

impl TargetPort {
    /// The port on `pod`; `None` when the pod has no container port of that name
    /// (Kubernetes leaves such a pod out of the Service's endpoints).
    pub fn on(&self, pod: &Pod) -> Option<u16> {
        self.resolve(|name| pod.named_port(name))
    }

    /// Same, with the pod's named ports looked up by `named`.
    pub fn resolve(&self, named: impl FnOnce(&str) -> Option<u16>) -> Option<u16> {
        match self {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => named(name),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    /// A number, or a container port name (names are resolved by the consumer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<serde_yaml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl ServicePort {
    /// The target port, defaulting to `port` like Kubernetes does. A number out of
    /// range or a string of digits is read like the API server does (`\"8080\"` is a
    /// number); anything else names a container port.
    pub fn target(&self) -> TargetPort {
        match &self.target_port {
            None => TargetPort::Number(self.port),
            Some(serde_yaml::Value::Number(n)) => {
                TargetPort::Number(n.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(self.port))
            }
            Some(serde_yaml::Value::String(s)) => match s.parse::<u16>() {
                Ok(n) => TargetPort::Number(n),
                Err(_) => TargetPort::Name(s.clone()),
            },
            Some(_) => TargetPort::Number(self.port),
        }
    }
}

/// A Secret, as the gateway reads TLS credentials from it (`type: kubernetes.io/tls`,
/// keys `tls.crt` / `tls.key`). `data` values are base64 as the API server returns
/// them; `stringData` holds plain text as users write it. The consumer decodes.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
}

/// Keys only: a Secret's values must never reach logs or debug dumps.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.type_)
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("stringData", &self.string_data.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_by_annotation_or_istio_label() {
        let mut ns = Namespace::default();
        assert!(!ns.is_enrolled());
        ns.metadata
            .annotations
            .insert(ENROLL_ANNOTATION.into(), "ambient".into());
        assert!(ns.is_enrolled());
        let mut ns = Namespace::default();
        ns.metadata
            .labels
            .insert(ISTIO_DATAPLANE_LABEL.into(), "ambient".into());
        assert!(ns.is_enrolled());
    }

    #[test]
    fn target_port_defaults_to_port_and_names_resolve_per_pod() {
        let p: ServicePort = serde_yaml::from_str("port: 9080").unwrap();
        assert_eq!(p.target(), TargetPort::Number(9080));
        let p: ServicePort = serde_yaml::from_str("port: 80\ntargetPort: 9080").unwrap();
        assert_eq!(p.target(), TargetPort::Number(9080));
        let p: ServicePort = serde_yaml::from_str("port: 80\ntargetPort: http-alt").unwrap();
        assert_eq!(p.target(), TargetPort::Name("http-alt".into()));
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: a}\nspec: {containers: [{name: c, ports: [{name: http-alt, containerPort: 8081}]}]}",
        )
        .unwrap();
        assert_eq!(p.target().on(&pod), Some(8081));
        assert_eq!(p.target().on(&Pod::default()), None);
    }

    #[test]
    fn dual_stack_and_headless_are_read_not_rejected() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: a}\nstatus: {podIP: 'fd00::5', podIPs: [{ip: 'fd00::5'}, {ip: 198.18.1.5}]}",
        )
        .unwrap();
        assert_eq!(pod.ipv4(), Some(Ipv4Addr::new(198, 18, 1, 5)));
        let v6_only: Pod = serde_yaml::from_str("metadata: {name: a}\nstatus: {podIP: 'fd00::5'}").unwrap();
        assert_eq!(v6_only.ipv4(), None);
        let headless: Service = serde_yaml::from_str("metadata: {name: s}\nspec: {clusterIP: None}").unwrap();
        assert_eq!(headless.vip(), None);
        let dual: Service = serde_yaml::from_str(
            "metadata: {name: s}\nspec: {clusterIP: 'fd00::10', clusterIPs: ['fd00::10', 198.19.0.10]}",
        )
        .unwrap();
        assert_eq!(dual.vip(), Some(Ipv4Addr::new(198, 19, 0, 10)));
        assert_eq!(dual.cluster_addrs().count(), 3);
        let bad = serde_yaml::from_str::<Service>("metadata: {name: s}\nspec: {clusterIP: nope}");
        assert!(bad.unwrap_err().to_string().contains("neither an IP address"));
    }

    #[test]
    fn secret_debug_hides_values() {
        let s: Secret =
            serde_yaml::from_str("metadata: {name: c}\ntype: kubernetes.io/tls\nstringData: {tls.key: SECRETVALUE}\n")
                .unwrap();
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(!format!("{s:?}").contains("SECRETVALUE"));
    }
}
