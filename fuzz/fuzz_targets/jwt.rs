//! JWT parsing and verification (mesh_waypoint::authn::verify) as a client sends a
//! token: the segments, the header's `alg` and `kid`, the claims after a valid
//! signature (issuer, audiences, `azp`, time claims), and JWKS documents as a
//! `jwksUri` serves them. Input: a selector byte, then
//! 0: a whole token; 1: `header JSON\npayload JSON`, signed here with the rule's key
//! so the claim checks behind the signature are reached; 2: a JWKS document.
#![no_main]

use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use mesh_common::model::{Resource, parse_documents};
use mesh_waypoint::authn::CompiledRule;
use mesh_waypoint::authn::attach::{AuthnPolicies, ProxyScope};
use mesh_waypoint::authn::keys::KeySet;
use mesh_waypoint::authn::rule::Keys;
use mesh_waypoint::authn::verify::verify;

const ISS: &str = "https://issuer.test";

struct Fixture {
    key: EncodingKey,
    rules: Vec<Arc<CompiledRule>>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("PKCS#8 PEM");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("JWK of an EC key");
    jwk.common.key_id = Some("k1".into());
    let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("JWKS JSON");
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: bookinfo}}\n\
         spec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  jwtRules:\n\
         \x20 - issuer: {ISS}\n    audiences: [bookinfo]\n    jwks: '{jwks}'\n"
    );
    let resources: Vec<Resource> = parse_documents("fixture", &text).into_iter().flatten().collect();
    let scope = ProxyScope::Waypoint {
        name: "waypoint".into(),
        namespace: "bookinfo".into(),
    };
    let rules = AuthnPolicies::build(&resources, "istio-system").rules_for(&scope, None);
    assert_eq!(
        rules.len(),
        1,
        "the fixture's RequestAuthentication compiles to one rule"
    );
    Fixture { key, rules }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match selector % 3 {
        0 => check(text),
        1 => {
            let (header, payload) = text.split_once('\n').unwrap_or((text, "{}"));
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
            let Ok(signature) = jsonwebtoken::crypto::sign(message.as_bytes(), &FIXTURE.key, Algorithm::ES256) else {
                return;
            };
            check(&format!("{message}.{signature}"));
        }
        _ => {
            if let Ok(set) = KeySet::parse(text) {
                let _ = set.candidates(Some("k1"), Algorithm::ES256);
            }
        }
    }
});

/// Verifies `token`; an accepted token is the fixture's issuer, one of its audiences.
fn check(token: &str) {
    let rules: Vec<&CompiledRule> = FIXTURE.rules.iter().map(Arc::as_ref).collect();
    let keys = |r: &CompiledRule| match &r.keys {
        Keys::Inline(k) => Some(k.clone()),
        Keys::Uri(_) => None,
    };
    if let Ok((jwt, _)) = verify(token, &rules, keys) {
        assert!(jwt.principal.starts_with(&format!("{ISS}/")), "{}", jwt.principal);
        assert!(jwt.audiences.iter().any(|a| a == "bookinfo"), "{:?}", jwt.audiences);
        assert_eq!(jwt.claims.get("iss").and_then(|v| v.as_str()), Some(ISS));
    }
}
