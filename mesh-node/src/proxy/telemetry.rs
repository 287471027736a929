//! One connection's telemetry: Istio's TCP metrics and the access-log line, from labels
//! decided once when the connection is opened (so its open and close count in the same
//! series even when the view changes in between).

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use mesh_common::telemetry::access_log::{AccessLogFormat, rfc3339, write_json};
use mesh_common::telemetry::{Flag, Peer, PeerLabels, Security, ServiceLabels, flags_text};
use mesh_hbone::RefusalReason;
use serde_json::json;

use super::metrics::{Reporter, TcpLabels, TcpMetrics};

#[derive(Clone)]
pub struct Telemetry {
    pub metrics: TcpMetrics,
    pub access_log: AccessLogFormat,
}

/// Who and what one connection is.
pub struct Conn {
    pub reporter: Reporter,
    pub security: Security,
    pub source: Peer,
    pub destination: Peer,
    pub service: ServiceLabels,
    /// The client's address.
    pub downstream: SocketAddr,
    /// The address the client asked for (the captured original destination, or the
    /// CONNECT authority).
    pub requested: SocketAddr,
    /// What this proxy connected to (an HBONE peer's 15008, or the destination itself).
    pub upstream: SocketAddr,
}

/// A connection counted as opened; [`Open::close`] counts its end and logs it.
pub struct Open {
    telemetry: Telemetry,
    labels: TcpLabels,
    addrs: Addrs,
}

struct Addrs {
    downstream: SocketAddr,
    requested: SocketAddr,
    upstream: SocketAddr,
    start: SystemTime,
    started: Instant,
}

/// What the line says besides the labels.
struct Outcome<'a> {
    flags: &'a [Flag],
    /// From the client's point of view, like Istio's metrics.
    client_sent: u64,
    client_received: u64,
}

impl Telemetry {
    pub fn open(&self, c: Conn) -> Open {
        let (labels, addrs) = split(c);
        self.metrics.opened(&labels);
        Open {
            telemetry: self.clone(),
            labels,
            addrs,
        }
    }

    /// A connection that never reached its upstream: logged with its flag, not counted
    /// as opened (the refusal counter has it by reason).
    pub fn failed(&self, c: Conn, reason: RefusalReason) {
        let (labels, addrs) = split(c);
        let outcome = Outcome {
            flags: &[flag_of(reason)],
            client_sent: 0,
            client_received: 0,
        };
        self.log(&labels, &addrs, &outcome);
    }

    fn log(&self, labels: &TcpLabels, addrs: &Addrs, o: &Outcome<'_>) {
        match self.access_log {
            AccessLogFormat::Off => {}
            AccessLogFormat::Json => write_json(&json_line(labels, addrs, o)),
            AccessLogFormat::Text => text_line(labels, addrs, o),
        }
    }
}

impl Open {
    /// `client_sent` / `client_received` as the connection's client counted them.
    pub fn close(self, client_sent: u64, client_received: u64) {
        self.telemetry
            .metrics
            .closed(&self.labels, client_sent, client_received);
        let outcome = Outcome {
            flags: &[],
            client_sent,
            client_received,
        };
        self.telemetry.log(&self.labels, &self.addrs, &outcome);
    }
}

fn split(c: Conn) -> (TcpLabels, Addrs) {
    let labels = TcpLabels::new(
        c.reporter,
        c.security,
        PeerLabels::new(c.source, c.destination, c.service),
    );
    let addrs = Addrs {
        downstream: c.downstream,
        requested: c.requested,
        upstream: c.upstream,
        start: SystemTime::now(),
        started: Instant::now(),
    };
    (labels, addrs)
}

/// Envoy's flag for why a connection failed.
pub fn flag_of(reason: RefusalReason) -> Flag {
    use RefusalReason::*;
    match reason {
        Authorization | StrictMtls => Flag::Rbac,
        ServicePortUnknown | UnknownDestination | NotLocalWorkload | MeshPort => Flag::NoRoute,
        NoHealthyUpstream | WaypointUnknown | WaypointUnavailable => Flag::NoHealthy,
        _ => Flag::ConnectFailure,
    }
}

fn reporter(r: Reporter) -> &'static str {
    match r {
        Reporter::source => "source",
        Reporter::destination => "destination",
    }
}

/// Envoy's usual L4 fields by their JSON names, plus both peers as Istio labels them.
/// `bytes_received` is what the client sent, `bytes_sent` what it received (Envoy's
/// downstream view).
fn json_line(l: &TcpLabels, a: &Addrs, o: &Outcome<'_>) -> serde_json::Value {
    let p = &l.peers;
    json!({
        "start_time": rfc3339(a.start),
        "duration": a.started.elapsed().as_millis() as u64,
        "bytes_received": o.client_sent,
        "bytes_sent": o.client_received,
        "downstream_remote_address": a.downstream.to_string(),
        "downstream_local_address": a.requested.to_string(),
        "upstream_host": a.upstream.to_string(),
        "response_flags": flags_text(o.flags),
        "connection_security_policy": l.connection_security_policy.as_str(),
        "reporter": reporter(l.reporter),
        "source_workload": p.source_workload,
        "source_namespace": p.source_workload_namespace,
        "source_principal": p.source_principal,
        "destination_workload": p.destination_workload,
        "destination_namespace": p.destination_workload_namespace,
        "destination_principal": p.destination_principal,
        "destination_service": p.destination_service,
    })
}

fn text_line(l: &TcpLabels, a: &Addrs, o: &Outcome<'_>) {
    let p = &l.peers;
    tracing::info!(
        target: "mesh_node::access",
        reporter = %reporter(l.reporter),
        src = %a.downstream,
        dst = %a.requested,
        upstream = %a.upstream,
        src_workload = %p.source_workload,
        src_namespace = %p.source_workload_namespace,
        src_principal = %p.source_principal,
        dst_workload = %p.destination_workload,
        dst_namespace = %p.destination_workload_namespace,
        dst_principal = %p.destination_principal,
        dst_service = %p.destination_service,
        security = %l.connection_security_policy.as_str(),
        flags = %flags_text(o.flags),
        bytes_received = o.client_sent,
        bytes_sent = o.client_received,
        duration_ms = a.started.elapsed().as_secs_f64() * 1000.0,
        "connection"
    );
}

#[cfg(test)]
mod tests;
