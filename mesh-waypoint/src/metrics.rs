//! Istio's standard request metrics (`istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`)
//! with the label set of Istio's stats filter, so Kiali's and Istio's Grafana queries
//! work unchanged. Served on the admin listener and on `--stats-addr` (15020) at
//! `/stats/prometheus` and `/metrics`.
//!
//! Cardinality: one series per (source workload, destination workload, service, code,
//! flags, protocol, security) combination actually seen; workloads and services come
//! from the configuration (unknown peers collapse into `unknown`), response codes are
//! HTTP's, flags Envoy's short set. The duration is measured to the response headers.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use mesh_common::telemetry::{Peer, PeerLabels, Security, ServiceLabels};

/// Who reports: Istio says `waypoint` for a waypoint and `source` for a gateway.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Istio spells them
pub enum Reporter {
    waypoint,
    source,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    http,
    grpc,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: Reporter,
    pub request_protocol: Protocol,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: Security,
    /// Last: the derive can flatten only the last field.
    #[prometheus(flatten)]
    pub peers: PeerLabels,
}

/// What one finished request contributes.
pub struct Observation {
    pub source: Peer,
    pub destination: Peer,
    /// `reviews.bookinfo.svc.cluster.local`, its name and namespace (`unknown` when
    /// the host is no Service of the configuration).
    pub service: ServiceLabels,
    pub protocol: Protocol,
    pub code: u16,
    pub grpc_status: Option<String>,
    /// Envoy's response flags, `-` when none.
    pub flags: String,
    pub security: Security,
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// One label set's four metrics (handles onto the families' own: observing through
/// them is observing the family's series, without hashing the ~20 labels again).
#[derive(Clone, Debug)]
pub struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// What one request adds to its series besides the count.
pub struct Sizes {
    pub duration_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl Series {
    pub fn observe(&self, s: &Sizes) {
        self.requests.inc();
        self.duration.observe(s.duration_ms);
        self.request_bytes.observe(s.request_bytes as f64);
        self.response_bytes.observe(s.response_bytes as f64);
    }
}

pub struct RequestMetrics {
    reporter: Reporter,
    /// `--request-metrics false`: nothing is observed (the families stay empty).
    recording: bool,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    request_bytes: Family<RequestLabels, Histogram>,
    response_bytes: Family<RequestLabels, Histogram>,
    /// HBONE connections and streams the waypoint refused (counted even without
    /// `--request-metrics`: they are not requests).
    refused: Family<RefusalLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: mesh_hbone::RefusalReason,
}

/// Envoy's default millisecond buckets (what Istio's dashboards' quantiles assume).
const DURATION_BUCKETS_MS: [f64; 20] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0, 7200000.0,
];

fn size_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 10.0, 8))
}

impl RequestMetrics {
    pub fn new(reporter: Reporter) -> Self {
        Self::with_certificates(reporter, None)
    }

