//! The manager against an in-process CA (the `mesh-ca` authority) that can be taken down.

use std::sync::atomic::{AtomicBool, Ordering};

use mesh_ca::authority::{Authority, create_root};
use mesh_hbone::BoxFuture;
use mesh_hbone::cert::Current;

use super::*;
use crate::identity::test_fixture::TOPOLOGY;

struct TestCa {
    _dir: tempfile::TempDir,
    ca: Authority,
    down: AtomicBool,
    lifetime: Duration,
}

impl TestCa {
    fn new(lifetime: Duration) -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        create_root(dir.path(), "cluster.local").unwrap();
        let ca = Authority::load(dir.path()).unwrap();
        Arc::new(Self {
            _dir: dir,
            ca,
            down: AtomicBool::new(false),
            lifetime,
        })
    }
}

impl CertSource for TestCa {
    fn fetch<'a>(&'a self, identity: &'a SpiffeId, generation: u64) -> BoxFuture<'a, Result<Current, CaClientError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(CaClientError::Unreachable {
                    address: "test".into(),
                    detail: "connection refused".into(),
                });
            }
            let csr = mesh_hbone::ca::csr::generate(identity).unwrap();
            let chain = self.ca.sign_csr(&csr.pem, identity, self.lifetime).unwrap();
            let roots = mesh_hbone::ca::client::root_store_pem(self.ca.root_pem()).unwrap();
            mesh_hbone::ca::client::assemble(&csr.key, &chain, &roots, identity, SystemTime::now(), generation)
        })
    }
}

fn manager(ca: Arc<TestCa>) -> CertManager {
    let cfg = ManagerConfig {
        lifetime: ca.lifetime,
        rotate_fraction: 0.5,
        backoff: Backoff {
            min: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
    };
    CertManager::new(ca, cfg, CertMetrics::default())
}

#[tokio::test]
async fn reconcile_requests_for_local_workloads_and_rotates_in_place_when_due() {
    let ca = TestCa::new(Duration::from_secs(3600));
    let m = manager(ca);
    let state = crate::state::tests::state_from(TOPOLOGY, "n1");
    m.reconcile(&state).await;
    let dump = m.dump();
    assert_eq!(dump.as_array().unwrap().len(), 1, "{dump}");
    assert_eq!(dump[0]["identity"], "spiffe://cluster.local/ns/shop/sa/web");
    let a = state.workload("198.18.1.2".parse().unwrap()).unwrap();
    let cert = m.get(a).unwrap();
    let first = cert.resolver.current();
    assert!(!m.due(&cert, SystemTime::now()));
    let life = first.not_after.duration_since(first.issued).unwrap();
    assert!(m.due(&cert, first.issued + life.mul_f64(0.51)));
    m.fetch(a).await;
    let second = cert.resolver.current();
    assert_eq!(second.generation, 2, "the same resolver serves the new certificate");
    assert_ne!(first.certified.cert[0], second.certified.cert[0]);
}

#[tokio::test]
async fn ca_outage_keeps_held_certificates_backs_off_and_reports() {
    let ca = TestCa::new(Duration::from_secs(3600));
    let m = manager(ca.clone());
    let state = crate::state::tests::state_from(TOPOLOGY, "n1");
    m.reconcile(&state).await;
    let a = state.workload("198.18.1.2".parse().unwrap()).unwrap();
    ca.down.store(true, Ordering::SeqCst);
    m.fetch(a).await;
    assert!(m.get(a).is_ok(), "the certificate in hand keeps serving");
    assert!(m.in_backoff(&a.key(), Instant::now()), "renewal waits for its backoff");
    let readiness = Readiness::default();
    m.report(&readiness);
    let report = readiness.report();
    assert!(!readiness.is_ready() && report.contains("CA unreachable"), "{report}");
    assert!(report.contains("1 certificates keep serving"), "{report}");
    let mut reg = prometheus_client::registry::Registry::default();
    m.metrics.register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains("mesh_ca_requests_total{result=\"unreachable\"} 1"),
        "{text}"
    );
    assert!(text.contains("mesh_ca_requests_total{result=\"issued\"} 1"), "{text}");
    assert!(
        text.contains("mesh_certificate_expiry_seconds{workload=\"shop/a\""),
        "{text}"
    );
}

#[tokio::test]
async fn without_a_valid_certificate_the_workload_fails_closed() {
    let ca = TestCa::new(Duration::from_secs(2));
    let m = manager(ca.clone());
    let state = crate::state::tests::state_from(TOPOLOGY, "n1");
    let a = state.workload("198.18.1.2".parse().unwrap()).unwrap();
    ca.down.store(true, Ordering::SeqCst);
    let err = m.obtain(a).await.unwrap_err();
    assert_eq!(err.reason(), mesh_hbone::RefusalReason::NoCertificate, "{err}");
    assert!(err.to_string().contains("connection refused"), "{err}");
    ca.down.store(false, Ordering::SeqCst);
    m.lock().clear();
    let cert = m.obtain(a).await.unwrap();
    // Past its notAfter (the CA backdates notBefore, not notAfter) the certificate is not used.
    let cur = cert.resolver.current();
    let expired = Current {
        certified: cur.certified.clone(),
        not_before: cur.not_before,
        not_after: SystemTime::now() - Duration::from_secs(1),
        issued: cur.issued,
        generation: cur.generation,
    };
    cert.resolver.replace(expired);
    assert_eq!(m.get(a).unwrap_err().reason(), mesh_hbone::RefusalReason::CertExpired);
}
