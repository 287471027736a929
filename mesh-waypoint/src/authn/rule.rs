//! A `jwtRules` entry compiled for the request path: where its token is looked for,
//! where its keys come from, and what is forwarded after verification.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use mesh_common::model::ObjectRef;
use mesh_common::model::istio::security::request_authentication::{KeySource, ValidRule};

use super::keys::KeySet;

/// Istio's default `jwtRules[].timeout` for a `jwksUri` fetch.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a token is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A header; `prefix` (e.g. `Bearer `) must start the value and is stripped.
    Header {
        name: HeaderName,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

impl Location {
    /// Istio's defaults when a rule names no location.
    pub fn defaults() -> Vec<Location> {
        vec![
            Location::Header {
                name: http::header::AUTHORIZATION,
                prefix: "Bearer ".into(),
            },
            Location::Param("access_token".into()),
        ]
    }
}

pub enum Keys {
    Inline(Arc<KeySet>),
    Uri(String),
}

pub struct CompiledRule {
    pub object: ObjectRef,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: Keys,
    pub locations: Vec<Location>,
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<HeaderName>,
    pub output_claim_to_headers: Vec<(HeaderName, String)>,
    pub fetch_timeout: Duration,
}

impl CompiledRule {
    /// `rule` was validated by the model (header names included), so nothing here fails
    /// except a header name `http` refuses, which drops that one output.
    pub fn compile(object: &ObjectRef, rule: &ValidRule) -> Self {
        let mut locations: Vec<Location> = rule
            .from_headers
            .iter()
            .filter_map(|h| {
                Some(Location::Header {
                    name: HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                    prefix: h.prefix.clone(),
                })
            })
            .collect();
        locations.extend(rule.from_params.iter().cloned().map(Location::Param));
        locations.extend(rule.from_cookies.iter().cloned().map(Location::Cookie));
        if locations.is_empty() {
            locations = Location::defaults();
        }
        let keys = match &rule.keys {
            KeySource::Inline(set) => Keys::Inline(Arc::new(KeySet::from_jwks(set))),
            KeySource::Uri(uri) => Keys::Uri(uri.clone()),
        };
        CompiledRule {
            object: object.clone(),
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            keys,
            locations,
            forward_original_token: rule.forward_original_token,
            output_payload_to_header: rule
                .output_payload_to_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            output_claim_to_headers: rule
                .output_claim_to_headers
                .iter()
                .filter_map(|c| Some((HeaderName::from_bytes(c.header.as_bytes()).ok()?, c.claim.clone())))
                .collect(),
            fetch_timeout: rule.timeout.unwrap_or(DEFAULT_FETCH_TIMEOUT),
        }
    }

    pub fn jwks_uri(&self) -> Option<&str> {
        match &self.keys {
            Keys::Uri(u) => Some(u),
            Keys::Inline(_) => None,
        }
    }
}
