//! What `check`, `/config_dump` and the log say about AuthorizationPolicies in force
//! that will not do what they read as: CUSTOM (its targets refuse everything), and
//! selector-based (or namespace-wide) policies with L7 fields on pods behind a
//! waypoint. Those are enforced by the node daemons at L4, where an L7 field makes an
//! ALLOW rule never match and a DENY rule always match; attaching them to the
//! waypoint (`targetRefs`) is what applies them to HTTP requests.

use mesh_common::authz::{Policy, PolicySet};

use crate::discovery::{Discovery, PodInfo};

pub fn warnings(set: &PolicySet, discovery: &Discovery) -> Vec<String> {
    let mut out: Vec<String> = set.unsupported().collect();
    for p in set.policies() {
        if let Some(w) = l7_behind_waypoint(p, set.root_namespace(), discovery) {
            out.push(w);
        }
    }
    out
}

fn l7_behind_waypoint(p: &Policy, root: &str, discovery: &Discovery) -> Option<String> {
    if !p.targets.is_empty() {
        return None;
    }
    let field = p.l7_fields().next()?;
    let (svc, pod) = discovery.services.values().find_map(|s| {
        s.waypoint.as_ref()?;
        s.pods.iter().find(|pod| selects(p, root, pod)).map(|pod| (s, pod))
    })?;
    Some(format!(
        "{}: {field}: L7 field in a policy that selects pod {}/{} behind waypoint `{}` (Service {}): \
         the node daemon enforces it at L4, where this rule fails safe (ALLOW never matches, DENY always \
         matches); attach it to the waypoint with targetRefs (kind Service or Gateway) instead",
        p.object,
        pod.namespace,
        pod.name,
        svc.waypoint.as_deref().unwrap_or_default(),
        svc.fqdn
    ))
}

fn selects(p: &Policy, root: &str, pod: &PodInfo) -> bool {
    (p.namespace == pod.namespace || p.namespace == root) && p.selector.as_ref().is_none_or(|s| pod.has_labels(s))
}
