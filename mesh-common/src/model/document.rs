//! Multi-document YAML → typed resources. One bad document is reported alone;
//! the others still parse.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::gateway_api::{self, HttpRoute};
use super::istio::networking::{self, DestinationRule, Gateway, VirtualService};
use super::istio::security::{self, AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use super::k8s::{Namespace, Node, Pod, Secret, Service};
use super::{ConfigError, FieldError, ObjectMeta, ObjectRef};

/// A parsed configuration object. Kinds the mesh does not model yet stay
/// [`Resource::Other`] so a source can pass them through untouched.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Service(Service),
    Secret(Box<Secret>),
    // Boxed: Istio specs are large and most objects are small core kinds.
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    Gateway(Box<Gateway>),
    PeerAuthentication(Box<PeerAuthentication>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    RequestAuthentication(Box<RequestAuthentication>),
    /// Gateway API `HTTPRoute` (`gateway.networking.k8s.io`).
    HttpRoute(Box<HttpRoute>),
    Other(RawObject),
}

/// Any object, before its kind is decoded.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    #[serde(flatten)]
    pub rest: serde_yaml::Mapping,
}

impl RawObject {
    pub fn object_ref(&self) -> ObjectRef {
        // Gateway API's Gateway has the name of Istio's kind: qualified by its group, the
        // two never share a key in the store.
        let kind = if self.group() == gateway_api::GROUP && self.kind == "Gateway" {
            format!("Gateway.{}", gateway_api::GROUP)
        } else {
            self.kind.clone()
        };
        ObjectRef::new(&kind, self.metadata.namespace.as_deref(), &self.metadata.name)
    }

    /// The API group, `""` for core kinds (`v1`).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// Decodes the whole object as `T`, with the failing field's path in the error.
    pub fn decode<T: DeserializeOwned>(&self, value: &serde_yaml::Value) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid {
                object: self.object_ref(),
                error: FieldError::new(
                    if path == "." { String::new() } else { path },
                    e.into_inner().to_string(),
                ),
            }
        })
    }
}

impl Resource {
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Resource::Namespace(o) => ObjectRef::new("Namespace", None, &o.metadata.name),
            Resource::Node(o) => ObjectRef::new("Node", None, &o.metadata.name),
            Resource::Pod(o) => ObjectRef::new("Pod", Some(o.metadata.namespace_or_default()), &o.metadata.name),
            Resource::Service(o) => {
                ObjectRef::new("Service", Some(o.metadata.namespace_or_default()), &o.metadata.name)
            }
            Resource::Secret(o) => namespaced("Secret", &o.metadata),
            Resource::VirtualService(o) => namespaced("VirtualService", &o.metadata),
            Resource::DestinationRule(o) => namespaced("DestinationRule", &o.metadata),
            Resource::Gateway(o) => namespaced("Gateway", &o.metadata),
            Resource::PeerAuthentication(o) => o.object_ref(),
            Resource::AuthorizationPolicy(o) => o.object_ref(),
            Resource::RequestAuthentication(o) => o.object_ref(),
            Resource::HttpRoute(o) => o.object_ref(),
            Resource::Other(o) => o.object_ref(),
        }
    }
}

fn namespaced(kind: &str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(kind, Some(meta.namespace_or_default()), &meta.name)
}

/// Parses every `---`-separated document of `text`. `source_name` (a file path,
/// usually) prefixes errors for documents that are not even objects.
pub fn parse_documents(source_name: &str, text: &str) -> Vec<Result<Resource, ConfigError>> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(value) => out.push(parse_one(source_name, index, value)),
            Err(e) => {
                // The scanner cannot resynchronise after a syntax error (the iterator
                // would yield the same error forever), so the rest of the file is unread.
                let message = e.to_string();
                out.push(Err(ConfigError::Yaml {
                    source_name: source_name.into(),
                    index,
                    message,
                }));
                break;
            }
        }
    }
    out
}

impl Resource {
    /// Decodes one object that is already a YAML/JSON value (the Kubernetes source
    /// converts watched objects with this, so both sources share one decoder).
    pub fn from_value(source_name: &str, value: serde_yaml::Value) -> Result<Resource, ConfigError> {
        parse_one(source_name, 0, value)
    }
}

