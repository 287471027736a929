//! PeerAuthentication: whether a workload accepts plaintext (PERMISSIVE) or only mutual
//! TLS (STRICT), mesh-wide, per namespace, per workload, and per port.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ROOT_NAMESPACE;
use crate::model::istio::networking::common::WorkloadSelector;
use crate::model::{ConfigError, ObjectMeta, ObjectRef};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Keys are port numbers (YAML writes them as integers or strings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<PortKey, MutualTls>,
}

/// A `portLevelMtls` key: Istio YAML writes `8080:` (an integer) or `'8080':`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortKey {
    Number(i64),
    Text(String),
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortKey::Number(n) => write!(f, "{n}"),
            PortKey::Text(t) => f.write_str(t),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent scope (PERMISSIVE at the top).
    #[default]
    Unset,
    /// Plaintext only is not supported by this mesh's data path; treated as PERMISSIVE.
    Disable,
    Permissive,
    Strict,
}

/// Which workloads a policy covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PeerAuthnScope {
    Mesh,
    Namespace(String),
    Workload {
        namespace: String,
        match_labels: BTreeMap<String, String>,
    },
}

/// A validated PeerAuthentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerAuthnPolicy {
    pub object: ObjectRef,
    pub scope: PeerAuthnScope,
    pub mode: MtlsMode,
    pub ports: BTreeMap<u16, MtlsMode>,
}

impl PeerAuthentication {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(
            "PeerAuthentication",
            Some(self.metadata.namespace_or_default()),
            &self.metadata.name,
        )
    }

    /// Checks what the schema cannot (port numbers, portLevelMtls needing a selector).
    pub fn validate(&self) -> Result<PeerAuthnPolicy, ConfigError> {
        let object = self.object_ref();
        let namespace = self.metadata.namespace_or_default().to_owned();
        let labels = self
            .spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .filter(|l| !l.is_empty());
        let mut ports = BTreeMap::new();
        for (key, mtls) in &self.spec.port_level_mtls {
            let path = format!("spec.portLevelMtls.{key}");
            let port: u16 = key
                .to_string()
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| ConfigError::invalid(&object, &path, "port must be a number in 1..=65535"))?;
            ports.insert(port, mtls.mode);
        }
        if !ports.is_empty() && labels.is_none() {
            return Err(ConfigError::invalid(
                &object,
                "spec.portLevelMtls",
                "portLevelMtls requires spec.selector.matchLabels",
            ));
        }
        let scope = match labels {
            Some(match_labels) => PeerAuthnScope::Workload {
                namespace,
                match_labels,
            },
            None if namespace == ROOT_NAMESPACE => PeerAuthnScope::Mesh,
            None => PeerAuthnScope::Namespace(namespace),
        };
        let mode = self.spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default();
        Ok(PeerAuthnPolicy {
            object,
            scope,
            mode,
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Resource, parse_documents};

    use super::*;

    fn one(yaml: &str) -> Result<Resource, ConfigError> {
        parse_documents("t.yaml", yaml).into_iter().next().unwrap()
    }

    #[test]
    fn decodes_istio_yaml_for_every_version_and_scope() {
        for v in ["v1", "v1beta1"] {
            let r = one(&format!(
                "apiVersion: security.istio.io/{v}\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: shop}}\n\
                 spec:\n  selector: {{matchLabels: {{app: db}}}}\n  mtls: {{mode: STRICT}}\n  portLevelMtls:\n    8080: {{mode: PERMISSIVE}}\n"
            ))
            .unwrap();
            let Resource::PeerAuthentication(pa) = r else {
                panic!("{r:?}")
            };
            let p = pa.validate().unwrap();
            assert_eq!(p.mode, MtlsMode::Strict);
            assert_eq!(p.ports.get(&8080), Some(&MtlsMode::Permissive));
            assert!(matches!(p.scope, PeerAuthnScope::Workload { .. }));
        }
        let mesh = one("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n").unwrap();
        let Resource::PeerAuthentication(pa) = mesh else {
            panic!()
        };
        assert_eq!(pa.validate().unwrap().scope, PeerAuthnScope::Mesh);
    }

    #[test]
    fn bad_objects_name_the_field() {
        let cases = [
            (
                "spec: {mtls: {mode: STRICTLY}}",
                "PeerAuthentication shop/p: spec.mtls.mode",
            ),
            ("spec: {mtls: {mod: STRICT}}", "PeerAuthentication shop/p: spec.mtls"),
            (
                "spec: {selector: {matchLabels: {a: b}}, portLevelMtls: {'0': {mode: STRICT}}}",
                "spec.portLevelMtls.0: port must be",
            ),
            (
                "spec: {portLevelMtls: {'80': {mode: STRICT}}}",
                "spec.portLevelMtls: portLevelMtls requires",
            ),
        ];
        for (spec, want) in cases {
            let err = one(&format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: shop}}\n{spec}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
        let err = one("apiVersion: security.istio.io/v2\nkind: PeerAuthentication\nmetadata: {name: p}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported apiVersion"), "{err}");
    }
}
