//! Istio's TCP metrics (same names and labels as Istio's, so Kiali's and Grafana's
//! queries carry over) and refusal counters by reason.

use mesh_hbone::RefusalReason;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use mesh_common::telemetry::PeerLabels;
pub use mesh_common::telemetry::Security;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values as Istio spells them
pub enum Reporter {
    source,
    destination,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    tcp,
}

/// Istio's TCP label set: the reporter, both peers and the Service (the waypoint's
/// shared [`PeerLabels`]), the protocol, flags and whether mutual TLS carried it.
/// `response_flags` is `-`: connections that fail are not counted as opened (they are
/// in `mesh_connections_refused_total` and the access log, with their flag).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: Reporter,
    pub request_protocol: Protocol,
    pub response_flags: &'static str,
    pub connection_security_policy: Security,
    /// Last: the derive can flatten only the last field.
    #[prometheus(flatten)]
    pub peers: PeerLabels,
}

impl TcpLabels {
    pub fn new(reporter: Reporter, security: Security, peers: PeerLabels) -> Self {
        Self {
            reporter,
            peers,
            request_protocol: Protocol::tcp,
            response_flags: "-",
            connection_security_policy: security,
        }
    }
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
    pub reason: RefusalReason,
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
        self.refused.get_or_create(&RefusalLabels { direction, reason }).inc();
    }
}