fn parse_one(source_name: &str, index: usize, value: serde_yaml::Value) -> Result<Resource, ConfigError> {
    for field in ["apiVersion", "kind", "metadata"] {
        if value.get(field).is_none() {
            return Err(ConfigError::MissingField {
                source_name: source_name.into(),
                index,
                field,
            });
        }
    }
    let raw: RawObject = serde_yaml::from_value(value.clone()).map_err(|e| ConfigError::Yaml {
        source_name: source_name.into(),
        index,
        message: e.to_string(),
    })?;
    if raw.metadata.name.is_empty() {
        return Err(ConfigError::MissingField {
            source_name: source_name.into(),
            index,
            field: "metadata.name",
        });
    }
    decode_kind(raw, &value)
}

fn decode_kind(raw: RawObject, value: &serde_yaml::Value) -> Result<Resource, ConfigError> {
    Ok(match (raw.group(), raw.kind.as_str()) {
        ("", "Namespace") => Resource::Namespace(raw.decode(value)?),
        ("", "Node") => Resource::Node(raw.decode(value)?),
        ("", "Pod") => Resource::Pod(raw.decode(value)?),
        ("", "Service") => Resource::Service(raw.decode(value)?),
        ("", "Secret") => Resource::Secret(Box::new(raw.decode(value)?)),
        (networking::GROUP, "VirtualService" | "DestinationRule" | "Gateway") => decode_istio_networking(raw, value)?,
        (security::GROUP, "PeerAuthentication") => decode_peer_authentication(raw, value)?,
        (security::GROUP, "AuthorizationPolicy") => decode_authorization_policy(raw, value)?,
        (security::GROUP, "RequestAuthentication") => decode_request_authentication(raw, value)?,
        (gateway_api::GROUP, "HTTPRoute") => decode_http_route(raw, value)?,
        _ => Resource::Other(raw),
    })
}

/// Validated at the edge: an invalid policy is rejected alone and keeps its last good version.
fn decode_peer_authentication(raw: RawObject, value: &serde_yaml::Value) -> Result<Resource, ConfigError> {
    check_security_version(&raw)?;
    let pa: PeerAuthentication = raw.decode(value)?;
    pa.validate()?;
    Ok(Resource::PeerAuthentication(Box::new(pa)))
}

/// Validated (and compiled once) at the edge: an invalid policy is rejected alone and keeps
/// its last good version. CUSTOM passes validation on purpose: its targets fail closed.
fn decode_authorization_policy(raw: RawObject, value: &serde_yaml::Value) -> Result<Resource, ConfigError> {
    check_security_version(&raw)?;
    let ap: AuthorizationPolicy = raw.decode(value)?;
    ap.validate()?;
    Ok(Resource::AuthorizationPolicy(Box::new(ap)))
}

/// Validated at the edge like PeerAuthentication (a malformed JWKS is a field error).
fn decode_request_authentication(raw: RawObject, value: &serde_yaml::Value) -> Result<Resource, ConfigError> {
    check_security_version(&raw)?;
    let ra: RequestAuthentication = raw.decode(value)?;
    ra.validate()?;
    Ok(Resource::RequestAuthentication(Box::new(ra)))
}

fn decode_http_route(raw: RawObject, value: &serde_yaml::Value) -> Result<Resource, ConfigError> {
    let version = raw.api_version.rsplit_once('/').map_or("", |(_, v)| v);
    if !gateway_api::VERSIONS.contains(&version) {
        return Err(ConfigError::UnsupportedVersion {
            object: raw.object_ref(),
            api_version: raw.api_version.clone(),
        });
    }
    Ok(Resource::HttpRoute(Box::new(raw.decode(value)?)))
}

fn check_security_version(raw: &RawObject) -> Result<(), ConfigError> {
    let version = raw.api_version.rsplit_once('/').map_or("", |(_, v)| v);
    if security::VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(ConfigError::UnsupportedVersion {
        object: raw.object_ref(),
        api_version: raw.api_version.clone(),
    })
}

