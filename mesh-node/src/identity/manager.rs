//! Per-node certificate manager: one key and certificate per local enrolled workload,
//! re-issued at a fraction of its lifetime. TLS configs hold a [`CertResolver`], which
//! reads the current certificate at each handshake: rotation never touches live
//! connections, and new connections pick up the new certificate.

pub use mesh_hbone::cert::{CertResolver, Current, WorkloadCert};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::KeyPair;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};

use super::ca::{KEY_ALG, SignRequest, Signed};
use super::{CaError, Signer, SpiffeId};
use crate::config::StateRx;
use crate::state::Workload;

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub node: String,
    pub lifetime: Duration,
    /// Fraction of the lifetime after which a certificate is replaced (0 < f < 1).
    pub rotate_fraction: f64,
    /// Where waypoint and gateway pods find their certificates (`<ns>/<pod>/`).
    pub proxy_cert_dir: Option<PathBuf>,
    /// The mesh root, written beside each proxy certificate.
    pub root_pem: String,
}

/// Turns a freshly generated key and its signed chain into what rustls serves.
pub fn certified_key(key: &KeyPair, signed: &Signed, generation: u64) -> Result<Current, CaError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| CaError::Key(e.to_string()))?;
    Ok(Current {
        certified: Arc::new(CertifiedKey::new(signed.chain.clone(), signing)),
        not_before: signed.not_before,
        not_after: signed.not_after,
        issued: SystemTime::now(),
        generation,
    })
}

pub struct CertManager {
    signer: Arc<dyn Signer>,
    cfg: ManagerConfig,
    certs: Mutex<HashMap<String, Arc<WorkloadCert>>>,
}

impl CertManager {
    pub fn new(signer: Arc<dyn Signer>, cfg: ManagerConfig) -> Self {
        Self {
            signer,
            cfg,
            certs: Mutex::new(HashMap::new()),
        }
    }

    /// The workload's certificate, issued on first use.
    pub fn get(&self, w: &Workload) -> Result<Arc<WorkloadCert>, CaError> {
        let key = w.key();
        let identity = SpiffeId::new(&w.trust_domain, &w.namespace, &w.service_account);
        if let Some(c) = self.lock().get(&key).filter(|c| c.identity == identity) {
            return Ok(c.clone());
        }
        let current = self.issue(w, 1)?;
        let cert = Arc::new(WorkloadCert {
            workload: key.clone(),
            identity,
            resolver: Arc::new(CertResolver::new(current)),
        });
        tracing::info!(workload = %key, identity = %cert.identity, "issued workload certificate");
        self.lock().insert(key, cert.clone());
        Ok(cert)
    }

    fn issue(&self, w: &Workload, generation: u64) -> Result<Current, CaError> {
        let key = KeyPair::generate_for(KEY_ALG)?;
        let signed = self.signer.sign(&SignRequest {
            node: &self.cfg.node,
            namespace: &w.namespace,
            pod: &w.name,
            public_key: key.public_key_raw(),
            lifetime: self.cfg.lifetime,
        })?;
        if w.proxy {
            self.export(w, &key, &signed)?;
        }
        certified_key(&key, &signed, generation)
    }

    /// A waypoint or gateway pod runs its own TLS: hand it the key and chain as files.
    fn export(&self, w: &Workload, key: &KeyPair, signed: &Signed) -> Result<(), CaError> {
        let Some(base) = &self.cfg.proxy_cert_dir else {
            return Ok(());
        };
        let dir = base.join(&w.namespace).join(&w.name);
        let chain: String = signed
            .chain
            .iter()
            .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
            .collect();
        mesh_hbone::cert::write_dir(&dir, &chain, &key.serialize_pem(), &self.cfg.root_pem)
            .map_err(|source| CaError::Io { path: dir, source })
    }

    /// Replaces the certificate of `w` now (rotation, or a test forcing one).
    pub fn rotate(&self, w: &Workload) -> Result<(), CaError> {
        let Some(cert) = self.lock().get(&w.key()).cloned() else {
            return self.get(w).map(drop);
        };
        let next = self.issue(w, cert.resolver.current().generation + 1)?;
        let expiry = next.not_after;
        cert.resolver.replace(next);
        tracing::info!(workload = %cert.workload, expiry = %rfc3339(expiry), "rotated workload certificate");
        Ok(())
    }

