//! The certificate a workload presents, swapped atomically on rotation. TLS configs
//! hold a [`CertResolver`], which reads the current certificate at each handshake:
//! rotation never touches live connections, and new connections pick up the new one.
//!
//! Resolvers are filled with certificates obtained from the mesh CA ([`crate::ca`]) by
//! the process that uses them: the node daemon for its pods, a waypoint or gateway for
//! itself.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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

impl Current {
    /// The leaf's serial number, colon-separated hex as `openssl x509 -serial` shows it
    /// (for admin dumps); `None` if the leaf does not parse.
    pub fn serial(&self) -> Option<String> {
        let leaf = self.certified.cert.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
        Some(parsed.raw_serial_as_string())
    }
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
