//! Istio's decision procedure: CUSTOM (unsupported here: fails closed) → DENY → ALLOW.
//! A target with at least one ALLOW policy accepts only what some ALLOW rule matches;
//! AUDIT policies are reported when they match and change nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::policy::{Attr, Check, Policy, Rule, Target, Values};
use super::request::{Request, principal_namespace};
use crate::model::istio::security::authorization_policy::Action;
use crate::model::store::ConfigStore;
use crate::model::{ObjectRef, Resource};

/// The outcome for one connection or request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Decision,
    /// AUDIT policies that matched.
    pub audits: Vec<ObjectRef>,
    /// Field paths (`AuthorizationPolicy ns/name: spec.rules[0].to[0].operation.paths`)
    /// that needed HTTP attributes the caller did not have and were resolved fail-safe.
    pub fail_safe: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

/// Which policy refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub policy: ObjectRef,
    pub reason: DenyReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// A CUSTOM policy applies: the mesh has no external authorizer, so it fails closed.
    Unsupported,
    /// Rule `rule` of a DENY policy matched.
    DenyRule { rule: usize },
    /// ALLOW policies apply and none of their rules matched (`policy` is the first of them).
    NoAllowMatch { allow_policies: usize },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            DenyReason::Unsupported => write!(
                f,
                "{} has action CUSTOM, which is not supported: fail closed",
                self.policy
            ),
            DenyReason::DenyRule { rule } => write!(f, "{}: DENY spec.rules[{rule}] matched", self.policy),
            DenyReason::NoAllowMatch { allow_policies: 1 } => {
                write!(f, "{}: no ALLOW rule matched", self.policy)
            }
            DenyReason::NoAllowMatch { allow_policies } => write!(
                f,
                "no ALLOW rule matched in {} and {} other ALLOW policies",
                self.policy,
                allow_policies - 1
            ),
        }
    }
}

impl Evaluation {
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// Evaluates `policies` (those that apply to the target, in any order) against `req`.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, req: &Request<'_>) -> Evaluation {
    let mut custom = None;
    let mut deny = None;
    let mut first_allow = None;
    let (mut allow_policies, mut allowed) = (0usize, false);
    let mut audits = Vec::new();
    let mut fail_safe = Vec::new();
    for p in policies {
        match p.action {
            Action::Custom => custom = custom.or(Some(p)),
            Action::Deny if deny.is_none() => {
                if let Some(rule) = p.first_match(req, &mut fail_safe) {
                    deny = Some((p, rule));
                }
            }
            Action::Deny => {}
            Action::Allow => {
                allow_policies += 1;
                first_allow = first_allow.or(Some(p));
                if !allowed {
                    allowed = p.first_match(req, &mut fail_safe).is_some();
                }
            }
            Action::Audit => {
                if p.first_match(req, &mut fail_safe).is_some() {
                    audits.push(p.object.clone());
                }
            }
        }
    }
    let denial = |p: &Policy, reason| {
        Decision::Deny(Denial {
            policy: p.object.clone(),
            reason,
        })
    };
    let decision = match (custom, deny, first_allow) {
        (Some(p), _, _) => denial(p, DenyReason::Unsupported),
        (None, Some((p, rule)), _) => denial(p, DenyReason::DenyRule { rule }),
        (None, None, Some(p)) if !allowed => denial(p, DenyReason::NoAllowMatch { allow_policies }),
        _ => Decision::Allow,
    };
    Evaluation {
        decision,
        audits,
        fail_safe,
    }
}

impl Policy {
    /// The index of the first rule that matches.
    fn first_match(&self, req: &Request<'_>, fail_safe: &mut Vec<String>) -> Option<usize> {
        self.rules.iter().position(|r| {
            if req.http.is_none() && !r.l7_fields.is_empty() {
                fail_safe.extend(r.l7_fields.iter().map(|f| format!("{}: {f}", self.object)));
                // Like ztunnel: an ALLOW (or AUDIT) rule that needs HTTP never matches at
                // L4; a DENY rule matches on its L4 fields alone (more restrictive).
                if self.action != Action::Deny {
                    return false;
                }
            }
            r.matches(req)
        })
    }
}

impl Rule {
    fn matches(&self, req: &Request<'_>) -> bool {
        let all = |checks: &Vec<Check>| checks.iter().all(|c| c.matches(req));
        (self.from.is_empty() || self.from.iter().any(all))
            && (self.to.is_empty() || self.to.iter().any(all))
            && all(&self.when)
    }
}

impl Check {
    fn matches(&self, req: &Request<'_>) -> bool {
        let Some(hit) = self.hit(req) else {
            // An HTTP attribute at L4: only DENY rules get here, where it counts as matched.
            return true;
        };
        hit != self.negate
    }

