//! RequestAuthentication: which JWTs a waypoint or gateway accepts (issuer, audiences,
//! keys from an inline JWKS or a `jwksUri`), where it finds them in a request and what
//! it passes on. Verification itself lives in `mesh-waypoint` (`authn/`); this module
//! is the object, validated once with field paths.
//! Reference: <https://istio.io/latest/docs/reference/config/security/request_authentication/>

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use serde::{Deserialize, Serialize};

use super::target_ref::{PolicyTargetReference, Target, validate_attachment};
use crate::model::istio::networking::common::WorkloadSelector;
use crate::model::{ConfigError, FieldError, ObjectMeta, ObjectRef};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestAuthentication {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RequestAuthenticationSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// An inline JSON Web Key Set (a JSON document in a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Timeout of a `jwksUri` fetch (Istio duration, e.g. `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    /// Stripped from the header value before the token (e.g. `Bearer `).
    #[serde(default)]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

/// Where a rule's keys come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum KeySource {
    /// Parsed and checked at validation.
    Inline(JwkSet),
    /// Fetched (and refreshed) by the proxy that enforces the rule.
    Uri(String),
}

/// A validated RequestAuthentication.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestAuthnPolicy {
    pub object: ObjectRef,
    pub namespace: String,
    /// `spec.selector.matchLabels` (empty: every workload of the namespace).
    pub selector: Option<std::collections::BTreeMap<String, String>>,
    /// `targetRefs` (ambient: how it reaches a waypoint or gateway).
    pub targets: Vec<Target>,
    pub rules: Vec<ValidRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidRule {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: KeySource,
    pub from_headers: Vec<JwtHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: Option<String>,
    pub forward_original_token: bool,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    pub timeout: Option<std::time::Duration>,
}

impl RequestAuthentication {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::new(
            "RequestAuthentication",
            Some(self.metadata.namespace_or_default()),
            &self.metadata.name,
        )
    }

    /// Checks what the schema cannot: issuers, header names, the inline JWKS, the URI.
    pub fn validate(&self) -> Result<RequestAuthnPolicy, ConfigError> {
        let object = self.object_ref();
        let invalid = |error: FieldError| ConfigError::Invalid {
            object: object.clone(),
            error,
        };
        let namespace = self.metadata.namespace_or_default().to_owned();
        let spec = &self.spec;
        let targets = validate_attachment(
            spec.selector.is_some(),
            spec.target_ref.as_ref(),
            &spec.target_refs,
            &namespace,
        )
        .map_err(invalid)?;
        let rules = spec
            .jwt_rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.validate(&format!("spec.jwtRules[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Ok(RequestAuthnPolicy {
            object: object.clone(),
            namespace,
            selector: spec.selector.as_ref().map(|s| s.match_labels.clone()),
            targets,
            rules,
        })
    }
}

impl JwtRule {
    fn validate(&self, path: &str) -> Result<ValidRule, FieldError> {
        if self.issuer.is_empty() {
            return Err(FieldError::new(format!("{path}.issuer"), "issuer is required"));
        }
        let keys = match (&self.jwks, &self.jwks_uri) {
            // Istio uses the inline set when both are given.
            (Some(jwks), _) => {
                KeySource::Inline(parse_jwks(jwks).map_err(|m| FieldError::new(format!("{path}.jwks"), m))?)
            }
            (None, Some(uri)) => {
                KeySource::Uri(check_uri(uri).map_err(|m| FieldError::new(format!("{path}.jwksUri"), m))?)
            }
            (None, None) => {
                return Err(FieldError::new(
                    path,
                    "set jwks or jwksUri: discovering keys from the issuer's OpenID configuration is not supported",
                ));
            }
        };
        for (i, h) in self.from_headers.iter().enumerate() {
            check_header_name(&h.name).map_err(|m| FieldError::new(format!("{path}.fromHeaders[{i}].name"), m))?;
        }
        for (i, p) in self.from_params.iter().enumerate() {
            if p.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.fromParams[{i}]"),
                    "empty parameter name",
                ));
            }
        }
        for (i, c) in self.from_cookies.iter().enumerate() {
            if c.is_empty() {
                return Err(FieldError::new(format!("{path}.fromCookies[{i}]"), "empty cookie name"));
            }
        }
        if let Some(h) = &self.output_payload_to_header {
            check_header_name(h).map_err(|m| FieldError::new(format!("{path}.outputPayloadToHeader"), m))?;
        }
        for (i, c) in self.output_claim_to_headers.iter().enumerate() {
            let at = format!("{path}.outputClaimToHeaders[{i}]");
            check_header_name(&c.header).map_err(|m| FieldError::new(format!("{at}.header"), m))?;
            if c.claim.is_empty() {
                return Err(FieldError::new(format!("{at}.claim"), "claim name is required"));
            }
        }
        let timeout = self
            .timeout
            .as_deref()
            .map(|t| {
                parse_duration(t).ok_or_else(|| {
                    FieldError::new(
                        format!("{path}.timeout"),
                        format!("`{t}` is not a duration like 5s or 500ms"),
                    )
                })
            })
            .transpose()?;
        Ok(ValidRule {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            keys,
            from_headers: self.from_headers.clone(),
            from_params: self.from_params.clone(),
            from_cookies: self.from_cookies.clone(),
            output_payload_to_header: self.output_payload_to_header.clone(),
            forward_original_token: self.forward_original_token,
            output_claim_to_headers: self.output_claim_to_headers.clone(),
            timeout,
        })
    }
}

