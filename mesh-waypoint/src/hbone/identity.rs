//! This proxy's workload certificate, obtained from the mesh CA by CSR with its own
//! token (a waypoint or gateway gets only its own service account's identity): the key
//! is generated here and never leaves the process. Renewed at a fraction of its
//! lifetime; when the CA is unreachable the certificate in hand keeps serving and the
//! renewal is retried with jittered backoff. Past its expiry peers refuse it (fail
//! closed), nothing falls back to plaintext. Its CA requests and the seconds left on
//! its certificate are the node daemon's metrics (`mesh_ca_requests_total{result}`,
//! `mesh_certificate_expiry_seconds`, [`CertMetrics`]), on the stats port; its
//! readiness line ([`ProxyIdentity::condition`]) says whether it holds a valid one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use mesh_common::readiness::Condition;
use mesh_common::rfc3339;

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

pub struct ProxyIdentity {
    pub cert: Arc<WorkloadCert>,
    pub roots: Arc<RootCertStore>,
    client: CaClient,
    opts: CaOptions,
    metrics: CertMetrics,
    /// Set while renewals fail, cleared by the next certificate.
    failing: Mutex<Option<RenewalFailure>>,
}

#[derive(Clone, Debug)]
struct RenewalFailure {
    since: SystemTime,
    attempts: u32,
    error: String,
}

/// The certificate in hand, as readiness describes it.
struct Held<'a> {
    identity: &'a SpiffeId,
    generation: u64,
    not_after: SystemTime,
}

impl Held<'_> {
    fn condition(&self, failing: Option<&RenewalFailure>, now: SystemTime) -> Condition {
        let renewal = failing.map_or_else(String::new, |f| {
            format!(
                "; renewal failing since {} ({} attempts): {}",
                rfc3339(f.since),
                f.attempts,
                f.error
            )
        });
        if now >= self.not_after {
            return Condition::Pending(format!(
                "{}: certificate expired at {}{renewal}; peers refuse it until a new one is issued",
                self.identity,
                rfc3339(self.not_after)
            ));
        }
        Condition::Ok(format!(
            "{}, generation {}, expires {}{renewal}",
            self.identity,
            self.generation,
            rfc3339(self.not_after)
        ))
    }
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
            failing: Mutex::new(None),
        };
        identity.report();
        Ok(identity)
    }

    /// `mesh_ca_requests_total` and `mesh_certificate_expiry_seconds` of this proxy.
    pub fn metrics(&self) -> &CertMetrics {
        &self.metrics
    }

    /// Records the current certificate's expiry for the gauge (computed at scrape).
    fn report(&self) {
        let not_after = self.cert.resolver.current().not_after;
        self.metrics.expiry(&self.cert.workload, &self.cert.identity, not_after);
    }

    /// Renews the certificate for as long as the process runs. New connections present
    /// the new one; live ones keep theirs (the HBONE pool keys on the generation).
    /// Sleeps until the renewal (or its retry) is due: nothing wakes in between.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut retry_at: Option<SystemTime> = None;
        loop {
            let cur = self.cert.resolver.current();
            let life = cur.not_after.duration_since(cur.issued).unwrap_or_default();
            let due = retry_at.unwrap_or(cur.issued + life.mul_f64(self.opts.rotate_fraction));
            let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            retry_at = self.renew(cur.generation + 1, cur.not_after).await;
        }
    }

    /// One renewal attempt; when it fails, when to try again.
    async fn renew(&self, generation: u64, not_after: SystemTime) -> Option<SystemTime> {
        let fetched = self
            .client
            .fetch(&self.opts.identity, false, self.opts.lifetime, generation)
            .await;
        self.metrics.request(&fetched);
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(next) => {
                *failing = None;
                self.cert.resolver.replace(next);
                self.report();
                tracing::info!(identity = %self.opts.identity, generation, "workload certificate rotated");
                None
            }
            Err(e) => {
                let f = failing.get_or_insert_with(|| RenewalFailure {
                    since: SystemTime::now(),
                    attempts: 0,
                    error: String::new(),
                });
                f.attempts += 1;
                f.error = e.to_string();
                let delay = self.opts.backoff.delay(f.attempts);
                let expired = SystemTime::now() >= not_after;
                tracing::warn!(identity = %self.opts.identity, failures = f.attempts, expired, retry_in_ms = delay.as_millis() as u64, "certificate renewal failed; the current one keeps serving until it expires: {e}");
                Some(SystemTime::now() + delay)
            }
        }
    }

    /// The `certificate` readiness line. Ready while the certificate in hand is valid,
    /// also when renewals fail (the detail says so and `mesh_ca_requests_total` counts
    /// them): a CA outage must not pull every waypoint out of its Service at once, since
    /// the certificate keeps serving until it expires. Past expiry peers refuse it, so
    /// the proxy is not ready until a new one is issued.
    pub fn condition(&self) -> Condition {
        let cur = self.cert.resolver.current();
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let held = Held {
            identity: &self.opts.identity,
            generation: cur.generation,
            not_after: cur.not_after,
        };
        held.condition(failing.as_ref(), SystemTime::now())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_while_valid_even_when_renewals_fail_and_not_once_expired() {
        let id = SpiffeId::new("cluster.local", "shop", "waypoint");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let held = Held {
            identity: &id,
            generation: 3,
            not_after: now + Duration::from_secs(10),
        };
        let ok = held.condition(None, now);
        assert_eq!(
            ok,
            Condition::Ok(
                "spiffe://cluster.local/ns/shop/sa/waypoint, generation 3, expires 1970-01-01T00:16:50Z".into()
            )
        );
        let failing = RenewalFailure {
            since: now,
            attempts: 4,
            error: "the mesh CA is unreachable".into(),
        };
        let c = held.condition(Some(&failing), now);
        assert!(
            matches!(&c, Condition::Ok(d) if d.contains("renewal failing since 1970-01-01T00:16:40Z (4 attempts): the mesh CA is unreachable")),
            "{c:?}"
        );
        let c = held.condition(Some(&failing), now + Duration::from_secs(10));
        assert!(
            matches!(&c, Condition::Pending(d) if d.contains("certificate expired at 1970-01-01T00:16:50Z") && d.contains("4 attempts")),
            "{c:?}"
        );
    }
}
