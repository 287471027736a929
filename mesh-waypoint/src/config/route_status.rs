//! Gateway API status of each HTTPRoute, per parentRef: `Accepted` and `ResolvedRefs`
//! with the API's reasons, computed with every snapshot and shown in `/config_dump`
//! (`httpRouteStatus`) and `mesh-waypoint check`. Not written back to the API server.
//! A route that does not compile never gets here: it is in `rejected` with its path.

use mesh_common::model::gateway_api::http_route as gw;
use serde::Serialize;

use super::hosts::qualify;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    pub route: String,
    pub parents: Vec<ParentStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    /// `Service bookinfo/reviews:9080`, `Gateway istio-system/ingress`.
    pub parent_ref: String,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn condition(type_: &'static str, ok: bool, reason: &'static str, message: String) -> Condition {
    Condition {
        type_,
        status: if ok { "True" } else { "False" },
        reason,
        message,
    }
}

/// `is_service(fqdn)` says whether a Service of that FQDN is known.
pub fn compute(h: &gw::HttpRoute, is_service: impl Fn(&str) -> bool) -> RouteStatus {
    let ns = h.metadata.namespace_or_default();
    let resolved = resolved_refs(h, ns, &is_service);
    let parents = h
        .spec
        .parent_refs
        .iter()
        .map(|p| {
            let parent_ns = p.namespace.as_deref().unwrap_or(ns);
            let kind = p.kind.as_deref().unwrap_or("Gateway");
            let port = p.port.map(|n| format!(":{n}")).unwrap_or_default();
            let accepted = if !p.is_service() {
                condition(
                    "Accepted",
                    false,
                    "UnsupportedValue",
                    "only Service parents (mesh routes) are served by the waypoint".into(),
                )
            } else if !is_service(&qualify(&p.name, parent_ns)) {
                condition(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    format!("Service {parent_ns}/{} not found", p.name),
                )
            } else {
                condition(
                    "Accepted",
                    true,
                    "Accepted",
                    "attached to the Service's waypoint routes".into(),
                )
            };
            ParentStatus {
                parent_ref: format!("{kind} {parent_ns}/{}{port}", p.name),
                conditions: vec![accepted, resolved.clone()],
            }
        })
        .collect();
    RouteStatus {
        route: h.object_ref().to_string(),
        parents,
    }
}

/// Every backend and mirror names a known Service (kinds and namespaces other than
/// the route's own Services are refused before, at validation).
fn resolved_refs(h: &gw::HttpRoute, ns: &str, is_service: &impl Fn(&str) -> bool) -> Condition {
    let mut missing: Vec<String> = Vec::new();
    for rule in &h.spec.rules {
        let backends = rule.backend_refs.iter().map(|b| b.name.as_str());
        let mirrors = rule
            .filters
            .iter()
            .filter_map(|f| f.request_mirror.as_ref())
            .map(|m| m.backend_ref.name.as_str());
        for name in backends.chain(mirrors) {
            if !is_service(&qualify(name, ns)) && !missing.iter().any(|m| m == name) {
                missing.push(name.to_owned());
            }
        }
    }
    if missing.is_empty() {
        condition("ResolvedRefs", true, "ResolvedRefs", "all references resolved".into())
    } else {
        condition(
            "ResolvedRefs",
            false,
            "BackendNotFound",
            format!("Service(s) not found in {ns}: {}", missing.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use mesh_common::model::{Resource, parse_documents};

    use super::*;

    /// A parent's reference and its conditions as (type, status, reason).
    type Brief<'a> = (String, Vec<(&'a str, &'a str, &'a str)>);

    #[test]
    fn accepted_and_resolved_refs_with_reasons() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: bookinfo}\n\
                    spec:\n  parentRefs: [{group: '', kind: Service, name: reviews, port: 9080}, {group: '', kind: Service, name: gone}, {name: ingress}]\n\
                    \x20 rules: [{backendRefs: [{name: reviews-v1, port: 9080}, {name: reviews-v9, port: 9080}]}]\n";
        let Ok(Resource::HttpRoute(h)) = parse_documents("t", yaml).remove(0) else {
            panic!("HTTPRoute")
        };
        let known = [
            "reviews.bookinfo.svc.cluster.local",
            "reviews-v1.bookinfo.svc.cluster.local",
        ];
        let s = compute(&h, |f| known.contains(&f));
        let brief: Vec<Brief> = s
            .parents
            .iter()
            .map(|p| {
                let c = p.conditions.iter().map(|c| (c.type_, c.status, c.reason)).collect();
                (p.parent_ref.clone(), c)
            })
            .collect();
        let missing = ("ResolvedRefs", "False", "BackendNotFound");
        assert_eq!(
            brief,
            [
                (
                    "Service bookinfo/reviews:9080".to_owned(),
                    vec![("Accepted", "True", "Accepted"), missing]
                ),
                (
                    "Service bookinfo/gone".to_owned(),
                    vec![("Accepted", "False", "NoMatchingParent"), missing]
                ),
                (
                    "Gateway bookinfo/ingress".to_owned(),
                    vec![("Accepted", "False", "UnsupportedValue"), missing]
                ),
            ]
        );
        assert_eq!(
            s.parents[0].conditions[1].message,
            "Service(s) not found in bookinfo: reviews-v9"
        );
    }
}
