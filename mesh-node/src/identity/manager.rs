//! Per-node certificate manager: one key and certificate per local enrolled workload,
//! obtained from the CA and renewed at a fraction of its lifetime. TLS configs hold a
//! [`CertResolver`], which reads the current certificate at each handshake: rotation
//! never touches live connections, and new connections pick up the new certificate.
//!
//! When the CA cannot be reached, certificates in hand keep serving until they expire;
//! renewal is retried with jittered exponential backoff; readiness (`certificates`) and
//! metrics (`mesh_ca_requests_total{result}`, `mesh_certificate_expiry_seconds`) show
//! it. A workload without a valid certificate gets none ([`CertError`]): its
//! connections are refused, never sent in plaintext.

pub use mesh_hbone::ca::CertMetrics;
pub use mesh_hbone::cert::{CertResolver, WorkloadCert};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mesh_common::rfc3339;
use mesh_hbone::RefusalReason;
use mesh_hbone::ca::{Backoff, CaClientError};
use serde_json::{Value, json};

use super::{CertSource, SpiffeId};
use crate::config::StateRx;
use crate::readiness::{Condition, Readiness};
use crate::state::{MeshState, Workload};

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub lifetime: Duration,
    /// Fraction of the lifetime after which a certificate is replaced (0 < f < 1).
    pub rotate_fraction: f64,
    pub backoff: Backoff,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{workload} has no certificate yet ({detail}); its connections are refused until the CA issues one")]
    Missing { workload: String, detail: String },
    #[error("the certificate of {workload} expired and could not be renewed ({detail}); its connections are refused")]
    Expired { workload: String, detail: String },
}

impl CertError {
    /// The `reason` label of `mesh_connections_refused_total`.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Self::Missing { .. } => RefusalReason::NoCertificate,
            Self::Expired { .. } => RefusalReason::CertExpired,
        }
    }
}

/// One local workload's certificate and renewal state.
#[derive(Default)]
struct Entry {
    cert: Option<Arc<WorkloadCert>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

pub struct CertManager {
    source: Arc<dyn CertSource>,
    cfg: ManagerConfig,
    entries: Mutex<HashMap<String, Entry>>,
    /// One CA request at a time: a burst of connections for a new pod makes one request.
    fetching: tokio::sync::Mutex<()>,
    metrics: CertMetrics,
    /// Last time the CA answered, and the last failure to reach it.
    ca_status: Mutex<(Option<SystemTime>, Option<String>)>,
}

impl CertManager {
    pub fn new(source: Arc<dyn CertSource>, cfg: ManagerConfig, metrics: CertMetrics) -> Self {
        Self {
            source,
            cfg,
            entries: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
            ca_status: Mutex::new((None, None)),
        }
    }

    /// The workload's valid certificate, or why there is none. Never waits.
    pub fn get(&self, w: &Workload) -> Result<Arc<WorkloadCert>, CertError> {
        let identity = identity_of(w);
        let entries = self.lock();
        let entry = entries.get(&w.key());
        let detail = || {
            entry
                .and_then(|e| e.last_error.clone())
                .unwrap_or_else(|| "not requested yet".into())
        };
        match entry.and_then(|e| e.cert.clone()).filter(|c| c.identity == identity) {
            Some(c) if SystemTime::now() < c.resolver.current().not_after => Ok(c),
            Some(_) => Err(CertError::Expired {
                workload: w.key(),
                detail: detail(),
            }),
            None => Err(CertError::Missing {
                workload: w.key(),
                detail: detail(),
            }),
        }
    }

    /// The workload's certificate, requesting it now if it has none and the CA is not
    /// in backoff for it (the first connection of a new pod need not wait for a tick).
    pub async fn obtain(&self, w: &Workload) -> Result<Arc<WorkloadCert>, CertError> {
        if let Ok(c) = self.get(w) {
            return Ok(c);
        }
        if self.in_backoff(&w.key(), Instant::now()) {
            return self.get(w);
        }
        let _one = self.fetching.lock().await;
        if self.get(w).is_err() && !self.in_backoff(&w.key(), Instant::now()) {
            self.fetch(w).await;
        }
        self.get(w)
    }

    fn in_backoff(&self, key: &str, now: Instant) -> bool {
        self.lock().get(key).and_then(|e| e.retry_at).is_some_and(|at| now < at)
    }

    /// One CA request for `w`; the outcome lands in its entry (and the metrics).
    async fn fetch(&self, w: &Workload) {
        let key = w.key();
        let identity = identity_of(w);
        let existing = self.lock().get(&key).and_then(|e| e.cert.clone());
        let generation = existing.as_ref().map_or(1, |c| c.resolver.current().generation + 1);
        let result = self.source.fetch(&identity, generation).await;
        self.metrics.request(&result);
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        match result {
            Ok(next) => {
                let expiry = rfc3339(next.not_after);
                match existing.filter(|c| c.identity == identity) {
                    Some(cert) => {
                        cert.resolver.replace(next);
                        entry.cert = Some(cert);
                        tracing::info!(workload = %key, %identity, %expiry, "rotated workload certificate");
                    }
                    None => {
                        entry.cert = Some(Arc::new(WorkloadCert {
                            workload: key.clone(),
                            identity: identity.clone(),
                            resolver: Arc::new(CertResolver::new(next)),
                        }));
                        tracing::info!(workload = %key, %identity, %expiry, "issued workload certificate");
                    }
                }
                (entry.failures, entry.retry_at, entry.last_error) = (0, None, None);
                drop(entries);
                self.set_ca_status(Ok(()));
            }
            Err(e) => {
                entry.failures += 1;
                let delay = self.cfg.backoff.delay(entry.failures);
                entry.retry_at = Some(Instant::now() + delay);
                entry.last_error = Some(e.to_string());
                let failures = entry.failures;
                drop(entries);
                tracing::warn!(workload = %key, %identity, failures, retry_in_ms = delay.as_millis() as u64, "certificate request failed: {e}");
                self.set_ca_status(Err(&e));
            }
        }
    }

