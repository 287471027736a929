//! Which RequestAuthentications apply to a request at this proxy, by Istio's
//! attachment rules for Gateway API workloads (waypoints and gateways carry the
//! `gateway.networking.k8s.io/gateway-name` label):
//! - `targetRefs` kind `Gateway` naming this proxy (same namespace);
//! - at a waypoint, kind `Service` naming the request's destination Service, and kind
//!   `GatewayClass` `istio-waypoint` from the root namespace;
//! - at an ingress gateway also `selector` (or no selector: the whole namespace) in the
//!   gateway's namespace or the root namespace. A waypoint never uses selectors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh_common::model::Resource;
use mesh_common::model::istio::security::target_ref::{Target, TargetKind};

use super::rule::CompiledRule;

/// The GatewayClass of waypoints: a policy targeting it applies to every waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// Who enforces: what attachment rules see of this proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyScope {
    Waypoint {
        name: String,
        namespace: String,
    },
    Gateway {
        /// `gateway.networking.k8s.io/gateway-name`, when the pod has it.
        name: Option<String>,
        namespace: String,
        labels: BTreeMap<String, String>,
    },
}

impl ProxyScope {
    /// True when a policy with these targets / selector in `policy_ns` applies to a
    /// request for `service` (`(namespace, name)` of the destination Service).
    pub fn attaches(
        &self,
        root_namespace: &str,
        policy_ns: &str,
        targets: &[Target],
        selector: Option<&BTreeMap<String, String>>,
        service: Option<(&str, &str)>,
    ) -> bool {
        if !targets.is_empty() {
            return targets.iter().any(|t| self.targets(root_namespace, t, service));
        }
        match self {
            ProxyScope::Waypoint { .. } => false,
            ProxyScope::Gateway { namespace, labels, .. } => {
                (policy_ns == namespace || policy_ns == root_namespace)
                    && selector.is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
            }
        }
    }

    fn targets(&self, root_namespace: &str, t: &Target, service: Option<(&str, &str)>) -> bool {
        match (self, t.kind) {
            (ProxyScope::Waypoint { name, namespace }, TargetKind::Gateway) => {
                &t.name == name && &t.namespace == namespace
            }
            (ProxyScope::Gateway { name, namespace, .. }, TargetKind::Gateway) => {
                name.as_ref() == Some(&t.name) && &t.namespace == namespace
            }
            (ProxyScope::Waypoint { .. }, TargetKind::GatewayClass) => {
                t.name == WAYPOINT_CLASS && t.namespace == root_namespace
            }
            (ProxyScope::Waypoint { .. }, TargetKind::Service) => {
                service.is_some_and(|(ns, name)| ns == t.namespace && name == t.name)
            }
            _ => false,
        }
    }
}

struct Attached {
    object: mesh_common::model::ObjectRef,
    namespace: String,
    targets: Vec<Target>,
    selector: Option<BTreeMap<String, String>>,
    rules: Vec<Arc<CompiledRule>>,
}

/// Every RequestAuthentication of the configuration, compiled once per snapshot.
#[derive(Default)]
pub struct AuthnPolicies {
    policies: Vec<Attached>,
    /// Policies here apply to every proxy they select (`--root-namespace`).
    root_namespace: String,
}

impl AuthnPolicies {
    /// Objects reach here validated (the store rejects invalid ones and keeps their
    /// last good version), so each compiles.
    pub fn build(resources: &[Resource], root_namespace: &str) -> Self {
        let policies = resources
            .iter()
            .filter_map(|r| match r {
                Resource::RequestAuthentication(ra) => ra.validate().ok(),
                _ => None,
            })
            .map(|p| Attached {
                object: p.object.clone(),
                rules: p
                    .rules
                    .iter()
                    .map(|r| Arc::new(CompiledRule::compile(&p.object, r)))
                    .collect(),
                namespace: p.namespace,
                targets: p.targets,
                selector: p.selector,
            })
            .collect();
        Self {
            policies,
            root_namespace: root_namespace.to_owned(),
        }
    }

    /// The rules applying to a request for `service` at `scope`.
    pub fn rules_for(&self, scope: &ProxyScope, service: Option<(&str, &str)>) -> Vec<Arc<CompiledRule>> {
        self.policies
            .iter()
            .filter(|p| {
                scope.attaches(
                    &self.root_namespace,
                    &p.namespace,
                    &p.targets,
                    p.selector.as_ref(),
                    service,
                )
            })
            .flat_map(|p| p.rules.iter().cloned())
            .collect()
    }

    /// Every `jwksUri` some policy names, with its fetch timeout.
    pub fn jwks_uris(&self) -> Vec<(String, Duration)> {
        let mut out: Vec<(String, Duration)> = Vec::new();
        for r in self.policies.iter().flat_map(|p| p.rules.iter()) {
            if let Some(u) = r.jwks_uri()
                && !out.iter().any(|(o, _)| o == u)
            {
                out.push((u.to_owned(), r.fetch_timeout));
            }
        }
        out
    }

    /// Every RequestAuthentication in force, `Kind ns/name`.
    pub fn objects(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.object.to_string()).collect()
    }

    /// For `/config_dump`: object, issuer and key source of every rule.
    pub fn summary(&self) -> Vec<serde_json::Value> {
        self.policies
            .iter()
            .flat_map(|p| p.rules.iter())
            .map(|r| {
                serde_json::json!({
                    "object": r.object.to_string(),
                    "issuer": r.issuer,
                    "audiences": r.audiences,
                    "jwksUri": r.jwks_uri(),
                })
            })
            .collect()
    }
}