fn decode_istio_networking(raw: RawObject, value: &serde_yaml::Value) -> Result<Resource, ConfigError> {
    let version = raw.api_version.rsplit_once('/').map_or("", |(_, v)| v);
    if !networking::VERSIONS.contains(&version) {
        let api_version = raw.api_version.clone();
        return Err(ConfigError::UnsupportedVersion {
            object: raw.object_ref(),
            api_version,
        });
    }
    Ok(match raw.kind.as_str() {
        "VirtualService" => Resource::VirtualService(Box::new(raw.decode(value)?)),
        "DestinationRule" => Resource::DestinationRule(Box::new(raw.decode(value)?)),
        _ => Resource::Gateway(Box::new(raw.decode(value)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_documents_and_reports_bad_ones_alone() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {nodeName: [x]}\n---\n\
                    apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n";
        let out = parse_documents("t.yaml", text);
        assert_eq!(out.len(), 3);
        assert!(matches!(out[0], Ok(Resource::Namespace(_))));
        let err = out[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("Pod a/p: spec.nodeName:"), "{err}");
        assert!(matches!(out[2], Ok(Resource::Node(_))));
    }

    #[test]
    fn malformed_yaml_names_the_source_and_document() {
        let out = parse_documents("bad.yaml", "kind: [unclosed");
        let err = out[0].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml: document 0: malformed YAML"), "{err}");
    }

    #[test]
    fn istio_networking_kinds_decode_in_every_version() {
        for version in ["v1", "v1beta1", "v1alpha3"] {
            let text = format!(
                "apiVersion: networking.istio.io/{version}\nkind: VirtualService\nmetadata: {{name: r, namespace: b}}\n\
                 spec: {{hosts: [reviews], http: [{{route: [{{destination: {{host: reviews, subset: v1}}}}]}}]}}\n---\n\
                 apiVersion: networking.istio.io/{version}\nkind: DestinationRule\nmetadata: {{name: r}}\n\
                 spec: {{host: reviews, subsets: [{{name: v1, labels: {{version: v1}}}}]}}\n---\n\
                 apiVersion: networking.istio.io/{version}\nkind: Gateway\nmetadata: {{name: g}}\n\
                 spec: {{servers: [{{port: {{number: 80, protocol: HTTP, name: http}}, hosts: ['*']}}]}}\n"
            );
            let out = parse_documents("i.yaml", &text);
            assert!(
                matches!(&out[0], Ok(Resource::VirtualService(v)) if v.spec.http[0].route[0].destination.subset.as_deref() == Some("v1")),
                "{out:?}"
            );
            assert!(matches!(&out[1], Ok(Resource::DestinationRule(d)) if d.spec.subsets.len() == 1));
            assert_eq!(
                out[1].as_ref().unwrap().object_ref().to_string(),
                "DestinationRule default/r"
            );
            assert!(matches!(&out[2], Ok(Resource::Gateway(_))));
        }
    }

    #[test]
    fn istio_unknown_version_and_unknown_field_are_rejected_with_path() {
        let out = parse_documents(
            "i.yaml",
            "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: r}\n",
        );
        assert!(matches!(out[0], Err(ConfigError::UnsupportedVersion { .. })), "{out:?}");
        let out = parse_documents(
            "i.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: d}\n\
             spec: {http: [{}, {retries: {attempts: 2, retryon: 5xx}}]}\n",
        );
        let err = out[0].as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("VirtualService d/r: spec.http[1].retries.retryon: unknown field `retryon`"),
            "{err}"
        );
    }

    #[test]
    fn gateway_api_gateway_and_istio_gateway_of_one_name_are_distinct_objects() {
        let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\n---\n\
                    apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\n\
                    spec: {gatewayClassName: istio-waypoint}\n";
        let refs: Vec<String> = parse_documents("g.yaml", text)
            .into_iter()
            .map(|r| r.unwrap().object_ref().to_string())
            .collect();
        assert_eq!(refs, ["Gateway n/g", "Gateway.gateway.networking.k8s.io n/g"]);
    }

    #[test]
    fn missing_name_is_reported() {
        let out = parse_documents("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {}\n");
        assert!(out[0].as_ref().unwrap_err().to_string().contains("metadata.name"));
    }
}
