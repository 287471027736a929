//! JWT verification against real keys of every supported algorithm (generated here),
//! every refusal reason, token locations and forwarding, and the jwksUri cache
//! against a real HTTP server on loopback.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_common::model::{Resource, parse_documents};
use serde_json::{Value, json};

use super::attach::{AuthnPolicies, ProxyScope};
use super::jwks::JwksCache;
use super::keys::KeySet;
use super::*;

const ISS: &str = "https://issuer.test";

struct Signer {
    alg: Algorithm,
    kid: String,
    enc: EncodingKey,
    jwk: Jwk,
}

/// A private key (PKCS#8 PEM) for `alg` and its raw public key.
fn pem_for(alg: Algorithm) -> (String, Vec<u8>) {
    static RSA: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    let gen_pem = |a: &'static rcgen::SignatureAlgorithm| {
        let kp = rcgen::KeyPair::generate_for(a).unwrap();
        (kp.serialize_pem(), kp.public_key_raw().to_vec())
    };
    match alg {
        Algorithm::ES256 => gen_pem(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::ES384 => gen_pem(&rcgen::PKCS_ECDSA_P384_SHA384),
        Algorithm::EdDSA => gen_pem(&rcgen::PKCS_ED25519),
        _ => RSA.get_or_init(|| gen_pem(&rcgen::PKCS_RSA_SHA256)).clone(),
    }
}

fn signer(alg: Algorithm, kid: &str) -> Signer {
    let (pem, public) = pem_for(alg);
    let enc = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .unwrap();
    let mut jwk = match alg {
        // The crate cannot derive an Ed25519 JWK from a PKCS#8 key: write the OKP key directly.
        Algorithm::EdDSA => serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": URL_SAFE_NO_PAD.encode(&public)
        }))
        .unwrap(),
        _ => Jwk::from_encoding_key(&enc, alg).unwrap(),
    };
    jwk.common.key_id = Some(kid.into());
    Signer {
        alg,
        kid: kid.into(),
        enc,
        jwk,
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "sub": sub, "aud": ["bookinfo"], "azp": "web", "exp": now() + 600,
           "groups": ["admins", "dev"], "org": {"team": "books"}})
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }

    fn jwks(&self) -> String {
        serde_json::to_string(&JwkSet {
            keys: vec![self.jwk.clone()],
        })
        .unwrap()
    }
}

fn rules_from(yaml_rules: &str) -> Vec<Arc<CompiledRule>> {
    let text = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: bookinfo}}\n\
         spec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  jwtRules:\n{yaml_rules}"
    );
    let resources: Vec<Resource> = parse_documents("t", &text).into_iter().map(Result::unwrap).collect();
    let scope = ProxyScope::Waypoint {
        name: "waypoint".into(),
        namespace: "bookinfo".into(),
    };
    AuthnPolicies::build(&resources, "istio-system").rules_for(&scope, None)
}

fn inline_rule(s: &Signer, extra: &str) -> Vec<Arc<CompiledRule>> {
    rules_from(&format!(
        "  - issuer: {ISS}\n    audiences: [bookinfo]\n    jwks: '{}'\n{extra}",
        s.jwks()
    ))
}

fn verify_with(rules: &[Arc<CompiledRule>], token: &str) -> Result<VerifiedJwt, JwtError> {
    let refs: Vec<&CompiledRule> = rules.iter().map(Arc::as_ref).collect();
    verify::verify(token, &refs, |r| match &r.keys {
        rule::Keys::Inline(k) => Some(k.clone()),
        rule::Keys::Uri(_) => None,
    })
    .map(|(j, _)| j)
}

#[test]
fn every_supported_algorithm_verifies_and_yields_request_auth_attributes() {
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let s = signer(alg, "k1");
        let jwt =
            verify_with(&inline_rule(&s, ""), &s.sign(&claims("jason"))).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(jwt.principal, format!("{ISS}/jason"), "{alg:?}");
        assert_eq!(jwt.audiences, vec!["bookinfo".to_string()]);
        assert_eq!(jwt.presenter.as_deref(), Some("web"));
        assert_eq!(jwt.claim(&["org", "team"]), Some(&json!("books")));
        assert_eq!(jwt.claim(&["groups"]), Some(&json!(["admins", "dev"])));
    }
}

