//! The signing key and its chain, in Istio's plug-in `cacerts` layout:
//! `ca-cert.pem` (the signing certificate), `ca-key.pem`, `root-cert.pem` (trust
//! anchor(s)) and `cert-chain.pem` (from `ca-cert` up to the root). A self-signed root
//! uses the same four files ([`create_root`]). Issued chains are leaf + `cert-chain.pem`
//! (+ the root, last, as istiod answers), so peers can verify intermediates.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_hbone::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Tolerates small clock differences between nodes.
pub const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is unusable ({detail}); restore the plug-in CA files or point --cacerts-dir elsewhere")]
    Corrupt { path: PathBuf, detail: String },
    #[error("the certificate request is invalid: {0}")]
    Csr(rcgen::Error),
    #[error("signing failed: {0}")]
    Sign(rcgen::Error),
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// `cert-chain.pem` (or `ca-cert.pem`) then the root, as PEM blocks.
    chain_pem: Vec<String>,
    root_pem: String,
}

impl Authority {
    /// Loads a `cacerts` directory.
    pub fn load(dir: &Path) -> Result<Self, AuthorityError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| AuthorityError::Read { path, source })
        };
        let corrupt = |name: &str, detail: String| AuthorityError::Corrupt {
            path: dir.join(name),
            detail,
        };
        let ca_cert = read(CA_CERT)?;
        let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(|e| corrupt(CA_KEY, e.to_string()))?;
        let root_pem = read(ROOT_CERT)?;
        let chain_text = match read(CERT_CHAIN) {
            Ok(t) if !t.trim().is_empty() => t,
            _ => ca_cert.clone(),
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_cert, key).map_err(|e| corrupt(CA_CERT, e.to_string()))?;
        let mut chain_pem = pem_blocks(&chain_text).map_err(|e| corrupt(CERT_CHAIN, e))?;
        let roots = pem_blocks(&root_pem).map_err(|e| corrupt(ROOT_CERT, e))?;
        if roots.is_empty() {
            return Err(corrupt(ROOT_CERT, "no CERTIFICATE block".into()));
        }
        // Istio's answers end with the root; a self-signed ca-cert is that root already.
        if chain_pem.last() != roots.first() {
            chain_pem.push(roots[0].clone());
        }
        Ok(Self {
            issuer,
            chain_pem,
            root_pem,
        })
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Signs the public key of `csr_pem` (its signature is verified: proof that the caller
    /// holds the key) for `identity`; every other field of the request is ignored.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Result<Vec<String>, AuthorityError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(AuthorityError::Csr)?;
        let now = SystemTime::now();
        let leaf = self.issue(identity, &csr.public_key, now - BACKDATE, now + lifetime)?;
        let mut chain = vec![leaf];
        chain.extend(self.chain_pem.iter().cloned());
        Ok(chain)
    }

    /// A workload certificate, unconditionally: callers authorize first.
    pub fn issue(
        &self,
        identity: &SpiffeId,
        public_key: &impl PublicKeyData,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String, AuthorityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity.to_string().try_into().map_err(AuthorityError::Sign)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(AuthorityError::Sign)?;
        Ok(cert.pem())
    }

    /// The CA's own TLS certificate (DNS names), signed by the same key: clients verify
    /// the CA with the mesh root they already trust. Generated per process, so replicas
    /// share nothing but the `cacerts` files.
    pub fn serving_cert(&self, dns_names: &[String]) -> Result<(String, String), AuthorityError> {
        let key = KeyPair::generate_for(mesh_hbone::ca::csr::KEY_ALG).map_err(AuthorityError::Sign)?;
        let mut params = CertificateParams::new(dns_names.to_vec()).map_err(AuthorityError::Sign)?;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_LIFETIME / 10).into();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(AuthorityError::Sign)?;
        let mut chain = cert.pem();
        for c in &self.chain_pem {
            chain.push_str(c);
        }
        Ok((chain, key.serialize_pem()))
    }
}

fn pem_blocks(text: &str) -> Result<Vec<String>, String> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| {
            c.map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Creates a self-signed root in `dir` in the `cacerts` layout, unless one is there.
/// Key and certificate are first made one file (`.root-bundle.pem`, 0600) that is
/// hard-linked into place, so two replicas starting together agree on one root; the
/// four `cacerts` files are then written from the winning bundle (temp file + rename).
/// Returns whether this call created the root.
pub fn create_root(dir: &Path, trust_domain: &str) -> Result<bool, AuthorityError> {
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    if dir.join(CA_KEY).exists() {
        return Ok(false);
    }
    let bundle = dir.join(".root-bundle.pem");
    let created = link_new_bundle(dir, &bundle, trust_domain)?;
    let text = fs::read_to_string(&bundle).map_err(|source| AuthorityError::Read {
        path: bundle.clone(),
        source,
    })?;
    let split = text.find("-----BEGIN CERTIFICATE").unwrap_or(text.len());
    let (key_pem, cert_pem) = text.split_at(split);
    for (name, body, mode) in [
        (CA_CERT, cert_pem, 0o644),
        (ROOT_CERT, cert_pem, 0o644),
        (CERT_CHAIN, cert_pem, 0o644),
        (CA_KEY, key_pem, 0o600),
    ] {
        write_atomic(&dir.join(name), body, mode)?;
    }
    Ok(created)
}

fn link_new_bundle(dir: &Path, bundle: &Path, trust_domain: &str) -> Result<bool, AuthorityError> {
    if bundle.exists() {
        return Ok(false);
    }
    let key = KeyPair::generate_for(mesh_hbone::ca::csr::KEY_ALG).map_err(AuthorityError::Sign)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "mesh root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_LIFETIME).into();
    let cert = params.self_signed(&key).map_err(AuthorityError::Sign)?;
    let tmp = dir.join(format!(".root-bundle.{}", std::process::id()));
    write_new(&tmp, &(key.serialize_pem() + &cert.pem()), 0o600)?;
    let linked = fs::hard_link(&tmp, bundle);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(write_err(bundle)(e)),
    }
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> AuthorityError + use<> {
    let path = path.to_owned();
    move |source| AuthorityError::Write {
        path: path.clone(),
        source,
    }
}

fn write_new(path: &Path, body: &str, mode: u32) -> Result<(), AuthorityError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(write_err(path))?;
    f.write_all(body.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_err(path))
}