    fn set_ca_status(&self, r: Result<(), &CaClientError>) {
        let mut s = self.ca_status.lock().unwrap_or_else(|p| p.into_inner());
        match r {
            Ok(()) => *s = (Some(SystemTime::now()), None),
            // A refusal is about one identity; only an unreachable CA is the CA's state.
            Err(e @ CaClientError::Unreachable { .. }) => s.1 = Some(e.to_string()),
            Err(_) => {}
        }
    }

    fn due(&self, cert: &WorkloadCert, now: SystemTime) -> bool {
        let c = cert.resolver.current();
        let life = c.not_after.duration_since(c.issued).unwrap_or_default();
        now >= c.issued + life.mul_f64(self.cfg.rotate_fraction)
    }

    /// One pass: request for new local workloads and due ones, forget departed ones.
    pub async fn reconcile(&self, state: &MeshState) {
        let local: HashMap<String, Arc<Workload>> = state.local_enrolled().map(|w| (w.key(), w.clone())).collect();
        let gone: Vec<(String, Option<Arc<WorkloadCert>>)> = {
            let mut entries = self.lock();
            let gone = entries
                .iter()
                .filter(|(k, _)| !local.contains_key(*k))
                .map(|(k, e)| (k.clone(), e.cert.clone()))
                .collect();
            entries.retain(|k, _| local.contains_key(k));
            gone
        };
        for (key, cert) in gone {
            if let Some(c) = cert {
                self.metrics.forget(&key, &c.identity);
            }
        }
        let now = (SystemTime::now(), Instant::now());
        for (key, w) in &local {
            let needs = match self.get(w) {
                Ok(c) => self.due(&c, now.0),
                Err(_) => true,
            };
            if needs && !self.in_backoff(key, now.1) {
                let _one = self.fetching.lock().await;
                self.fetch(w).await;
            }
        }
    }

    /// Expiry gauges and the `certificates` readiness condition, from the entries.
    pub fn report(&self, readiness: &Readiness) {
        let (mut valid, mut missing, mut soonest) = (0usize, Vec::new(), None::<SystemTime>);
        for (key, e) in self.lock().iter() {
            match &e.cert {
                Some(c) => {
                    let not_after = c.resolver.current().not_after;
                    let left = self.metrics.expiry(key, &c.identity, not_after);
                    if left > 0.0 {
                        valid += 1;
                        soonest = Some(soonest.map_or(not_after, |s| s.min(not_after)));
                    } else {
                        missing.push(key.clone());
                    }
                }
                None => missing.push(key.clone()),
            }
        }
        let unreachable = self.ca_status.lock().unwrap_or_else(|p| p.into_inner()).1.clone();
        let expires = soonest.map_or_else(|| "none held".to_owned(), |s| format!("first expiry {}", rfc3339(s)));
        let condition = match (unreachable, missing.is_empty()) {
            (None, true) => Condition::Ok(format!("{valid} valid, {expires}")),
            (Some(err), _) => Condition::Pending(format!(
                "CA unreachable: {err}; {valid} certificates keep serving ({expires}); without one: {missing:?}"
            )),
            (None, false) => Condition::Pending(format!("{valid} valid; without one (refused): {missing:?}")),
        };
        readiness.set("certificates", condition);
    }

    /// Keeps certificates current until the state channel closes.
    pub async fn run(self: Arc<Self>, mut state: StateRx, readiness: Readiness) {
        let tick = (self.cfg.lifetime.mul_f64(self.cfg.rotate_fraction) / 10)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let snapshot = state.borrow_and_update().clone();
            self.reconcile(&snapshot).await;
            self.report(&readiness);
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// The admin `certificates` section.
    pub fn dump(&self) -> Value {
        let now = Instant::now();
        let mut rows: Vec<Value> = self
            .lock()
            .iter()
            .map(|(key, e)| {
                let mut row = json!({
                    "workload": key,
                    "failures": e.failures,
                    "last_error": e.last_error,
                    "retry_in_ms": e.retry_at.map(|at| at.saturating_duration_since(now).as_millis() as u64),
                });
                if let Some(c) = &e.cert {
                    let cur = c.resolver.current();
                    row["identity"] = json!(c.identity.to_string());
                    row["serial"] = json!(cur.serial());
                    row["not_before"] = json!(rfc3339(cur.not_before));
                    row["expiry"] = json!(rfc3339(cur.not_after));
                    row["generation"] = json!(cur.generation);
                }
                row
            })
            .collect();
        rows.sort_by(|a, b| a["workload"].as_str().cmp(&b["workload"].as_str()));
        Value::Array(rows)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single updates).
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn identity_of(w: &Workload) -> SpiffeId {
    SpiffeId::new(&w.trust_domain, &w.namespace, &w.service_account)
}

#[cfg(test)]
mod tests;
