//! Certificate metrics of a CA client, the same on every process that obtains
//! certificates (the node daemon for its pods, a waypoint or gateway for itself):
//! `mesh_ca_requests_total{result}` and `mesh_certificate_expiry_seconds{workload,identity}`.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{CaClientError, CaResult};
use crate::SpiffeId;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: CaResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    workload: String,
    identity: String,
}

/// Cheap to clone: clones share their series.
#[derive(Clone, Default)]
pub struct CertMetrics {
    requests: Family<ResultLabels, Counter>,
    expiry: Family<CertLabels, Gauge<f64, AtomicU64>>,
}

impl CertMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "mesh_ca_requests",
            "Certificate requests to the mesh CA, by result (issued, denied, unreachable, invalid)",
            self.requests.clone(),
        );
        reg.register(
            "mesh_certificate_expiry_seconds",
            "Seconds until each workload certificate expires (negative: expired)",
            self.expiry.clone(),
        );
    }

    /// Counts one CA request by its outcome.
    pub fn request<T>(&self, outcome: &Result<T, CaClientError>) {
        let result = outcome
            .as_ref()
            .map_or_else(CaClientError::result, |_| CaResult::issued);
        self.requests.get_or_create(&ResultLabels { result }).inc();
    }

    /// Sets the seconds until `not_after` for `workload`'s certificate, and returns them
    /// (negative once expired).
    pub fn expiry(&self, workload: &str, identity: &SpiffeId, not_after: SystemTime) -> f64 {
        let left = seconds_left(not_after, SystemTime::now());
        let labels = CertLabels {
            workload: workload.to_owned(),
            identity: identity.to_string(),
        };
        self.expiry.get_or_create(&labels).set(left);
        left
    }

    /// Drops the gauge of a workload that is gone.
    pub fn forget(&self, workload: &str, identity: &SpiffeId) {
        self.expiry.remove(&CertLabels {
            workload: workload.to_owned(),
            identity: identity.to_string(),
        });
    }
}

fn seconds_left(not_after: SystemTime, now: SystemTime) -> f64 {
    match not_after.duration_since(now) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn requests_by_result_and_expiry_in_seconds() {
        let m = CertMetrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.request::<()>(&Ok(()));
        m.request::<()>(&Err(CaClientError::Unreachable {
            address: "https://ca:15012".into(),
            detail: "refused".into(),
        }));
        let id = SpiffeId::new("cluster.local", "shop", "web");
        let left = m.expiry("shop/web", &id, SystemTime::now() + Duration::from_secs(100));
        assert!((90.0..=100.0).contains(&left), "{left}");
        assert!(m.expiry("shop/old", &id, SystemTime::now() - Duration::from_secs(5)) < 0.0);
        m.forget("shop/old", &id);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(text.contains("mesh_ca_requests_total{result=\"issued\"} 1"), "{text}");
        assert!(
            text.contains("mesh_ca_requests_total{result=\"unreachable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mesh_certificate_expiry_seconds{workload=\"shop/web\",identity=\"spiffe://cluster.local/ns/shop/sa/web\"}"),
            "{text}"
        );
        assert!(!text.contains("shop/old"), "{text}");
    }
}