fn write_atomic(path: &Path, body: &str, mode: u32) -> Result<(), AuthorityError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    write_new(&tmp, body, mode)?;
    fs::rename(&tmp, path).map_err(write_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_root_is_created_once_and_signs_csrs_that_chain_to_it() {
        let dir = tempfile::tempdir().unwrap();
        assert!(create_root(dir.path(), "cluster.local").unwrap());
        assert!(!create_root(dir.path(), "cluster.local").unwrap());
        let mode = fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca = Authority::load(dir.path()).unwrap();
        let id = SpiffeId::new("cluster.local", "shop", "web");
        let csr = mesh_hbone::ca::csr::generate(&SpiffeId::new("cluster.local", "x", "ignored")).unwrap();
        let chain = ca.sign_csr(&csr.pem, &id, Duration::from_secs(60)).unwrap();
        assert_eq!(chain.len(), 2, "leaf + root");
        let certs: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).unwrap())
            .collect();
        let roots = mesh_hbone::ca::client::root_store_pem(ca.root_pem()).unwrap();
        // The identity is the CA's choice, not the CSR's.
        let got = mesh_hbone::tls::verify_chain(&certs[..1], &roots, webpki::KeyUsage::client_auth()).unwrap();
        assert_eq!(got, id);
    }

    #[test]
    fn plug_in_intermediate_chain_is_served_to_peers() {
        let root_dir = tempfile::tempdir().unwrap();
        create_root(root_dir.path(), "cluster.local").unwrap();
        let root_cert = fs::read_to_string(root_dir.path().join(CA_CERT)).unwrap();
        let root_key = KeyPair::from_pem(&fs::read_to_string(root_dir.path().join(CA_KEY)).unwrap()).unwrap();
        let root_issuer = Issuer::from_ca_cert_pem(&root_cert, root_key).unwrap();
        // An intermediate for this cluster, as `cacerts` holds it when a user plugs in their PKI.
        let int_key = KeyPair::generate_for(mesh_hbone::ca::csr::KEY_ALG).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "cluster1 intermediate");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let int_cert = p.signed_by(&int_key, &root_issuer).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CA_CERT), &int_cert).unwrap();
        fs::write(dir.path().join(CA_KEY), int_key.serialize_pem()).unwrap();
        fs::write(dir.path().join(ROOT_CERT), &root_cert).unwrap();
        fs::write(dir.path().join(CERT_CHAIN), format!("{int_cert}{root_cert}")).unwrap();
        let ca = Authority::load(dir.path()).unwrap();
        let id = SpiffeId::new("cluster.local", "shop", "web");
        let csr = mesh_hbone::ca::csr::generate(&id).unwrap();
        let chain = ca.sign_csr(&csr.pem, &id, Duration::from_secs(60)).unwrap();
        assert_eq!(chain.len(), 3, "leaf + intermediate + root");
        let certs: Vec<CertificateDer<'static>> = chain
            .iter()
            .map(|p| CertificateDer::from_pem_slice(p.as_bytes()).unwrap())
            .collect();
        let roots = mesh_hbone::ca::client::root_store_pem(&root_cert).unwrap();
        let usage = webpki::KeyUsage::client_auth();
        assert!(
            mesh_hbone::tls::verify_chain(&certs[..1], &roots, usage).is_err(),
            "leaf alone"
        );
        mesh_hbone::tls::verify_chain(&certs[..2], &roots, usage).unwrap();
    }

    #[test]
    fn missing_or_corrupt_cacerts_are_reported_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Authority::load(dir.path()).err().unwrap();
        assert!(err.to_string().contains(CA_CERT), "{err}");
        create_root(dir.path(), "cluster.local").unwrap();
        fs::write(dir.path().join(CA_KEY), "not a key").unwrap();
        let err = Authority::load(dir.path()).err().unwrap();
        assert!(
            matches!(err, AuthorityError::Corrupt { .. }) && err.to_string().contains(CA_KEY),
            "{err}"
        );
    }
}