#[test]
fn each_bad_token_is_refused_with_its_reason() {
    let s = signer(Algorithm::ES256, "k1");
    let rules = inline_rule(&s, "");
    let mut expired = claims("u");
    expired["exp"] = json!(now() - 3600);
    let mut early = claims("u");
    early["nbf"] = json!(now() + 3600);
    let mut other_iss = claims("u");
    other_iss["iss"] = json!("https://evil.test");
    let mut other_aud = claims("u");
    other_aud["aud"] = json!("payments");
    let impostor = signer(Algorithm::ES256, "k1");
    let unknown_kid = signer(Algorithm::ES256, "k9");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("u")).unwrap());
    let none = format!("{header}.{body}.");
    let cases: Vec<(&str, String, JwtReason)> = vec![
        ("expired", s.sign(&expired), JwtReason::Expired),
        ("not yet valid", s.sign(&early), JwtReason::NotYetValid),
        ("wrong issuer", s.sign(&other_iss), JwtReason::UnknownIssuer),
        ("wrong audience", s.sign(&other_aud), JwtReason::AudienceMismatch),
        ("bad signature", impostor.sign(&claims("u")), JwtReason::BadSignature),
        ("alg none", none, JwtReason::AlgNone),
        ("unknown kid", unknown_kid.sign(&claims("u")), JwtReason::UnknownKid),
        ("garbage", "not-a-jwt".into(), JwtReason::Malformed),
    ];
    for (what, token, want) in cases {
        let err = verify_with(&rules, &token).unwrap_err();
        eprintln!("{what}: {} ({})", err.reason().as_str(), err);
        assert_eq!(err.reason(), want, "{what}: {err}");
    }
    // An HMAC token is refused before any key is tried.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("u"),
        &EncodingKey::from_secret(b"s").unwrap(),
    )
    .unwrap();
    assert_eq!(
        verify_with(&rules, &hs).unwrap_err().reason(),
        JwtReason::UnsupportedAlgorithm
    );
}

fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[tokio::test]
async fn token_locations_and_forwarding_follow_the_rule() {
    let s = signer(Algorithm::ES256, "k1");
    let cache = JwksCache::new(Box::new(|_, _| None));
    let token = s.sign(&claims("jason"));

    // Default location: Authorization: Bearer; removed unless forwardOriginalToken.
    let rules = inline_rule(
        &s,
        "    outputClaimToHeaders: [{header: x-team, claim: org.team}, {header: x-sub, claim: sub}]\n    outputPayloadToHeader: x-jwt-payload\n",
    );
    let bearer = format!("Bearer {token}");
    let mut parts = request("/p", &[("authorization", &bearer), ("x-sub", "spoofed")]);
    let jwt = authenticate(&rules, &mut parts, &cache).await.unwrap().unwrap();
    assert_eq!(jwt.principal, format!("{ISS}/jason"));
    assert!(parts.headers.get("authorization").is_none());
    assert_eq!(parts.headers["x-sub"], "jason");
    assert_eq!(parts.headers["x-team"], "books");
    let payload = URL_SAFE_NO_PAD
        .decode(parts.headers["x-jwt-payload"].as_bytes())
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap()["sub"], "jason");
    // Default query parameter.
    let mut parts = request(&format!("/p?access_token={token}"), &[]);
    assert!(authenticate(&rules, &mut parts, &cache).await.unwrap().is_some());

    // No token: passes, and a spoofed output header does not survive.
    let mut parts = request("/p", &[("x-sub", "spoofed")]);
    assert_eq!(authenticate(&rules, &mut parts, &cache).await.unwrap(), None);
    assert!(parts.headers.get("x-sub").is_none());

    // fromHeaders with a prefix, fromParams; the token header is kept when asked.
    let rules = inline_rule(
        &s,
        "    fromHeaders: [{name: x-jwt, prefix: 'Token '}]\n    fromParams: [t]\n    forwardOriginalToken: true\n",
    );
    let with_prefix = format!("Token {token}");
    let mut parts = request("/p", &[("x-jwt", &with_prefix)]);
    assert!(authenticate(&rules, &mut parts, &cache).await.unwrap().is_some());
    assert!(parts.headers.get("x-jwt").is_some());
    let mut parts = request(&format!("/p?t={token}"), &[]);
    assert!(authenticate(&rules, &mut parts, &cache).await.unwrap().is_some());
    // Authorization is not a location of this rule: the request has no token for it.
    let mut parts = request("/p", &[("authorization", &bearer)]);
    assert_eq!(authenticate(&rules, &mut parts, &cache).await.unwrap(), None);
    // An invalid token where the rule looks is refused.
    let mut parts = request("/p", &[("x-jwt", "Token a.b.c")]);
    assert_eq!(
        authenticate(&rules, &mut parts, &cache).await.unwrap_err().reason(),
        JwtReason::Malformed
    );
}