/// Algorithms a key may be used with (RFC 7518 names), as the verifier supports them.
pub const SUPPORTED_ALGORITHMS: &str = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Parses a JSON Web Key Set and checks every key is one the verifier can use
/// (RSA, EC P-256/P-384, Ed25519); the error names the key by index.
pub fn parse_jwks(text: &str) -> Result<JwkSet, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    if set.keys.is_empty() {
        return Err("the key set has no keys".into());
    }
    for (i, key) in set.keys.iter().enumerate() {
        if matches!(key.algorithm, AlgorithmParameters::OctetKey(_)) {
            return Err(format!(
                "keys[{i}]: symmetric (oct) keys are not accepted; use one of {SUPPORTED_ALGORITHMS}"
            ));
        }
        jsonwebtoken::DecodingKey::from_jwk(key).map_err(|e| format!("keys[{i}]: unusable key: {e}"))?;
    }
    Ok(set)
}

fn check_uri(uri: &str) -> Result<String, String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| format!("`{uri}`: must be an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || uri.contains(char::is_whitespace) {
        return Err(format!("`{uri}`: no valid host"));
    }
    Ok(uri.to_owned())
}

/// RFC 7230 token characters; Istio also refuses empty names.
fn check_header_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid HTTP header name"))
    }
}

/// `5s`, `500ms`, `1m`, `1.5s`.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let (num, unit) = text.find(|c: char| c.is_ascii_alphabetic()).map(|i| text.split_at(i))?;
    let value: f64 = num.parse().ok().filter(|v: &f64| v.is_finite() && *v >= 0.0)?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use crate::model::{Resource, parse_documents};

    use super::*;

    const EC_JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

    fn one(spec: &str) -> Result<Resource, ConfigError> {
        let text = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: shop}}\n{spec}\n"
        );
        parse_documents("t.yaml", &text).into_iter().next().unwrap()
    }

    #[test]
    fn decodes_every_version_and_field() {
        for v in ["v1", "v1beta1"] {
            let text = format!(
                "apiVersion: security.istio.io/{v}\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: shop}}\n\
                 spec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  jwtRules:\n  \
                 - issuer: https://issuer.example\n    audiences: [shop]\n    jwks: '{EC_JWKS}'\n    \
                 fromHeaders: [{{name: x-jwt, prefix: 'Token '}}]\n    fromParams: [tok]\n    forwardOriginalToken: true\n    \
                 outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders: [{{header: x-sub, claim: sub}}]\n    timeout: 3s\n"
            );
            let Ok(Resource::RequestAuthentication(ra)) = parse_documents("t", &text).remove(0) else {
                panic!("{v}")
            };
            let p = ra.validate().unwrap();
            assert_eq!(p.targets.len(), 1);
            let r = &p.rules[0];
            assert!(matches!(&r.keys, KeySource::Inline(s) if s.keys.len() == 1));
            assert_eq!(r.from_headers[0].prefix, "Token ");
            assert_eq!(r.timeout, Some(std::time::Duration::from_secs(3)));
        }
    }

    #[test]
    fn bad_objects_name_the_field() {
        let cases = [
            (
                "spec: {jwtRules: [{jwksUri: 'https://a/k'}]}",
                "spec.jwtRules[0].issuer: issuer is required",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwks: '{\"keys\": [{\"kty\": \"EC\"}]}'}]}",
                "spec.jwtRules[0].jwks: keys[0]",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwks: 'nope'}]}",
                "spec.jwtRules[0].jwks: not a JSON Web Key Set",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwks: '{\"keys\": []}'}]}",
                "spec.jwtRules[0].jwks: the key set has no keys",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwks: '{\"keys\": [{\"kty\": \"RSA\", \"n\": \"!!\", \"e\": \"AQAB\"}]}'}]}",
                "spec.jwtRules[0].jwks: keys[0]: unusable key",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwks: '{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}'}]}",
                "spec.jwtRules[0].jwks: keys[0]: symmetric",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwksUri: 'ftp://x/k'}]}",
                "spec.jwtRules[0].jwksUri: `ftp://x/k`",
            ),
            (
                "spec: {jwtRules: [{issuer: i}]}",
                "spec.jwtRules[0]: set jwks or jwksUri",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwksUri: 'http://k/j', fromHeaders: [{name: 'bad header'}]}]}",
                "spec.jwtRules[0].fromHeaders[0].name: `bad header` is not a valid HTTP header name",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwksUri: 'http://k/j', fromHeaders: [{prefix: x}]}]}",
                "spec.jwtRules[0].fromHeaders[0]: missing field `name`",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwksUri: 'http://k/j', outputClaimToHeaders: [{header: 'a:b', claim: c}]}]}",
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwksUri: 'http://k/j', timeout: soon}]}",
                "spec.jwtRules[0].timeout",
            ),
            (
                "spec: {jwtRules: [{issuer: i, jwksUri: 'http://k/j', fromHeader: []}]}",
                "spec.jwtRules[0].fromHeader: unknown field `fromHeader`",
            ),
            (
                "spec: {selector: {matchLabels: {a: b}}, targetRefs: [{kind: Service, group: '', name: s}]}",
                "spec.selector: only one of",
            ),
            (
                "spec: {targetRefs: [{kind: Pod, group: '', name: s}]}",
                "spec.targetRefs[0].kind",
            ),
        ];
        for (spec, want) in cases {
            let err = match one(spec) {
                Ok(Resource::RequestAuthentication(ra)) => ra.validate().map(drop).unwrap_err(),
                Ok(r) => panic!("{r:?}"),
                Err(e) => e,
            }
            .to_string();
            assert!(err.starts_with("RequestAuthentication shop/jwt: "), "{spec}: {err}");
            assert!(err.contains(want), "{spec}: {err}");
        }
    }
}