    /// Also exposes `certs` (this proxy's CA requests and certificate expiry, the node
    /// daemon's metrics) beside the request metrics.
    pub fn with_certificates(reporter: Reporter, certs: Option<&mesh_hbone::ca::CertMetrics>) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(DURATION_BUCKETS_MS));
        let request_bytes = Family::<RequestLabels, Histogram>::new_with_constructor(size_buckets as fn() -> Histogram);
        let response_bytes =
            Family::<RequestLabels, Histogram>::new_with_constructor(size_buckets as fn() -> Histogram);
        let mut registry = Registry::default();
        registry.register("istio_requests", "Requests handled", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Time to the response headers",
            duration.clone(),
        );
        registry.register("istio_request_bytes", "Request body sizes", request_bytes.clone());
        registry.register("istio_response_bytes", "Response body sizes", response_bytes.clone());
        if let Some(certs) = certs {
            certs.register(&mut registry);
        }
        mesh_common::telemetry::access_log::register_dropped(&mut registry);
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "mesh_connections_refused",
            "HBONE connections or streams refused, by reason",
            refused.clone(),
        );
        Self {
            reporter,
            recording: true,
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            refused,
        }
    }

    pub fn refused(&self, reason: mesh_hbone::RefusalReason) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Observes requests only when `on` (`--request-metrics`).
    pub fn recording(mut self, on: bool) -> Self {
        self.recording = on;
        self
    }

    /// Whether requests are observed: when not, the caller skips building observations.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    pub fn record(&self, o: Observation) {
        if !self.recording {
            return;
        }
        let sizes = Sizes {
            duration_ms: o.duration_ms,
            request_bytes: o.request_bytes,
            response_bytes: o.response_bytes,
        };
        self.series(o).observe(&sizes);
    }

    /// The series `o`'s labels name, created when new; the proxy keeps it for the next
    /// request with the same labels (see `proxy::telemetry::SeriesCache`).
    pub fn series(&self, o: Observation) -> Series {
        let labels = self.labels(o);
        Series {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            request_bytes: self.request_bytes.get_or_create(&labels).clone(),
            response_bytes: self.response_bytes.get_or_create(&labels).clone(),
        }
    }

    /// Moves the observation's strings into the label set (no copy per request).
    fn labels(&self, o: Observation) -> RequestLabels {
        RequestLabels {
            reporter: self.reporter,
            peers: PeerLabels::new(o.source, o.destination, o.service),
            request_protocol: o.protocol,
            response_code: o.code.to_string(),
            grpc_response_status: o.grpc_status.unwrap_or_default(),
            response_flags: o.flags,
            connection_security_policy: o.security,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod's labels as [`Peer::of_workload`] derives them (tested in mesh-common).
    fn peer(app: &str, version: &str) -> Peer {
        Peer {
            workload: format!("{app}-{version}"),
            namespace: "bookinfo".into(),
            app: app.into(),
            version: version.into(),
            canonical_service: app.into(),
            canonical_revision: version.into(),
            ..Peer::unknown()
        }
    }

    fn observation() -> Observation {
        Observation {
            source: peer("productpage", "v1"),
            destination: peer("reviews", "v1"),
            service: ServiceLabels {
                host: "reviews.bookinfo.svc.cluster.local".into(),
                name: "reviews".into(),
                namespace: "bookinfo".into(),
            },
            protocol: Protocol::http,
            code: 200,
            grpc_status: None,
            flags: "-".into(),
            security: Security::mutual_tls,
            duration_ms: 3.0,
            request_bytes: 0,
            response_bytes: 1024,
        }
    }

    #[test]
    fn request_metrics_off_records_nothing() {
        let m = RequestMetrics::new(Reporter::waypoint).recording(false);
        assert!(!m.is_recording());
        m.record(observation());
        assert!(!m.encode().contains("istio_requests_total{"), "{}", m.encode());
    }

    #[test]
    fn one_request_is_one_count_with_every_label() {
        let m = RequestMetrics::new(Reporter::waypoint);
        for _ in 0..3 {
            m.record(observation());
        }
        let text = m.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("counter line");
        for label in [
            "reporter=\"waypoint\"",
            "source_workload=\"productpage-v1\"",
            "source_canonical_service=\"productpage\"",
            "destination_version=\"v1\"",
            "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "response_code=\"200\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"mutual_tls\"",
            "request_protocol=\"http\"",
        ] {
            assert!(line.contains(label), "{label} missing in {line}");
        }
        assert!(line.ends_with(" 3"), "{line}");
        assert!(text.contains("istio_request_duration_milliseconds_bucket{"), "{text}");
    }

    #[test]
    fn a_kept_series_counts_in_the_family() {
        let m = RequestMetrics::new(Reporter::waypoint);
        let kept = m.series(observation());
        let sizes = Sizes {
            duration_ms: 1.0,
            request_bytes: 0,
            response_bytes: 10,
        };
        kept.observe(&sizes);
        m.record(observation());
        kept.observe(&sizes);
        let text = m.encode();
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .expect("counter line");
        assert!(line.ends_with(" 3"), "one series for all three: {text}");
    }
}
