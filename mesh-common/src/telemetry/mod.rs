//! What the node daemon's L4 metrics and the waypoint's L7 metrics label alike: both
//! ends of a connection or request as Istio's stats filter labels them ([`Peer`]), the
//! destination Service ([`ServiceLabels`]), the flattened label set they share
//! ([`PeerLabels`]), and the access-log output both write ([`access_log`]).
//!
//! Cardinality: every value comes from the cluster view (workload, namespace, labels,
//! service account, Service name) or is `unknown`; no address, port or request data is
//! a label, so the series are bounded by the peer pairs and Services that actually talk.

pub mod access_log;
mod flags;
pub mod json;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

pub use flags::{Flag, flags_parts, flags_text};

use crate::view::{ServiceEntry, Workload};

pub const UNKNOWN: &str = "unknown";

/// `connection_security_policy`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Istio spells them
pub enum Security {
    mutual_tls,
    none,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::mutual_tls => "mutual_tls",
            Security::none => "none",
        }
    }
}

/// One side of a connection or request as Istio labels it.
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

    /// A peer proven only by its SPIFFE id (no pod of the view at its address carries
    /// that identity): its namespace and principal, the rest `unknown`.
    pub fn of_principal(spiffe_id: &str) -> Self {
        let namespace = spiffe_id
            .split("/ns/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .filter(|ns| !ns.is_empty())
            .unwrap_or(UNKNOWN);
        Self {
            namespace: namespace.to_owned(),
            principal: spiffe_id.to_owned(),
            ..Self::unknown()
        }
    }

    /// Istio's label rules: canonical service from `service.istio.io/canonical-name`,
    /// `app.kubernetes.io/name`, `app`, else the workload; revision from
    /// `service.istio.io/canonical-revision`, `app.kubernetes.io/version`, `version`,
    /// else `latest`. The principal is the pod's SPIFFE id.
    pub fn of_workload(w: &Workload) -> Self {
        let label = |keys: &[&str]| keys.iter().find_map(|k| w.labels.get(*k)).cloned();
        let workload = workload_name(&w.name, &w.labels);
        Self {
            principal: w.identity(),
            namespace: w.namespace.clone(),
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

/// The owning workload's name, from what the pod itself carries (the view keeps no
/// owner references): a Deployment's pod `reviews-v1-7d4b9c-x2x9q` (label
/// `pod-template-hash: 7d4b9c`) is workload `reviews-v1`; a Job's pod is its `job-name`
/// label; other pods are their own.
pub fn workload_name(pod: &str, labels: &std::collections::BTreeMap<String, String>) -> String {
    owner(pod, labels).1
}

/// The owning workload's kind (`deployment`, `job`, `pod`) and name.
fn owner(pod: &str, labels: &std::collections::BTreeMap<String, String>) -> (&'static str, String) {
    if let Some(hash) = labels.get("pod-template-hash")
        && let Some(at) = pod.rfind(&format!("-{hash}-"))
        && at > 0
    {
        return ("deployment", pod[..at].to_owned());
    }
    if let Some(job) = labels.get("job-name").filter(|j| !j.is_empty()) {
        return ("job", job.clone());
    }
    ("pod", pod.to_owned())
}

/// The W3C `baggage` ztunnel sends on CONNECT for a source workload: cluster,
/// namespace, owning workload by kind, canonical service and revision.
pub fn baggage(w: &Workload, cluster: &str) -> String {
    let (kind, name) = owner(&w.name, &w.labels);
    let p = Peer::of_workload(w);
    format!(
        "k8s.cluster.name={cluster},k8s.namespace.name={},k8s.{kind}.name={name},service.name={},service.version={}",
        w.namespace, p.canonical_service, p.canonical_revision
    )
}

/// `destination_service`, `_name`, `_namespace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLabels {
    /// `reviews.bookinfo.svc.cluster.local`.
    pub host: String,
    pub name: String,
    pub namespace: String,
}

impl ServiceLabels {
    pub fn unknown() -> Self {
        Self {
            host: UNKNOWN.into(),
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
        }
    }

    pub fn of(svc: &ServiceEntry) -> Self {
        Self {
            host: svc.hostname(),
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
        }
    }
}

/// The labels both ends and the Service contribute to every Istio metric, flattened
/// into the reporter's own label set (`#[prometheus(flatten)]`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
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
}

impl PeerLabels {
    /// Moves the peers' strings into the label set (no copy).
    pub fn new(s: Peer, d: Peer, svc: ServiceLabels) -> Self {
        Self {
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
            destination_service: svc.host,
            destination_service_name: svc.name,
            destination_service_namespace: svc.namespace,
        }
    }
}

#[cfg(test)]
mod tests;
