//! RequestAuthentication at the waypoint and the ingress gateway, with Istio's
//! semantics: a request without a token passes (an AuthorizationPolicy with
//! `requestPrincipals` is what makes one required); a request with a token that does
//! not verify is refused with 401; `request.auth.*` comes only from a verified token.
//!
//! [`rule`] compiles `jwtRules`, [`keys`] turns a JWKS into keys, [`jwks`] fetches and
//! caches `jwksUri`, [`verify`] checks one token, [`attach`] finds the policies that
//! apply to a request; this module finds the token and rewrites the request headers.

pub mod attach;
pub mod jwks;
pub mod keys;
pub mod rule;
pub mod verify;

use std::sync::Arc;

use http::HeaderValue;
use http::request::Parts;
use serde_json::Value;

pub use rule::CompiledRule;
pub use verify::{JwtError, JwtReason, VerifiedJwt};

use jwks::JwksCache;
use keys::KeySet;
use rule::{Keys, Location};

/// Finds a token in the request (at the first location any rule names), verifies it
/// against the rules reading that location, and on success applies the rule's
/// forwarding: the token header is removed unless `forwardOriginalToken`, the payload
/// and claims are copied to the configured headers. Those output headers are removed
/// from every request first, so a client cannot supply them itself.
pub async fn authenticate(
    rules: &[Arc<CompiledRule>],
    parts: &mut Parts,
    cache: &JwksCache,
) -> Result<Option<VerifiedJwt>, JwtError> {
    if rules.is_empty() {
        return Ok(None);
    }
    strip_outputs(rules, parts);
    let Some((token, location)) = find_token(rules, parts) else {
        return Ok(None);
    };
    let readers: Vec<&CompiledRule> = rules
        .iter()
        .filter(|r| r.locations.contains(&location))
        .map(Arc::as_ref)
        .collect();
    let keys = fetched_keys(&readers, &token, cache).await;
    let (jwt, rule) = verify::verify(&token, &readers, |r| key_set(r, &keys))?;
    if !rule.forward_original_token
        && let Location::Header { name, .. } = &location
    {
        parts.headers.remove(name);
    }
    write_outputs(rule, &jwt, parts);
    Ok(Some(jwt))
}

/// Keys of the `jwksUri` rules whose issuer the token names (fetched now if never yet).
async fn fetched_keys(readers: &[&CompiledRule], token: &str, cache: &JwksCache) -> Vec<(String, Arc<KeySet>)> {
    let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token)
        .ok()
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned));
    let mut out = Vec::new();
    for r in readers.iter().filter(|r| Some(&r.issuer) == issuer.as_ref()) {
        if let Keys::Uri(uri) = &r.keys
            && let Some(k) = cache.keys(uri, r.fetch_timeout).await
        {
            out.push((uri.clone(), k));
        }
    }
    out
}

fn key_set(rule: &CompiledRule, fetched: &[(String, Arc<KeySet>)]) -> Option<Arc<KeySet>> {
    match &rule.keys {
        Keys::Inline(k) => Some(k.clone()),
        Keys::Uri(uri) => fetched.iter().find(|(u, _)| u == uri).map(|(_, k)| k.clone()),
    }
}

fn find_token(rules: &[Arc<CompiledRule>], parts: &Parts) -> Option<(String, Location)> {
    rules
        .iter()
        .flat_map(|r| r.locations.iter())
        .find_map(|l| token_at(l, parts).map(|t| (t, l.clone())))
}

fn token_at(location: &Location, parts: &Parts) -> Option<String> {
    match location {
        Location::Header { name, prefix } => parts.headers.get_all(name).iter().find_map(|v| {
            let v = v.to_str().ok()?.trim();
            let rest = match v.get(..prefix.len()) {
                Some(p) if p.eq_ignore_ascii_case(prefix) => &v[prefix.len()..],
                _ => return None,
            };
            let t = rest.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }),
        Location::Param(name) => parts.uri.query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name && !v.is_empty()).then(|| v.to_owned())
            })
        }),
        Location::Cookie(name) => parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name && !v.is_empty()).then(|| v.to_owned())
            }),
    }
}

fn strip_outputs(rules: &[Arc<CompiledRule>], parts: &mut Parts) {
    for r in rules {
        if let Some(h) = &r.output_payload_to_header {
            parts.headers.remove(h);
        }
        for (h, _) in &r.output_claim_to_headers {
            parts.headers.remove(h);
        }
    }
}

fn write_outputs(rule: &CompiledRule, jwt: &VerifiedJwt, parts: &mut Parts) {
    if let Some(h) = &rule.output_payload_to_header
        && let Ok(v) = HeaderValue::from_str(&jwt.payload_segment)
    {
        parts.headers.insert(h.clone(), v);
    }
    for (h, claim) in &rule.output_claim_to_headers {
        let path: Vec<&str> = claim.split('.').collect();
        let value = jwt.claim(&[claim.as_str()]).or_else(|| jwt.claim(&path));
        // Envoy copies string, number and boolean claims only.
        let text = match value {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => continue,
        };
        if let Ok(v) = HeaderValue::from_str(&text) {
            parts.headers.insert(h.clone(), v);
        }
    }
}

/// The 401 Envoy's jwt_authn answers, with the reason as its body.
pub fn unauthorized(error: &JwtError) -> http::Response<crate::body::Body> {
    let mut resp = crate::proxy::local_reply::reply(
        http::StatusCode::UNAUTHORIZED,
        crate::proxy::local_reply::Flag::JwtInvalid,
        &error.to_string(),
    );
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mesh\", error=\"invalid_token\""),
    );
    resp
}

#[cfg(test)]
mod tests;
