//! The demo's token issuer: an ES256 key generated when the lab starts, its JSON Web
//! Key Set served inside the lab by the `jwks` pod (`bench-tool serve --body-file`,
//! Service `jwks.outside` port 8000, what `request-authentication-gateway.yaml` names),
//! and tokens minted for a user (`cargo xtask demo token <user>`, and the e2e tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{LabError, apps};
use crate::harness::{Cluster, ProcessGuard, bin_path};

/// What `request-authentication-gateway.yaml` trusts.
pub const ISSUER: &str = "https://issuer.mesh.demo";
pub const AUDIENCE: &str = "bookinfo";
pub const JWKS_POD: (&str, &str) = ("outside", "jwks");
pub const JWKS_PORT: u16 = 8000;
const KID: &str = "demo-1";

/// The issuer's signing key, kept in `<dir>/issuer-key.pem` (its public half in `jwks.json`).
pub struct Issuer {
    key: EncodingKey,
    kid: String,
    pub dir: PathBuf,
}

fn sys(what: &'static str, e: impl std::fmt::Display) -> LabError {
    LabError::Issuer {
        what,
        message: e.to_string(),
    }
}

impl Issuer {
    /// A new key (and key set file) in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, LabError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| sys("generating the demo issuer key", e))?;
        std::fs::create_dir_all(dir).map_err(|e| sys("creating the issuer directory", e))?;
        let pem = pair.serialize_pem();
        std::fs::write(dir.join("issuer-key.pem"), &pem).map_err(|e| sys("writing the issuer key", e))?;
        let issuer = Self::from_pem(dir, &pem)?;
        std::fs::write(dir.join("jwks.json"), issuer.jwks()?).map_err(|e| sys("writing jwks.json", e))?;
        Ok(issuer)
    }

    /// The key a running lab generated (`dir` as printed by the demo).
    pub fn load(dir: &Path) -> Result<Self, LabError> {
        let pem = std::fs::read_to_string(dir.join("issuer-key.pem")).map_err(|e| sys("reading the issuer key", e))?;
        Self::from_pem(dir, &pem)
    }

    fn from_pem(dir: &Path, pem: &str) -> Result<Self, LabError> {
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| sys("loading the issuer key", e))?;
        Ok(Self {
            key,
            kid: KID.into(),
            dir: dir.to_owned(),
        })
    }

    /// The public key set, as the JWKS server serves it.
    pub fn jwks(&self) -> Result<String, LabError> {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).map_err(|e| sys("deriving the JWK", e))?;
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] }).map_err(|e| sys("encoding the JWKS", e))
    }

    /// Claims of a token for `user` in `groups`, valid for `ttl`.
    pub fn claims(user: &str, groups: &[&str], ttl: Duration) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": ISSUER,
            "sub": user,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + ttl.as_secs(),
            "groups": groups,
        })
    }

    /// Signs `claims` with the issuer's key (ES256, `kid` set).
    pub fn sign(&self, claims: &Value) -> Result<String, LabError> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).map_err(|e| sys("signing a token", e))
    }

    /// `bench-tool serve` in the `jwks` pod, answering every GET with the key set.
    pub fn serve(&self, cluster: &Cluster, log_dir: Option<&Path>) -> Result<ProcessGuard, LabError> {
        let (ns, pod) = JWKS_POD;
        let mut cmd = Command::new(bin_path("xtask")?);
        cmd.args([
            "bench-tool",
            "serve",
            "--listen",
            &format!("0.0.0.0:{JWKS_PORT}"),
            "--name",
            "jwks",
        ])
        .arg("--body-file")
        .arg(self.dir.join("jwks.json"))
        .stdin(Stdio::null());
        apps::log_to(&mut cmd, log_dir, pod);
        let guard = cluster.spawn_in_pod(ns, pod, cmd)?;
        let ip = cluster.pod(ns, pod)?.ip;
        let waited = Duration::from_secs(30);
        cluster
            .wait_tcp_in_pod(ns, pod, std::net::SocketAddr::from((ip, JWKS_PORT)), waited)
            .map_err(|_| LabError::NotUp {
                what: "the JWKS server".into(),
                waited,
            })?;
        Ok(guard)
    }
}