    /// Whether the attribute is present and one of the values matches it; `None` when
    /// the attribute needs HTTP and there is none.
    fn hit(&self, req: &Request<'_>) -> Option<bool> {
        let strings = |value: Option<&str>| match (&self.values, value) {
            (Values::Strings(ms), Some(v)) => ms.iter().any(|m| m.matches(v)),
            _ => false,
        };
        let ips = |value: Option<IpAddr>| match (&self.values, value) {
            (Values::Ips(cidrs), Some(ip)) => cidrs.iter().any(|c| c.contains(ip)),
            _ => false,
        };
        let http = req.http;
        Some(match &self.attr {
            Attr::SourcePrincipal => strings(req.source_principal),
            Attr::SourceNamespace => strings(req.source_principal.and_then(principal_namespace)),
            Attr::SourceIp => ips(req.source_ip),
            Attr::DestinationIp => ips(Some(req.destination_ip)),
            Attr::DestinationPort => matches!(&self.values, Values::Ports(ps) if ps.contains(&req.destination_port)),
            Attr::RemoteIp => ips(http?.remote_ip.or(req.source_ip)),
            Attr::Sni => strings(http?.sni),
            Attr::Host => host_matches(&self.values, http?.host),
            Attr::Method => strings(Some(http?.method)),
            Attr::Path => strings(Some(http?.path.split('?').next().unwrap_or_default())),
            Attr::RequestPrincipal => strings(http?.auth.map(|a| a.principal.as_str())),
            Attr::Header(name) => {
                let joined = joined_header(http?.headers, name);
                strings(joined.as_deref())
            }
            Attr::AuthAudiences => http?
                .auth
                .is_some_and(|a| a.audiences.iter().any(|v| strings(Some(v.as_str())))),
            Attr::AuthPresenter => strings(http?.auth.and_then(|a| a.presenter.as_deref())),
            Attr::AuthClaim(path) => http?
                .auth
                .is_some_and(|a| a.claim(path).iter().any(|v| strings(Some(v.as_str())))),
        })
    }
}

/// Hosts match case-insensitively; a pattern without a port also matches the host
/// with any port (`reviews` matches `reviews:9080`).
fn host_matches(values: &Values, host: &str) -> bool {
    let Values::Strings(ms) = values else { return false };
    let host = host.to_ascii_lowercase();
    let bare = host
        .rsplit_once(':')
        .filter(|(_, p)| p.parse::<u16>().is_ok())
        .map(|(h, _)| h);
    ms.iter()
        .any(|m| m.matches(&host) || bare.is_some_and(|b| m.matches(b)))
}

/// Several values of one header are matched as one comma-joined value, like Envoy.
fn joined_header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Every AuthorizationPolicy of one configuration snapshot, compiled, with the scope
/// rules: the root namespace applies mesh-wide, any other namespace to its own workloads,
/// `selector.matchLabels` narrows to pods, `targetRefs` attach to waypoints / gateways.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicySet {
    root_namespace: String,
    policies: Vec<Arc<Policy>>,
}

impl PolicySet {
    pub fn new(mut policies: Vec<Arc<Policy>>, root_namespace: &str) -> Self {
        // A stable order, so every node and every log agrees on "the first" policy.
        policies.sort_by(|a, b| a.object.cmp(&b.object));
        Self {
            root_namespace: root_namespace.to_owned(),
            policies,
        }
    }

    /// The store's AuthorizationPolicies (decoding validated them; CUSTOM ones are kept
    /// so their targets fail closed).
    pub fn from_store(store: &ConfigStore, root_namespace: &str) -> Self {
        let policies = store
            .iter()
            .filter_map(|r| match r {
                Resource::AuthorizationPolicy(ap) => ap.validate().ok().map(Arc::new),
                _ => None,
            })
            .collect();
        Self::new(policies, root_namespace)
    }

    pub fn policies(&self) -> &[Arc<Policy>] {
        &self.policies
    }

    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// Policies a workload enforces itself (the node daemon): no `targetRefs`; in the
    /// root namespace or the workload's own; selector, if any, matching its labels
    /// (a root-namespace selector matches in every namespace).
    pub fn for_workload<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies
            .iter()
            .filter(move |p| {
                p.targets.is_empty()
                    && (p.namespace == namespace || p.namespace == self.root_namespace)
                    && p.selector
                        .as_ref()
                        .is_none_or(|s| crate::model::k8s::selects(s, labels))
            })
            .map(|p| &**p)
    }

    /// Policies attached by `targetRef(s)` to `target` (a waypoint or gateway by its
    /// Gateway name, or a Service served through a waypoint).
    pub fn for_target<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies
            .iter()
            .filter(move |p| p.targets.contains(target))
            .map(|p| &**p)
    }

    /// One line per policy in force that cannot be enforced as written (CUSTOM).
    pub fn unsupported(&self) -> impl Iterator<Item = String> + '_ {
        self.policies.iter().filter_map(|p| p.unsupported())
    }
}
