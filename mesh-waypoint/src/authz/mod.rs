//! L7 AuthorizationPolicy at the waypoint and the ingress gateway, with the shared
//! evaluator of `mesh_common::authz` (CUSTOM fails closed → DENY → ALLOW).
//!
//! Which policies apply (Istio's attachment for waypoints and gateways):
//! - a waypoint: `targetRefs` kind `Gateway` naming it, and kind `Service` naming the
//!   Service the request is for; never selector-based or namespace-wide policies
//!   (those are the node daemons', at L4);
//! - an ingress gateway: `targetRefs` kind `Gateway` naming it, plus the policies that
//!   select its pod (selector, or none: its namespace; and the root namespace).
//!
//! What a request is matched on: host, method, path, port, headers, `request.auth.*`
//! from a verified JWT, and at a waypoint `source.principal` = the HBONE peer's
//! identity (the client workload's certificate). `source.ip` is the address of the
//! connection that carried the request; the client address in HBONE's `forwarded:
//! for=` is not trusted for authorization.

pub mod warnings;

use std::net::{IpAddr, SocketAddr};

use http::request::Parts;
use mesh_common::authz::{AuthAttributes, Evaluation, HttpAttributes, Policy, PolicySet, Request, Target, TargetKind};

use crate::authn::VerifiedJwt;
use crate::authn::attach::ProxyScope;
use crate::proxy::server::PeerIdentity;

/// Envoy's body for an RBAC denial; Bookinfo users know it.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// The policies in force for a request for `service` (`(namespace, name)`) at `scope`.
pub fn policies_for<'a>(set: &'a PolicySet, scope: &'a ProxyScope, service: Option<(&str, &str)>) -> Vec<&'a Policy> {
    let mut wanted = Vec::new();
    let mut out: Vec<&Policy> = Vec::new();
    match scope {
        ProxyScope::Waypoint { name, namespace } => {
            wanted.push(target(TargetKind::Gateway, namespace, name));
            wanted.push(target(
                TargetKind::GatewayClass,
                set.root_namespace(),
                crate::authn::attach::WAYPOINT_CLASS,
            ));
            if let Some((ns, svc)) = service {
                wanted.push(target(TargetKind::Service, ns, svc));
            }
        }
        ProxyScope::Gateway {
            name,
            namespace,
            labels,
        } => {
            if let Some(name) = name {
                wanted.push(target(TargetKind::Gateway, namespace, name));
            }
            out.extend(set.for_workload(namespace, labels));
        }
    }
    out.extend(
        set.policies()
            .iter()
            .filter(|p| p.targets.iter().any(|t| wanted.contains(t)))
            .map(|p| &**p),
    );
    out
}

fn target(kind: TargetKind, namespace: &str, name: &str) -> Target {
    Target {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The `request.auth.*` attributes of a verified token.
pub fn auth_attributes(jwt: &VerifiedJwt) -> AuthAttributes {
    AuthAttributes {
        principal: jwt.principal.clone(),
        audiences: jwt.audiences.clone(),
        presenter: jwt.presenter.clone(),
        claims: jwt.claims.clone(),
    }
}

/// Evaluates `policies` for one HTTP request. `conn_peer` is the address of the
/// downstream connection (the HBONE connection's at a waypoint), `local` the
/// destination the client asked for.
pub fn evaluate(
    policies: &[&Policy],
    parts: &Parts,
    authority: &str,
    conn_peer: IpAddr,
    local: SocketAddr,
    auth: Option<&AuthAttributes>,
) -> Evaluation {
    let identity = parts.extensions.get::<PeerIdentity>();
    let http = HttpAttributes {
        host: authority,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        headers: &parts.headers,
        remote_ip: None,
        sni: None,
        auth,
    };
    let request = Request {
        source_principal: identity.map(|i| &*i.principal),
        source_ip: Some(identity.map_or(conn_peer, |i| i.conn_ip)),
        destination_ip: local.ip(),
        destination_port: local.port(),
        http: Some(&http),
    };
    mesh_common::authz::evaluate(policies.iter().copied(), &request)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mesh_common::authz::Decision;
    use mesh_common::model::parse_documents;
    use mesh_common::model::store::ConfigStore;

    use super::*;

    const POLICIES: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
        metadata: {name: allow-nothing, namespace: bookinfo}\n\
        spec: {targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]}\n---\n\
        apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
        metadata: {name: details-viewer, namespace: bookinfo}\n\
        spec:\n  targetRefs: [{kind: Service, group: '', name: details}]\n  rules:\n  \
        - from: [{source: {principals: [cluster.local/ns/bookinfo/sa/bookinfo-productpage]}}]\n    \
        to: [{operation: {methods: [GET]}}]\n---\n\
        apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
        metadata: {name: no-admin, namespace: bookinfo}\n\
        spec:\n  targetRefs: [{kind: Service, group: '', name: details}]\n  action: DENY\n  rules:\n  \
        - to: [{operation: {paths: [/admin/*]}}]\n";

    fn set() -> PolicySet {
        let mut store = ConfigStore::default();
        let report = store.apply_source("p", parse_documents("p", POLICIES), &|_| Ok(()));
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        PolicySet::from_store(&store, "istio-system")
    }

    fn decide(set: &PolicySet, service: &str, method: &str, path: &str, principal: Option<&str>) -> Decision {
        let scope = ProxyScope::Waypoint {
            name: "waypoint".into(),
            namespace: "bookinfo".into(),
        };
        let policies = policies_for(set, &scope, Some(("bookinfo", service)));
        let mut parts = http::Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        if let Some(p) = principal {
            parts.extensions.insert(PeerIdentity {
                principal: Arc::from(p),
                conn_ip: [198, 18, 1, 2].into(),
            });
        }
        let local = SocketAddr::from(([198, 19, 0, 11], 9080));
        evaluate(&policies, &parts, "details:9080", [198, 18, 1, 9].into(), local, None).decision
    }

    #[test]
    fn waypoint_applies_gateway_and_service_attached_policies() {
        let set = set();
        let pp = Some("cluster.local/ns/bookinfo/sa/bookinfo-productpage");
        let denied_by = |d: Decision| match d {
            Decision::Deny(denial) => denial.policy.to_string(),
            Decision::Allow => "allowed".into(),
        };
        assert_eq!(decide(&set, "details", "GET", "/details/0", pp), Decision::Allow);
        // Another identity, another method, no identity: the ALLOW does not match.
        let other = Some("cluster.local/ns/bookinfo/sa/bookinfo-reviews");
        assert_ne!(decide(&set, "details", "GET", "/details/0", other), Decision::Allow);
        assert_ne!(decide(&set, "details", "POST", "/details/0", pp), Decision::Allow);
        assert_ne!(decide(&set, "details", "GET", "/details/0", None), Decision::Allow);
        // DENY beats ALLOW.
        assert_eq!(
            denied_by(decide(&set, "details", "GET", "/admin/x", pp)),
            "AuthorizationPolicy bookinfo/no-admin"
        );
        // reviews has only the waypoint-wide allow-nothing.
        assert_eq!(
            denied_by(decide(&set, "reviews", "GET", "/reviews/0", pp)),
            "AuthorizationPolicy bookinfo/allow-nothing"
        );
    }
}
