//! This proxy's workload certificate, read from the directory the node daemon writes
//! (`cert-chain.pem`, `key.pem`, `root-cert.pem`) and re-read when it is rotated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_hbone::cert::{CertFileError, CertFiles};
use mesh_hbone::{CertResolver, WorkloadCert};
use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "no usable workload certificate in {dir} (the node daemon writes it once this pod is scheduled on its node): {source}"
    )]
    Files { dir: PathBuf, source: CertFileError },
    #[error("the mesh root in {dir} cannot be used: {source}")]
    Root {
        dir: PathBuf,
        source: mesh_hbone::tls::TlsError,
    },
}

pub struct ProxyIdentity {
    pub cert: Arc<WorkloadCert>,
    pub roots: Arc<RootCertStore>,
    pub dir: PathBuf,
}

impl ProxyIdentity {
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let files = CertFiles::load(dir, 1).map_err(|source| IdentityError::Files {
            dir: dir.to_owned(),
            source,
        })?;
        let roots = mesh_hbone::tls::root_store(&files.root).map_err(|source| IdentityError::Root {
            dir: dir.to_owned(),
            source,
        })?;
        let cert = Arc::new(WorkloadCert {
            workload: dir.display().to_string(),
            identity: files.identity,
            resolver: Arc::new(CertResolver::new(files.current)),
        });
        Ok(Self {
            cert,
            roots,
            dir: dir.to_owned(),
        })
    }

    /// Waits until the directory holds a certificate (the node daemon may issue it a
    /// moment after this pod starts), logging what is missing every few seconds.
    pub async fn wait_for(dir: &Path, deadline: Duration) -> Result<Self, IdentityError> {
        let started = tokio::time::Instant::now();
        let mut last_log = started;
        loop {
            match Self::load(dir) {
                Ok(id) => return Ok(id),
                Err(e) if started.elapsed() >= deadline => return Err(e),
                Err(e) => {
                    if last_log.elapsed() >= Duration::from_secs(5) {
                        tracing::info!("waiting for the workload certificate: {e}");
                        last_log = tokio::time::Instant::now();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Swaps in a rotated certificate whenever the chain file changes. New connections
    /// present it; live ones keep theirs (the HBONE pool keys on the generation).
    pub async fn follow_rotation(self: Arc<Self>, every: Duration) {
        let mut seen = CertFiles::modified(&self.dir);
        loop {
            tokio::time::sleep(every).await;
            let now = CertFiles::modified(&self.dir);
            if now == seen {
                continue;
            }
            let next_generation = self.cert.resolver.current().generation + 1;
            match CertFiles::load(&self.dir, next_generation) {
                Ok(files) if files.identity == self.cert.identity => {
                    self.cert.resolver.replace(files.current);
                    seen = now;
                    tracing::info!(identity = %self.cert.identity, generation = next_generation, "workload certificate rotated");
                }
                Ok(files) => {
                    seen = now;
                    tracing::warn!(found = %files.identity, expected = %self.cert.identity, "certificate directory now holds another identity; keeping the current one");
                }
                // Mid-write or removed: keep the current certificate and look again.
                Err(e) => tracing::debug!("certificate reload deferred: {e}"),
            }
        }
    }
}
