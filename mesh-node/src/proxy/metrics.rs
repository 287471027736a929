//! Istio's TCP metrics (same names and labels, so dashboards carry over) and refusal
//! counters by reason.

use std::fmt::Write as _;

use mesh_hbone::RefusalReason;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::state::Workload;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Istio spells them
pub enum Reporter {
    source,
    destination,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Security {
    mutual_tls,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
    pub request_protocol: String,
    pub connection_security_policy: Security,
}

impl TcpLabels {
    pub fn new(reporter: Reporter, security: Security) -> Self {
        Self {
            reporter,
            source_workload: unknown(),
            source_workload_namespace: unknown(),
            source_principal: unknown(),
            destination_workload: unknown(),
            destination_workload_namespace: unknown(),
            destination_principal: unknown(),
            destination_service: unknown(),
            request_protocol: "tcp".into(),
            connection_security_policy: security,
        }
    }

    pub fn source(mut self, w: Option<&Workload>, principal: Option<String>) -> Self {
        if let Some(w) = w {
            self.source_workload = w.name.clone();
            self.source_workload_namespace = w.namespace.clone();
            self.source_principal = w.identity();
        }
        if let Some(p) = principal {
            self.source_principal = p;
        }
        self
    }

    pub fn destination(mut self, w: Option<&Workload>, service: Option<String>) -> Self {
        if let Some(w) = w {
            self.destination_workload = w.name.clone();
            self.destination_workload_namespace = w.namespace.clone();
            self.destination_principal = w.identity();
        }
        if let Some(s) = service {
            self.destination_service = s;
        }
        self
    }
}

fn unknown() -> String {
    "unknown".into()
}

/// Where a refusal happened.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values
pub enum Direction {
    /// Our HBONE client (a captured outbound connection).
    outbound,
    /// The HBONE server on 15008.
    inbound,
    /// Plaintext arriving on 15006.
    plaintext,
}

/// [`RefusalReason`] as a label value (its stable snake_case name).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ReasonLabel(pub RefusalReason);

impl EncodeLabelValue for ReasonLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

/// Why a captured outbound connection left as plain TCP instead of HBONE.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PassthroughReason {
    /// The destination is a pod the view knows, outside the mesh (not enrolled).
    not_in_mesh,
    /// Outside `--cluster-cidrs`: not a pod or Service of this cluster.
    outside_cluster,
    /// Inside `--cluster-cidrs`, still unknown after `--unknown-destination-wait-ms`.
    unknown_in_cluster,
    /// Not in the view and no `--cluster-cidrs` to tell whether it is a cluster address.
    unknown_no_cluster_cidrs,
}

impl PassthroughReason {
    /// The destination is (or may be) a pod of the cluster: worth a log line.
    pub fn in_cluster(self) -> bool {
        !matches!(self, Self::outside_cluster)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassthroughLabels {
    pub reason: PassthroughReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub direction: Direction,
    pub reason: ReasonLabel,
}

#[derive(Clone, Default)]
pub struct TcpMetrics {
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    passthrough: Family<PassthroughLabels, Counter>,
}

impl TcpMetrics {
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            self.opened.clone(),
        );
        reg.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            self.closed.clone(),
        );
        reg.register(
            "istio_tcp_sent_bytes",
            "Bytes sent by the client side of TCP connections",
            self.sent.clone(),
        );
        reg.register(
            "istio_tcp_received_bytes",
            "Bytes received by the client side of TCP connections",
            self.received.clone(),
        );
        reg.register(
            "mesh_connections_refused",
            "Connections or HBONE streams refused, by reason",
            self.refused.clone(),
        );
        reg.register(
            "mesh_outbound_passthrough",
            "Captured outbound connections sent as plain TCP instead of HBONE, by reason",
            self.passthrough.clone(),
        );
    }

    pub fn passthrough(&self, reason: PassthroughReason) {
        self.passthrough.get_or_create(&PassthroughLabels { reason }).inc();
    }

    pub fn opened(&self, l: &TcpLabels) {
        self.opened.get_or_create(l).inc();
    }

    /// `sent` / `received` from the point of view of the connection's client, like Istio.
    pub fn closed(&self, l: &TcpLabels, sent: u64, received: u64) {
        self.closed.get_or_create(l).inc();
        self.sent.get_or_create(l).inc_by(sent);
        self.received.get_or_create(l).inc_by(received);
    }

    pub fn refused(&self, direction: Direction, reason: RefusalReason) {
        self.refused
            .get_or_create(&RefusalLabels {
                direction,
                reason: ReasonLabel(reason),
            })
            .inc();
    }
}
