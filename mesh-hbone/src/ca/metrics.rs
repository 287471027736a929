//! Certificate metrics of a CA client, the same on every process that obtains
//! certificates (the node daemon for its pods, a waypoint or gateway for itself):
//! `mesh_ca_requests_total{result}` and `mesh_certificate_expiry_seconds{workload,identity}`.
//! The seconds left are computed when Prometheus scrapes, from each certificate's
//! expiry: nothing has to wake up to keep the gauge current.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::{CaClientError, CaResult};
use crate::SpiffeId;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: CaResult,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CertLabels {
    workload: String,
    identity: String,
}

/// Cheap to clone: clones share their series.
#[derive(Clone, Default)]
pub struct CertMetrics {
    requests: Family<ResultLabels, Counter>,
    expiry: Expiries,
}

/// Each certificate's expiry, encoded as seconds left at scrape time.
#[derive(Clone, Debug, Default)]
struct Expiries(Arc<Mutex<BTreeMap<CertLabels, SystemTime>>>);

impl Expiries {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CertLabels, SystemTime>> {
        // Single inserts and removes: a panic elsewhere cannot leave the map half-updated.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

const EXPIRY_HELP: &str = "Seconds until each workload certificate expires (negative: expired)";

impl Collector for Expiries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = SystemTime::now();
        let entries = self.lock().clone();
        let mut gauge =
            encoder.encode_descriptor("mesh_certificate_expiry_seconds", EXPIRY_HELP, None, MetricType::Gauge)?;
        for (labels, not_after) in &entries {
            gauge
                .encode_family(labels)?
                .encode_gauge(&seconds_left(*not_after, now))?;
        }
        Ok(())
    }
}

impl CertMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "mesh_ca_requests",
            "Certificate requests to the mesh CA, by result (issued, denied, unreachable, invalid)",
            self.requests.clone(),
        );
        reg.register_collector(Box::new(self.expiry.clone()));
    }

    /// Counts one CA request by its outcome.
    pub fn request<T>(&self, outcome: &Result<T, CaClientError>) {
        let result = outcome
            .as_ref()
            .map_or_else(CaClientError::result, |_| CaResult::issued);
        self.requests.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records `not_after` as `workload`'s certificate expiry, and returns the seconds
    /// until then (negative once expired).
    pub fn expiry(&self, workload: &str, identity: &SpiffeId, not_after: SystemTime) -> f64 {
        let labels = CertLabels {
            workload: workload.to_owned(),
            identity: identity.to_string(),
        };
        self.expiry.lock().insert(labels, not_after);
        seconds_left(not_after, SystemTime::now())
    }

    /// Drops the gauge of a workload that is gone.
    pub fn forget(&self, workload: &str, identity: &SpiffeId) {
        self.expiry.lock().remove(&CertLabels {
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
        // Computed at scrape: the seconds left, not a value stored earlier.
        let line = text
            .lines()
            .find(|l| l.starts_with("mesh_certificate_expiry_seconds{workload=\"shop/web\""))
            .unwrap();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((90.0..=100.0).contains(&value), "{line}");
    }
}