    fn due(&self, cert: &WorkloadCert, now: SystemTime) -> bool {
        let c = cert.resolver.current();
        let life = c.not_after.duration_since(c.issued).unwrap_or_default();
        now >= c.issued + life.mul_f64(self.cfg.rotate_fraction)
    }

    /// One pass: issue for new local workloads, rotate due ones, forget departed ones.
    pub fn reconcile(&self, state: &crate::state::MeshState) {
        let now = SystemTime::now();
        let local: HashMap<String, &Arc<Workload>> = state
            .local_enrolled()
            .chain(state.local_proxies())
            .map(|w| (w.key(), w))
            .collect();
        self.lock().retain(|k, _| {
            let keep = local.contains_key(k);
            if let (false, Some(base)) = (keep, &self.cfg.proxy_cert_dir) {
                // A departed proxy's key must not outlive its pod.
                let _ = std::fs::remove_dir_all(base.join(k));
            }
            keep
        });
        for (key, w) in local {
            let existing = self.lock().get(&key).cloned();
            let result = match existing {
                Some(c) if self.due(&c, now) => self.rotate(w),
                Some(_) => Ok(()),
                None => self.get(w).map(drop),
            };
            if let Err(e) = result {
                tracing::warn!(workload = %key, "certificate not issued: {e}");
            }
        }
    }

    /// Keeps certificates current until the state channel closes.
    pub async fn run(self: Arc<Self>, mut state: StateRx) {
        let tick = (self.cfg.lifetime.mul_f64(self.cfg.rotate_fraction) / 10)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            let snapshot = state.borrow_and_update().clone();
            self.reconcile(&snapshot);
            tokio::select! {
                changed = state.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// The admin `certificates` section.
    pub fn dump(&self) -> Value {
        let mut rows: Vec<Value> = self
            .lock()
            .values()
            .map(|c| {
                let cur = c.resolver.current();
                json!({
                    "workload": c.workload, "identity": c.identity.to_string(),
                    "not_before": rfc3339(cur.not_before), "expiry": rfc3339(cur.not_after),
                    "generation": cur.generation,
                })
            })
            .collect();
        rows.sort_by(|a, b| a["workload"].as_str().cmp(&b["workload"].as_str()));
        Value::Array(rows)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<WorkloadCert>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.certs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{LocalCa, NodeScopedCa};

    use crate::identity::test_fixture::TOPOLOGY;

    #[test]
    fn reconcile_issues_for_local_workloads_and_rotates_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(dir.path(), "cluster.local").unwrap());
        let state = Arc::new(crate::state::tests::state_from(TOPOLOGY, "n1"));
        let (_tx, rx) = tokio::sync::watch::channel(state.clone());
        let cfg = ManagerConfig {
            node: "n1".into(),
            lifetime: Duration::from_secs(3600),
            rotate_fraction: 0.5,
            proxy_cert_dir: None,
            root_pem: String::new(),
        };
        let m = CertManager::new(Arc::new(NodeScopedCa::new(ca, rx)), cfg);
        m.reconcile(&state);
        let dump = m.dump();
        assert_eq!(dump.as_array().unwrap().len(), 1, "{dump}");
        assert_eq!(dump[0]["identity"], "spiffe://cluster.local/ns/shop/sa/web");
        let a = state.workload("198.18.1.2".parse().unwrap()).unwrap();
        let cert = m.get(a).unwrap();
        let first = cert.resolver.current();
        assert!(!m.due(&cert, SystemTime::now()));
        let life = first.not_after.duration_since(first.issued).unwrap();
        assert!(!m.due(&cert, first.issued + life.mul_f64(0.49)));
        assert!(m.due(&cert, first.issued + life.mul_f64(0.51)));
        m.rotate(a).unwrap();
        let second = cert.resolver.current();
        assert_eq!(second.generation, 2);
        assert_ne!(first.certified.cert[0], second.certified.cert[0]);
    }
}
