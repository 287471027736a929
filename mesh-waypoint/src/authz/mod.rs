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
