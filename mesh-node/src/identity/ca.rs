//! The mesh root CA and the signing service in front of it.
//!
//! Local mode: the CA key and certificate live in one file (`ca.pem`, mode 0600) in a
//! directory every node daemon of the cluster shares (`--ca-dir`). The first daemon to
//! start creates it; creation is a hard link of a complete temp file, so two daemons
//! starting together agree on one CA. Signing goes through [`NodeScopedCa`], which only
//! signs for pods scheduled on the requesting node, so a compromised node cannot mint
//! another node's identities (Istio's node authorization).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::SpiffeId;
use crate::config::StateRx;

const CA_FILE: &str = "ca.pem";
const ROOT_CERT_FILE: &str = "root-cert.pem";
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Tolerates small clock differences between nodes.
const BACKDATE: Duration = Duration::from_secs(300);
pub static KEY_ALG: &SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot use CA directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("CA file {path} is corrupt ({reason}); restore it or remove the directory to create a new mesh CA")]
    Corrupt { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the TLS library refused a generated workload key: {0}")]
    Key(String),
    #[error("node {node} may not obtain a certificate for {workload}: the workload is not known to the CA")]
    UnknownWorkload { node: String, workload: String },
    #[error("node {node} may not obtain a certificate for {workload}: it is scheduled on node {actual:?}")]
    NotOnNode {
        node: String,
        workload: String,
        actual: String,
    },
}

/// The public key of a certificate request (raw EC point, as rcgen's `KeyPair::public_key_raw`).
pub struct RequestKey<'a>(pub &'a [u8]);

impl PublicKeyData for RequestKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        KEY_ALG
    }
}

/// A certificate request from a node daemon for one of its workloads. The identity is
/// not part of the request: the CA derives it from the workload's service account.
pub struct SignRequest<'a> {
    pub node: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub public_key: &'a [u8],
    pub lifetime: Duration,
}

#[derive(Clone, Debug)]
pub struct Signed {
    #[cfg_attr(not(test), allow(dead_code))] // the identity the CA chose, checked by tests
    pub identity: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

pub trait Signer: Send + Sync {
    fn sign(&self, req: &SignRequest<'_>) -> Result<Signed, CaError>;
}

pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    root_pem: String,
}

impl LocalCa {
    /// Loads the CA from `dir`, creating it (and `dir`) on first use.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let io = |source| CaError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(CA_FILE);
        if !path.exists() {
            create(dir, &path, trust_domain)?;
        }
        let ca = Self::load(&path, trust_domain)?;
        fs::write(dir.join(ROOT_CERT_FILE), &ca.root_pem).map_err(io)?;
        Ok(ca)
    }

    fn load(path: &Path, trust_domain: &str) -> Result<Self, CaError> {
        let corrupt = |reason: String| CaError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let text = fs::read_to_string(path).map_err(|source| CaError::Io {
            path: path.to_owned(),
            source,
        })?;
        let key = KeyPair::from_pem(&text).map_err(|e| corrupt(format!("private key: {e}")))?;
        let root = CertificateDer::from_pem_slice(text.as_bytes()).map_err(|e| corrupt(format!("certificate: {e}")))?;
        // Same parameters as at creation: the issuer name must match the root's subject.
        let issuer = Issuer::new(ca_params(trust_domain), key);
        let root_pem = text
            .find("-----BEGIN CERTIFICATE")
            .map(|i| text[i..].to_owned())
            .unwrap_or_default();
        Ok(Self { issuer, root, root_pem })
    }

    /// Issues a workload certificate, unconditionally: callers authorize first.
    pub fn issue(
        &self,
        identity: &SpiffeId,
        public_key: &[u8],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Signed, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity.to_string().try_into()?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&RequestKey(public_key), &self.issuer)?;
        Ok(Signed {
            identity: identity.clone(),
            chain: vec![cert.der().clone()],
            not_before,
            not_after,
        })
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }
}

