//! One token against the rules that apply: the rule is chosen by the token's issuer
//! (as Envoy's jwt_authn picks a provider), its key by `kid` (or every key of the
//! token's algorithm family when there is none), then signature and time claims are
//! checked by `jsonwebtoken` and the audiences here. Every refusal is a [`JwtError`]
//! whose [`JwtError::reason`] is what the access log and the metrics show.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::keys::KeySet;
use super::rule::CompiledRule;

/// Envoy's default `clock_skew_seconds`: tolerance on `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token was refused (the request gets 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Jwt is not in the form of Header.Payload.Signature with base64url-encoded JSON")]
    Malformed,
    #[error("Jwt uses alg `none` (unsigned tokens are never accepted)")]
    AlgNone,
    #[error("Jwt algorithm `{0}` is not supported (use RS256/384/512, PS256/384/512, ES256/384 or EdDSA)")]
    UnsupportedAlgorithm(String),
    #[error("Jwt has no `iss` claim")]
    MissingIssuer,
    #[error("Jwt issuer `{0}` is not configured by any RequestAuthentication that applies here")]
    UnknownIssuer(String),
    #[error("Jwks for issuer `{0}` is not available yet (jwksUri not fetched successfully)")]
    KeysUnavailable(String),
    #[error("Jwks doesn't have a key to match kid `{0}`")]
    UnknownKid(String),
    #[error("Jwks doesn't have a key for algorithm {0:?}")]
    NoKeyForAlgorithm(Algorithm),
    #[error("Jwt verification fails: bad signature")]
    BadSignature,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid (nbf is in the future)")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed (expected one of {0})")]
    AudienceMismatch(String),
    #[error("Jwt claim `{0}` has the wrong type")]
    ClaimFormat(String),
}

/// The refusal reasons, as a closed set for logs and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtReason {
    Malformed,
    AlgNone,
    UnsupportedAlgorithm,
    MissingIssuer,
    UnknownIssuer,
    KeysUnavailable,
    UnknownKid,
    NoKeyForAlgorithm,
    BadSignature,
    Expired,
    NotYetValid,
    AudienceMismatch,
    ClaimFormat,
}

impl JwtReason {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtReason::Malformed => "malformed",
            JwtReason::AlgNone => "alg_none",
            JwtReason::UnsupportedAlgorithm => "unsupported_algorithm",
            JwtReason::MissingIssuer => "missing_issuer",
            JwtReason::UnknownIssuer => "unknown_issuer",
            JwtReason::KeysUnavailable => "keys_unavailable",
            JwtReason::UnknownKid => "unknown_kid",
            JwtReason::NoKeyForAlgorithm => "no_key_for_algorithm",
            JwtReason::BadSignature => "bad_signature",
            JwtReason::Expired => "expired",
            JwtReason::NotYetValid => "not_yet_valid",
            JwtReason::AudienceMismatch => "audience_mismatch",
            JwtReason::ClaimFormat => "claim_format",
        }
    }
}

impl JwtError {
    pub fn reason(&self) -> JwtReason {
        match self {
            JwtError::Malformed => JwtReason::Malformed,
            JwtError::AlgNone => JwtReason::AlgNone,
            JwtError::UnsupportedAlgorithm(_) => JwtReason::UnsupportedAlgorithm,
            JwtError::MissingIssuer => JwtReason::MissingIssuer,
            JwtError::UnknownIssuer(_) => JwtReason::UnknownIssuer,
            JwtError::KeysUnavailable(_) => JwtReason::KeysUnavailable,
            JwtError::UnknownKid(_) => JwtReason::UnknownKid,
            JwtError::NoKeyForAlgorithm(_) => JwtReason::NoKeyForAlgorithm,
            JwtError::BadSignature => JwtReason::BadSignature,
            JwtError::Expired => JwtReason::Expired,
            JwtError::NotYetValid => JwtReason::NotYetValid,
            JwtError::AudienceMismatch(_) => JwtReason::AudienceMismatch,
            JwtError::ClaimFormat(_) => JwtReason::ClaimFormat,
        }
    }
}

/// A verified token: the `request.auth.*` attributes and what the rule forwards.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedJwt {
    /// `iss/sub`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The whole payload (nested claims are looked up in it).
    pub claims: Value,
    /// The payload segment as sent (base64url JSON), for `outputPayloadToHeader`.
    pub payload_segment: String,
}

