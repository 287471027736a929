//! Kubernetes core kinds, mirrored with only the fields the mesh reads.
//! Unknown fields are accepted: these objects come from the API server or
//! `kubectl get -o yaml`, which carry many fields the mesh does not need.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

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
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podIP")]
    pub pod_ip: Option<Ipv4Addr>,
    /// `Running`, `Pending`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl Pod {
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
    pub cluster_ip: Option<Ipv4Addr>,
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
    /// The numeric target port, defaulting to `port` like Kubernetes does.
    pub fn target_port_number(&self) -> u16 {
        self.target_port
            .as_ref()
            .and_then(serde_yaml::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(self.port)
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
    fn target_port_defaults_to_port() {
        let p: ServicePort = serde_yaml::from_str("port: 9080").unwrap();
        assert_eq!(p.target_port_number(), 9080);
        let p: ServicePort = serde_yaml::from_str("port: 80\ntargetPort: 9080").unwrap();
        assert_eq!(p.target_port_number(), 9080);
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