fn ca_params(trust_domain: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "mesh root CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn create(dir: &Path, path: &Path, trust_domain: &str) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let key = KeyPair::generate_for(KEY_ALG)?;
    let mut params = ca_params(trust_domain);
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_LIFETIME).into();
    let cert = params.self_signed(&key)?;
    let tmp = dir.join(format!(".{CA_FILE}.{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io)?;
    f.write_all(key.serialize_pem().as_bytes())
        .and_then(|()| f.write_all(cert.pem().as_bytes()))
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    // link() fails if another daemon won the race; then both use the winner's CA.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the mesh root CA");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// The signing service: signs only for workloads scheduled on the requesting node,
/// with the identity of the workload's service account.
pub struct NodeScopedCa {
    ca: Arc<LocalCa>,
    state: StateRx,
}

impl NodeScopedCa {
    pub fn new(ca: Arc<LocalCa>, state: StateRx) -> Self {
        Self { ca, state }
    }
}

impl Signer for NodeScopedCa {
    fn sign(&self, req: &SignRequest<'_>) -> Result<Signed, CaError> {
        let workload = format!("{}/{}", req.namespace, req.pod);
        let identity = {
            let state = self.state.borrow();
            let w = state
                .workloads
                .values()
                .find(|w| w.namespace == req.namespace && w.name == req.pod)
                .ok_or_else(|| CaError::UnknownWorkload {
                    node: req.node.to_owned(),
                    workload: workload.clone(),
                })?;
            if w.node != req.node {
                return Err(CaError::NotOnNode {
                    node: req.node.to_owned(),
                    workload,
                    actual: w.node.clone(),
                });
            }
            SpiffeId::new(&w.trust_domain, &w.namespace, &w.service_account)
        };
        let now = SystemTime::now();
        self.ca
            .issue(&identity, req.public_key, now - BACKDATE, now + req.lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::identity::test_fixture::TOPOLOGY;

    fn signer(dir: &Path) -> NodeScopedCa {
        let ca = Arc::new(LocalCa::load_or_create(dir, "cluster.local").unwrap());
        let state = crate::state::tests::state_from(TOPOLOGY, "n1");
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(state));
        NodeScopedCa::new(ca, rx)
    }

    fn request<'a>(node: &'a str, pod: &'a str, key: &'a KeyPair) -> SignRequest<'a> {
        SignRequest {
            node,
            namespace: "shop",
            pod,
            public_key: key.public_key_raw(),
            lifetime: Duration::from_secs(60),
        }
    }

    #[test]
    fn signs_only_for_workloads_on_the_requesting_node() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let key = KeyPair::generate_for(KEY_ALG).unwrap();
        let ok = s.sign(&request("n1", "a", &key)).unwrap();
        assert_eq!(ok.identity.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
        let other = s.sign(&request("n1", "b", &key)).unwrap_err();
        assert!(
            matches!(other, CaError::NotOnNode { ref actual, .. } if actual == "n2"),
            "{other}"
        );
        let unknown = s.sign(&request("n1", "ghost", &key)).unwrap_err();
        assert!(matches!(unknown, CaError::UnknownWorkload { .. }), "{unknown}");
    }

    #[test]
    fn ca_is_created_once_with_a_private_key_file_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalCa::load_or_create(dir.path(), "cluster.local").unwrap();
        let mode = fs::metadata(dir.path().join(CA_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = LocalCa::load_or_create(dir.path(), "cluster.local").unwrap();
        assert_eq!(first.root(), second.root());
        // A leaf issued by the reloaded CA chains to the original root.
        let key = KeyPair::generate_for(KEY_ALG).unwrap();
        let now = SystemTime::now();
        let leaf = second
            .issue(
                &SpiffeId::new("cluster.local", "a", "b"),
                key.public_key_raw(),
                now,
                now + Duration::from_secs(60),
            )
            .unwrap();
        let roots = crate::tls::root_store(&first.root()).unwrap();
        crate::tls::verify_chain(&leaf.chain, &roots, webpki::KeyUsage::client_auth()).unwrap();
    }

    #[test]
    fn corrupt_ca_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CA_FILE), "not a pem").unwrap();
        let err = LocalCa::load_or_create(dir.path(), "cluster.local").err().unwrap();
        assert!(matches!(err, CaError::Corrupt { .. }), "{err}");
    }
}