impl VerifiedJwt {
    /// A claim by path (`groups`, or `[a, b]` for the nested `a.b`).
    pub fn claim(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(&self.claims, |v, k| v.get(*k))
    }
}

/// Verifies `token` against `rules` (those whose location held it). `keys` gives a
/// rule's current key set, `None` while a `jwksUri` has never been fetched.
pub fn verify<'r>(
    token: &str,
    rules: &[&'r CompiledRule],
    keys: impl Fn(&CompiledRule) -> Option<std::sync::Arc<KeySet>>,
) -> Result<(VerifiedJwt, &'r CompiledRule), JwtError> {
    let (header_b64, payload_b64) = segments(token)?;
    let alg = header_algorithm(header_b64)?;
    let payload: Value = decode_json(payload_b64)?;
    let issuer = match payload.get("iss") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(JwtError::ClaimFormat("iss".into())),
        None => return Err(JwtError::MissingIssuer),
    };
    let rule = rules
        .iter()
        .find(|r| r.issuer == issuer)
        .copied()
        .ok_or_else(|| JwtError::UnknownIssuer(issuer.clone()))?;
    let set = keys(rule).ok_or_else(|| JwtError::KeysUnavailable(issuer.clone()))?;
    let kid = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?.kid;
    let candidates = set.candidates(kid.as_deref(), alg);
    if candidates.is_empty() {
        return Err(match kid {
            Some(k) => JwtError::UnknownKid(k),
            None => JwtError::NoKeyForAlgorithm(alg),
        });
    }
    let validation = validation(alg);
    let mut last = JwtError::BadSignature;
    for key in candidates {
        match jsonwebtoken::decode::<Value>(token, key, &validation) {
            Ok(_) => {
                let jwt = attributes(&issuer, payload, payload_b64)?;
                check_audience(rule, &jwt)?;
                return Ok((jwt, rule));
            }
            Err(e) => {
                last = map_error(e.kind());
                // Only a signature mismatch can be cured by another key with no kid.
                if last != JwtError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

fn segments(token: &str) -> Result<(&str, &str), JwtError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(_), None) if !h.is_empty() && !p.is_empty() => Ok((h, p)),
        _ => Err(JwtError::Malformed),
    }
}

fn decode_json(segment: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    if v.is_object() { Ok(v) } else { Err(JwtError::Malformed) }
}

/// The header's `alg`, refusing `none` and anything that is not an asymmetric signature.
fn header_algorithm(segment: &str) -> Result<Algorithm, JwtError> {
    let header = decode_json(segment)?;
    let name = header.get("alg").and_then(Value::as_str).ok_or(JwtError::Malformed)?;
    if name.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg: Algorithm = name
        .parse()
        .map_err(|_| JwtError::UnsupportedAlgorithm(name.to_owned()))?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(JwtError::UnsupportedAlgorithm(name.to_owned()));
    }
    Ok(alg)
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.leeway = CLOCK_SKEW_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    // Checked here against every audience of the rule (the crate's check needs `aud`).
    v.validate_aud = false;
    v
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidClaimFormat(c) => JwtError::ClaimFormat(c.clone()),
        // A key whose family or `alg` does not fit the token's algorithm.
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey => JwtError::BadSignature,
        ErrorKind::InvalidRsaKey(_) => JwtError::BadSignature,
        _ => JwtError::Malformed,
    }
}

fn attributes(issuer: &str, claims: Value, payload_b64: &str) -> Result<VerifiedJwt, JwtError> {
    let sub = match claims.get("sub") {
        None => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(JwtError::ClaimFormat("sub".into())),
    };
    let audiences = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| JwtError::ClaimFormat("aud".into()))?,
        Some(_) => return Err(JwtError::ClaimFormat("aud".into())),
    };
    Ok(VerifiedJwt {
        principal: format!("{issuer}/{sub}"),
        audiences,
        presenter: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
        payload_segment: payload_b64.to_owned(),
        claims,
    })
}

/// Istio: with `audiences` set, the token's `aud` must name one of them.
fn check_audience(rule: &CompiledRule, jwt: &VerifiedJwt) -> Result<(), JwtError> {
    if rule.audiences.is_empty() || jwt.audiences.iter().any(|a| rule.audiences.contains(a)) {
        return Ok(());
    }
    Err(JwtError::AudienceMismatch(rule.audiences.join(", ")))
}
