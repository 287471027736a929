//! This proxy's workload certificate, obtained from the mesh CA by CSR with its own
//! token (a waypoint or gateway gets only its own service account's identity): the key
//! is generated here and never leaves the process. Renewed at a fraction of its
//! lifetime; when the CA is unreachable the certificate in hand keeps serving and the
//! renewal is retried with jittered backoff. Past its expiry peers refuse it (fail
//! closed), nothing falls back to plaintext. Its CA requests and the seconds left on
//! its certificate are the node daemon's metrics (`mesh_ca_requests_total{result}`,
//! `mesh_certificate_expiry_seconds`, [`CertMetrics`]), on the stats port.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_hbone::ca::{Backoff, CaClient, CaClientConfig, CaClientError, CertMetrics};
use mesh_hbone::{CertResolver, SpiffeId, WorkloadCert};
use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no certificate for {identity} from the mesh CA after {waited:?}: {source}")]
    Ca {
        identity: SpiffeId,
        waited: Duration,
        source: CaClientError,
    },
    #[error(transparent)]
    Client(#[from] CaClientError),
}

/// How this proxy talks to the CA.
#[derive(Clone, Debug)]
pub struct CaOptions {
    pub client: CaClientConfig,
    pub identity: SpiffeId,
    /// `namespace/pod` (or `namespace/service-account` without a pod name): the
    /// `workload` label of the expiry gauge.
    pub workload: String,
    pub lifetime: Duration,
    pub rotate_fraction: f64,
    pub backoff: Backoff,
}

/// How often the expiry gauge is refreshed between renewals.
const REPORT_EVERY: Duration = Duration::from_secs(1);

pub struct ProxyIdentity {
    pub cert: Arc<WorkloadCert>,
    pub roots: Arc<RootCertStore>,
    client: CaClient,
    opts: CaOptions,
    metrics: CertMetrics,
}

impl std::fmt::Debug for ProxyIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyIdentity")
            .field("identity", &self.opts.identity)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl ProxyIdentity {
    /// Requests the first certificate, retrying until `deadline` (the CA may start after us).
    pub async fn obtain(opts: CaOptions, deadline: Duration) -> Result<Self, IdentityError> {
        let client = CaClient::new(opts.client.clone())?;
        let metrics = CertMetrics::default();
        let started = tokio::time::Instant::now();
        let mut failures = 0;
        let current = loop {
            let fetched = client.fetch(&opts.identity, false, opts.lifetime, 1).await;
            metrics.request(&fetched);
            match fetched {
                Ok(c) => break c,
                Err(source) if started.elapsed() >= deadline => {
                    return Err(IdentityError::Ca {
                        identity: opts.identity.clone(),
                        waited: deadline,
                        source,
                    });
                }
                Err(e) => {
                    failures += 1;
                    let delay = opts.backoff.delay(failures);
                    tracing::info!(identity = %opts.identity, retry_in_ms = delay.as_millis() as u64, "waiting for the workload certificate: {e}");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let cert = Arc::new(WorkloadCert {
            workload: opts.workload.clone(),
            identity: opts.identity.clone(),
            resolver: Arc::new(CertResolver::new(current)),
        });
        let identity = Self {
            cert,
            roots: client.roots(),
            client,
            opts,
            metrics,
        };
        identity.report();
        Ok(identity)
    }

    /// `mesh_ca_requests_total` and `mesh_certificate_expiry_seconds` of this proxy.
    pub fn metrics(&self) -> &CertMetrics {
        &self.metrics
    }

    /// Sets the expiry gauge from the current certificate.
    fn report(&self) {
        let not_after = self.cert.resolver.current().not_after;
        self.metrics.expiry(&self.cert.workload, &self.cert.identity, not_after);
    }

    /// Renews the certificate for as long as the process runs. New connections present
    /// the new one; live ones keep theirs (the HBONE pool keys on the generation).
    /// The expiry gauge is refreshed every [`REPORT_EVERY`] meanwhile.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut failures = 0;
        let mut retry_at: Option<SystemTime> = None;
        loop {
            self.report();
            let cur = self.cert.resolver.current();
            let life = cur.not_after.duration_since(cur.issued).unwrap_or_default();
            let due = retry_at.unwrap_or(cur.issued + life.mul_f64(self.opts.rotate_fraction));
            let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(REPORT_EVERY)).await;
                continue;
            }
            let generation = cur.generation + 1;
            let fetched = self
                .client
                .fetch(&self.opts.identity, false, self.opts.lifetime, generation)
                .await;
            self.metrics.request(&fetched);
            match fetched {
                Ok(next) => {
                    (failures, retry_at) = (0, None);
                    self.cert.resolver.replace(next);
                    tracing::info!(identity = %self.opts.identity, generation, "workload certificate rotated");
                }
                Err(e) => {
                    failures += 1;
                    let delay = self.opts.backoff.delay(failures);
                    retry_at = Some(SystemTime::now() + delay);
                    let expired = SystemTime::now() >= cur.not_after;
                    tracing::warn!(identity = %self.opts.identity, failures, expired, retry_in_ms = delay.as_millis() as u64, "certificate renewal failed; the current one keeps serving until it expires: {e}");
                }
            }
        }
    }

    /// The admin view (`certificate` of `/config_dump`): identity, serial, validity, generation.
    pub fn dump(&self) -> serde_json::Value {
        let cur = self.cert.resolver.current();
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        serde_json::json!({
            "identity": self.opts.identity.to_string(),
            "workload": self.cert.workload,
            "serial": cur.serial(),
            "not_before_unix": secs(cur.not_before),
            "expiry_unix": secs(cur.not_after),
            "generation": cur.generation,
        })
    }
}
