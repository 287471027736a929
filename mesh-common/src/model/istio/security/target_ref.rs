//! `targetRef` / `targetRefs` (Gateway API policy attachment, GEP-2648) as the security
//! kinds write them: in ambient mode a policy reaches a waypoint or a gateway this way
//! (kind `Gateway` naming it, or kind `Service` for a Service it serves), never by selector.

use serde::{Deserialize, Serialize};

use crate::model::FieldError;

/// The Gateway API group (`Gateway`, `GatewayClass`).
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    // Defaults, so a missing kind or name is reported with its field path by `validate`.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// Istio requires it to be empty or the policy's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a policy can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TargetKind {
    /// A waypoint or a gateway, by its Gateway name (`gateway.networking.k8s.io/gateway-name`).
    Gateway,
    /// Every waypoint of the class (`istio-waypoint`), only from the root namespace.
    GatewayClass,
    /// A Service, enforced by the waypoint that serves it.
    Service,
    /// A ServiceEntry, enforced by the waypoint that serves it.
    ServiceEntry,
}

/// A validated target: kind, namespace (the policy's) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Target {
    pub kind: TargetKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::Gateway => "Gateway",
            TargetKind::GatewayClass => "GatewayClass",
            TargetKind::Service => "Service",
            TargetKind::ServiceEntry => "ServiceEntry",
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl PolicyTargetReference {
    /// Checks kind/group and the namespace rule; `path` is e.g. `spec.targetRefs[0]`.
    pub fn validate(&self, path: &str, policy_namespace: &str) -> Result<Target, FieldError> {
        let kind = match (self.group.as_str(), self.kind.as_str()) {
            (GATEWAY_API_GROUP, "Gateway") => TargetKind::Gateway,
            (GATEWAY_API_GROUP, "GatewayClass") => TargetKind::GatewayClass,
            ("" | "core", "Service") => TargetKind::Service,
            ("networking.istio.io", "ServiceEntry") => TargetKind::ServiceEntry,
            (group, kind) => {
                return Err(FieldError::new(
                    format!("{path}.kind"),
                    format!(
                        "cannot attach to {kind} (group `{group}`): supported targets are Gateway and GatewayClass \
                         (group {GATEWAY_API_GROUP}), Service (group \"\") and ServiceEntry (group networking.istio.io)"
                    ),
                ));
            }
        };
        if self.name.is_empty() {
            return Err(FieldError::new(format!("{path}.name"), "a target needs a name"));
        }
        match self.namespace.as_deref() {
            None | Some("") => {}
            Some(ns) if ns == policy_namespace => {}
            Some(ns) => {
                return Err(FieldError::new(
                    format!("{path}.namespace"),
                    format!("`{ns}`: a policy can only target objects of its own namespace `{policy_namespace}`"),
                ));
            }
        }
        Ok(Target {
            kind,
            namespace: policy_namespace.to_owned(),
            name: self.name.clone(),
        })
    }
}

/// How a security policy attaches, checked once for every kind: `targetRefs` or the
/// deprecated single `targetRef` (not both), and never together with a `selector`.
pub fn validate_attachment(
    has_selector: bool,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    policy_namespace: &str,
) -> Result<Vec<Target>, FieldError> {
    if target_ref.is_some() && !target_refs.is_empty() {
        return Err(FieldError::new(
            "spec.targetRef",
            "targetRef and targetRefs cannot be used together",
        ));
    }
    let targets = validate_targets(target_ref, target_refs, policy_namespace)?;
    if has_selector && !targets.is_empty() {
        return Err(FieldError::new(
            "spec.selector",
            "only one of selector and targetRef/targetRefs can be set",
        ));
    }
    Ok(targets)
}

/// `targetRefs`, or the deprecated single `targetRef` when `targetRefs` is empty.
fn validate_targets(
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    policy_namespace: &str,
) -> Result<Vec<Target>, FieldError> {
    if !target_refs.is_empty() {
        return target_refs
            .iter()
            .enumerate()
            .map(|(i, t)| t.validate(&format!("spec.targetRefs[{i}]"), policy_namespace))
            .collect();
    }
    target_ref
        .map(|t| t.validate("spec.targetRef", policy_namespace))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(group: &str, kind: &str, ns: Option<&str>) -> PolicyTargetReference {
        PolicyTargetReference {
            group: group.into(),
            kind: kind.into(),
            name: "n".into(),
            namespace: ns.map(Into::into),
        }
    }

    #[test]
    fn kinds_and_namespaces() {
        let ok = r(GATEWAY_API_GROUP, "Gateway", None).validate("p", "a").unwrap();
        assert_eq!(ok.kind, TargetKind::Gateway);
        assert_eq!(
            r("", "Service", Some("a")).validate("p", "a").unwrap().kind,
            TargetKind::Service
        );
        let e = r("apps", "Deployment", None)
            .validate("spec.targetRefs[1]", "a")
            .unwrap_err();
        assert_eq!(e.path, "spec.targetRefs[1].kind");
        let e = r("", "Service", Some("b")).validate("spec.targetRef", "a").unwrap_err();
        assert_eq!(e.path, "spec.targetRef.namespace");
    }
}
