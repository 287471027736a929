//! Before routing: RequestAuthentication (401 for a token that does not verify), then
//! AuthorizationPolicy. Both read the request headers only, so a refused request
//! never has its body buffered.

use http::Response;
use http::request::Parts;

use super::access_log::AccessLog;
use super::local_reply::Flag;
use crate::authn::{self, VerifiedJwt};
use crate::body::Body;
use crate::config::Config;
use crate::config::snapshot::Snapshot;

/// What the request path learns about the caller: the verified JWT, if any.
pub struct Admitted {
    pub jwt: Option<VerifiedJwt>,
}

/// `(namespace, name)` of the Service a request is for, when it is one.
pub fn destination_service<'a>(snap: &'a Snapshot, host_fqdn: &str) -> Option<(&'a str, &'a str)> {
    let svc = snap.service(host_fqdn)?;
    let name = svc.fqdn.split('.').next()?;
    Some((svc.namespace.as_str(), name))
}

/// Where the request came from and what it asked for, for the policies.
pub struct Origin<'a> {
    pub host_fqdn: &'a str,
    pub authority: &'a str,
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
}

pub async fn admit(
    config: &Config,
    snap: &Snapshot,
    parts: &mut Parts,
    origin: &Origin<'_>,
    log: &mut AccessLog,
) -> Result<Admitted, Response<Body>> {
    let Origin {
        host_fqdn,
        authority,
        peer,
        local,
    } = *origin;
    let service = destination_service(snap, host_fqdn);
    let rules = snap.authn.rules_for(config.scope(), service);
    let jwt = match authn::authenticate(&rules, parts, config.jwks()).await {
        Ok(jwt) => jwt,
        Err(e) => {
            log.flag(Flag::JwtInvalid);
            log.jwt = Some(e.reason().as_str());
            tracing::info!(reason = e.reason().as_str(), host = host_fqdn, "JWT refused: {e}");
            return Err(authn::unauthorized(&e));
        }
    };
    let auth = jwt.as_ref().map(crate::authz::auth_attributes);
    let policies = crate::authz::policies_for(&snap.authz, config.scope(), service);
    if !policies.is_empty() {
        let evaluation = crate::authz::evaluate(&policies, parts, authority, peer.ip(), local, auth.as_ref());
        for audit in &evaluation.audits {
            tracing::info!(policy = %audit, host = host_fqdn, "AUDIT policy matched");
        }
        if let mesh_common::authz::Decision::Deny(denial) = evaluation.decision {
            log.flag(Flag::Rbac);
            log.policy = Some(denial.policy.to_string());
            tracing::debug!(host = host_fqdn, "RBAC denied: {denial}");
            return Err(denied());
        }
    }
    Ok(Admitted { jwt })
}

/// Envoy's RBAC denial: 403 `RBAC: access denied`, flagged `RBAC`.
fn denied() -> Response<Body> {
    let mut resp = Response::new(crate::body::full(crate::authz::DENIED_BODY));
    *resp.status_mut() = http::StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    h.insert(
        super::local_reply::FLAGS_HEADER,
        http::HeaderValue::from_static(Flag::Rbac.code()),
    );
    resp
}
