//! The certificate a workload presents, swapped atomically on rotation. TLS configs
//! hold a [`CertResolver`], which reads the current certificate at each handshake:
//! rotation never touches live connections, and new connections pick up the new one.
//!
//! The node daemon fills resolvers from its CA; a proxy running in its own pod (waypoint,
//! ingress gateway) reads the PEM files the node daemon writes for it ([`CertFiles`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::SpiffeId;

/// The certificate currently served for one workload.
pub struct Current {
    pub certified: Arc<CertifiedKey>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When we obtained it; `not_before` is backdated for clock skew, so rotation
    /// counts the lifetime from here.
    pub issued: SystemTime,
    /// Counts issuances for this workload, 1 for the first certificate.
    pub generation: u64,
}

/// Hands rustls whichever certificate is current, on both sides of a handshake.
pub struct CertResolver {
    current: ArcSwap<Current>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("generation", &self.current.load().generation)
            .finish()
    }
}

impl CertResolver {
    pub fn new(current: Current) -> Self {
        Self {
            current: ArcSwap::from_pointee(current),
        }
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    pub fn replace(&self, next: Current) {
        self.current.store(Arc::new(next));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A workload's identity and the resolver serving its certificate.
#[derive(Debug)]
pub struct WorkloadCert {
    pub workload: String,
    pub identity: SpiffeId,
    pub resolver: Arc<CertResolver>,
}

/// File names inside a certificate directory, as Istio's file-mounted certificates.
pub const CHAIN_FILE: &str = "cert-chain.pem";
pub const KEY_FILE: &str = "key.pem";
pub const ROOT_FILE: &str = "root-cert.pem";

#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no usable PEM {what}: {detail}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path}: the private key does not fit rustls ({detail})")]
    Key { path: PathBuf, detail: String },
    #[error("{path}: the leaf certificate has no SPIFFE id: {detail}")]
    NoIdentity { path: PathBuf, detail: String },
    #[error("{path}: the leaf certificate is for {found}, expected {expected}")]
    WrongIdentity {
        path: PathBuf,
        // Boxed: two ids would make every Result of this module 168 bytes wide.
        found: Box<SpiffeId>,
        expected: Box<SpiffeId>,
    },
}

/// A workload certificate read from `cert-chain.pem`, `key.pem` and `root-cert.pem`.
pub struct CertFiles {
    pub identity: SpiffeId,
    pub current: Current,
    pub root: CertificateDer<'static>,
    /// Modification time of the chain file, to notice a rotation.
    pub modified: Option<SystemTime>,
}

impl CertFiles {
    pub fn load(dir: &Path, generation: u64) -> Result<Self, CertFileError> {
        let chain_path = dir.join(CHAIN_FILE);
        let chain = certs(&chain_path)?;
        let root = certs(&dir.join(ROOT_FILE))?.remove(0);
        let key_path = dir.join(KEY_FILE);
        let key_pem = read(&key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertFileError::Pem {
            path: key_path.clone(),
            what: "private key",
            detail: e.to_string(),
        })?;
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| CertFileError::Key {
            path: key_path,
            detail: e.to_string(),
        })?;
        let identity = crate::tls::spiffe_id(&chain[0]).map_err(|e| CertFileError::NoIdentity {
            path: chain_path.clone(),
            detail: e.to_string(),
        })?;
        // Validity is enforced by the peers' verifiers; the file loader only needs to
        // notice rotations (by modification time), so it does not parse the dates.
        let (not_before, not_after) = (SystemTime::now(), SystemTime::now());
        let modified = std::fs::metadata(&chain_path).and_then(|m| m.modified()).ok();
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        let current = Current {
            certified,
            not_before,
            not_after,
            issued: SystemTime::now(),
            generation,
        };
        Ok(Self {
            identity,
            current,
            root,
            modified,
        })
    }

    /// Modification time of the chain in `dir`, cheap enough to poll.
    pub fn modified(dir: &Path) -> Option<SystemTime> {
        std::fs::metadata(dir.join(CHAIN_FILE)).and_then(|m| m.modified()).ok()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertFileError> {
    std::fs::read(path).map_err(|source| CertFileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertFileError> {
    let pem = read(path)?;
    let bad = |detail: String| CertFileError::Pem {
        path: path.to_owned(),
        what: "certificate",
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Writes a certificate directory atomically (temp file + rename), keys 0600, so a
/// reader polling [`CertFiles::modified`] never sees half a rotation.
pub fn write_dir(dir: &Path, chain_pem: &str, key_pem: &str, root_pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    // Key and root first: a reader reloads when the chain changes.
    for (name, text, mode) in [
        (KEY_FILE, key_pem, 0o600),
        (ROOT_FILE, root_pem, 0o644),
        (CHAIN_FILE, chain_pem, 0o644),
    ] {
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}
