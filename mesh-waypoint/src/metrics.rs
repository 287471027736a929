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

use std::collections::BTreeMap;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::discovery::PodInfo;

/// Who reports: Istio says `waypoint` for a waypoint and `source` for a gateway.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Istio spells them
pub enum Reporter {
    waypoint,
    source,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Security {
    mutual_tls,
    none,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    http,
    grpc,
}

/// One side of a request as Istio labels it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub workload: String,
    pub namespace: String,
    pub principal: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

const UNKNOWN: &str = "unknown";

impl Peer {
    pub fn unknown() -> Self {
        Self {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            principal: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: UNKNOWN.into(),
        }
    }

    /// Istio's label rules: canonical service from `service.istio.io/canonical-name`,
    /// `app.kubernetes.io/name`, `app`, else the workload; revision from
    /// `service.istio.io/canonical-revision`, `app.kubernetes.io/version`, `version`,
    /// else `latest`.
    pub fn of_pod(pod: &PodInfo) -> Self {
        let label = |keys: &[&str]| keys.iter().find_map(|k| pod.labels.get(*k)).cloned();
        let workload = workload_name(&pod.name, &pod.labels);
        Self {
            principal: format!("spiffe://cluster.local/ns/{}/sa/{}", pod.namespace, pod.service_account),
            namespace: pod.namespace.clone(),
            app: label(&["app"]).unwrap_or_else(|| UNKNOWN.into()),
            version: label(&["version"]).unwrap_or_else(|| UNKNOWN.into()),
            canonical_service: label(&["service.istio.io/canonical-name", "app.kubernetes.io/name", "app"])
                .unwrap_or_else(|| workload.clone()),
            canonical_revision: label(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .unwrap_or_else(|| "latest".into()),
            workload,
        }
    }
}

/// The owning workload's name: a Deployment's pod `reviews-v1-7d4b9c-x2x9q` (label
/// `pod-template-hash: 7d4b9c`) is workload `reviews-v1`; other pods are their own.
pub fn workload_name(pod: &str, labels: &BTreeMap<String, String>) -> String {
    if let Some(hash) = labels.get("pod-template-hash")
        && let Some(at) = pod.rfind(&format!("-{hash}-"))
        && at > 0
    {
        return pod[..at].to_owned();
    }
    pod.to_owned()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub request_protocol: Protocol,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: Security,
}

/// What one finished request contributes.
pub struct Observation {
    pub source: Peer,
    pub destination: Peer,
    /// `reviews.bookinfo.svc.cluster.local`, its name and namespace (`unknown` when
    /// the host is no Service of the configuration).
    pub service: (String, String, String),
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

pub struct RequestMetrics {
    reporter: Reporter,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    request_bytes: Family<RequestLabels, Histogram>,
    response_bytes: Family<RequestLabels, Histogram>,
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
        Self {
            reporter,
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
        }
    }

    pub fn record(&self, o: Observation) {
        let (duration_ms, request_bytes, response_bytes) = (o.duration_ms, o.request_bytes, o.response_bytes);
        let labels = self.labels(o);
        self.requests.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(duration_ms);
        self.request_bytes.get_or_create(&labels).observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(&labels)
            .observe(response_bytes as f64);
    }

    /// Moves the observation's strings into the label set (no copy per request).
    fn labels(&self, o: Observation) -> RequestLabels {
        let (s, d) = (o.source, o.destination);
        let (svc, svc_name, svc_ns) = o.service;
        RequestLabels {
            reporter: self.reporter,
            source_workload: s.workload,
            source_workload_namespace: s.namespace,
            source_principal: s.principal,
            source_app: s.app,
            source_version: s.version,
            source_canonical_service: s.canonical_service,
            source_canonical_revision: s.canonical_revision,
            destination_workload: d.workload,
            destination_workload_namespace: d.namespace,
            destination_principal: d.principal,
            destination_app: d.app,
            destination_version: d.version,
            destination_canonical_service: d.canonical_service,
            destination_canonical_revision: d.canonical_revision,
            destination_service: svc,
            destination_service_name: svc_name,
            destination_service_namespace: svc_ns,
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

    fn pod(name: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            name: name.into(),
            namespace: "bookinfo".into(),
            service_account: "bookinfo-reviews".into(),
            ip: "198.18.1.2".parse().unwrap(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            named_ports: Vec::new(),
            node: "n1".into(),
            ready: true,
            enrolled: true,
            proxy: false,
            trust_domain: "cluster.local".into(),
            netns: None,
            cgroup: None,
            uid: None,
        }
    }

    #[test]
    fn workload_and_canonical_labels_follow_istio() {
        let p = Peer::of_pod(&pod(
            "reviews-v2-7d4b9c-x2x9q",
            &[("app", "reviews"), ("version", "v2"), ("pod-template-hash", "7d4b9c")],
        ));
        assert_eq!(p.workload, "reviews-v2");
        assert_eq!((p.app.as_str(), p.version.as_str()), ("reviews", "v2"));
        assert_eq!(
            (p.canonical_service.as_str(), p.canonical_revision.as_str()),
            ("reviews", "v2")
        );
        assert_eq!(p.principal, "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews");
        let bare = Peer::of_pod(&pod("job-1", &[("service.istio.io/canonical-name", "batch")]));
        assert_eq!(bare.workload, "job-1");
        assert_eq!(bare.canonical_service, "batch");
        assert_eq!(bare.canonical_revision, "latest");
        assert_eq!(bare.app, "unknown");
    }

    #[test]
    fn one_request_is_one_count_with_every_label() {
        let m = RequestMetrics::new(Reporter::waypoint);
        for _ in 0..3 {
            m.record(Observation {
                source: Peer::of_pod(&pod("productpage-v1", &[("app", "productpage"), ("version", "v1")])),
                destination: Peer::of_pod(&pod("reviews-v1", &[("app", "reviews"), ("version", "v1")])),
                service: (
                    "reviews.bookinfo.svc.cluster.local".into(),
                    "reviews".into(),
                    "bookinfo".into(),
                ),
                protocol: Protocol::http,
                code: 200,
                grpc_status: None,
                flags: "-".into(),
                security: Security::mutual_tls,
                duration_ms: 3.0,
                request_bytes: 0,
                response_bytes: 1024,
            });
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
}