/// A loopback HTTP server answering every GET with `body`; dropping the sender stops it.
async fn jwks_server(body: String) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => a.unwrap(),
                _ = &mut stopped => return,
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(http::Response::new(crate::body::full(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, stop)
}

#[tokio::test]
async fn jwks_uri_is_fetched_and_its_last_good_keys_survive_an_outage() {
    let s = signer(Algorithm::RS256, "r1");
    let (addr, stop) = jwks_server(s.jwks()).await;
    let uri = format!("http://{addr}/jwks.json");
    let rules = rules_from(&format!("  - issuer: {ISS}\n    jwksUri: {uri}\n"));
    let cache = JwksCache::new(Box::new(|_, _| None));
    let token = format!("Bearer {}", s.sign(&claims("jason")));

    let mut parts = request("/p", &[("authorization", &token)]);
    let jwt = authenticate(&rules, &mut parts, &cache).await.unwrap().unwrap();
    assert_eq!(jwt.principal, format!("{ISS}/jason"));

    // The key server goes away; refreshes fail, the keys stay.
    drop(stop);
    tokio::spawn(
        cache
            .clone()
            .run_refresher(Duration::from_millis(50), Duration::from_millis(200)),
    );
    let two_failures = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while cache.summary()[&uri]["failures"].as_u64().unwrap_or(0) < 2 {
            tick.tick().await;
        }
    });
    assert!(
        two_failures.await.is_ok(),
        "no failed refresh seen: {:?}",
        cache.summary()
    );
    eprintln!("after outage: {:?}", cache.summary());
    let mut parts = request("/p", &[("authorization", &token)]);
    assert!(authenticate(&rules, &mut parts, &cache).await.unwrap().is_some());
}

#[tokio::test]
async fn unreachable_jwks_uri_refuses_tokens_but_not_tokenless_requests() {
    let s = signer(Algorithm::ES256, "k1");
    let rules = rules_from(&format!(
        "  - issuer: {ISS}\n    jwksUri: http://127.0.0.1:9/jwks\n    timeout: 1s\n"
    ));
    let cache = JwksCache::new(Box::new(|_, _| None));
    let token = format!("Bearer {}", s.sign(&claims("u")));
    let mut parts = request("/p", &[("authorization", &token)]);
    let err = authenticate(&rules, &mut parts, &cache).await.unwrap_err();
    assert_eq!(err.reason(), JwtReason::KeysUnavailable, "{err}");
    let mut parts = request("/p", &[]);
    assert_eq!(authenticate(&rules, &mut parts, &cache).await.unwrap(), None);
}

#[test]
fn key_sets_skip_what_they_cannot_use() {
    let s = signer(Algorithm::EdDSA, "e1");
    let set = KeySet::parse(&s.jwks()).unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(set.candidates(Some("e1"), Algorithm::EdDSA).len(), 1);
    assert!(set.candidates(Some("e1"), Algorithm::ES256).is_empty());
    assert!(set.candidates(Some("zz"), Algorithm::EdDSA).is_empty());
}
