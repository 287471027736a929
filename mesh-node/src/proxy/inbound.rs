//! What sits behind a pod's HBONE server: the pod's own application, reached from the
//! pod's IP inside its netns. Only the pod's own addresses may be targeted.

use std::io;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;

use http::StatusCode;

use mesh_hbone::RefusalReason;

use super::metrics::{Direction, Reporter, Security};
use super::peers;
use super::telemetry::{Conn, Telemetry};
use crate::capture::handler::{BoxFuture, CapturedPod, connect_to_app};
use crate::config::StateRx;
use crate::hbone::server::{Closed, Inbound, InboundRequest, Refused, Upstream};
use crate::policy::authz::{self, Connection};
use crate::state::{MeshState, Workload};

pub struct PodInbound {
    pod: Arc<CapturedPod>,
    state: StateRx,
    telemetry: Telemetry,
}

impl PodInbound {
    pub fn new(pod: Arc<CapturedPod>, state: StateRx, telemetry: Telemetry) -> Self {
        Self { pod, state, telemetry }
    }

    /// The stream as the destination reports it: the source the TLS peer proved (or the
    /// client a waypoint names), this pod, the Service selecting it on the target port.
    fn conn(&self, req: &InboundRequest) -> Conn {
        let state = self.state.borrow();
        let peer_id = req.conn.peer_id.to_string();
        let source = peers::hbone_source(&state, req.conn.peer_addr, &peer_id, req.forwarded_for.as_deref());
        let (destination, service) = peers::local_destination(&state, &self.pod.workload, req.target.port());
        Conn {
            reporter: Reporter::destination,
            security: Security::mutual_tls,
            source,
            destination,
            service,
            downstream: req.conn.peer_addr,
            requested: req.target,
            upstream: req.target,
        }
    }

    /// AuthorizationPolicy for this stream: the peer's principal, its address (the
    /// `forwarded: for=` client only when that workload's identity is the peer's).
    fn authorize_policy(&self, req: &InboundRequest, target: SocketAddrV4) -> Result<(), Refused> {
        let state = self.state.borrow();
        let source_ip = forwarded_source(&state, req).map_or(req.conn.peer_addr.ip(), |w| IpAddr::V4(w.ip));
        let principal = req.conn.peer_id.principal();
        let conn = Connection {
            principal: Some(&principal),
            source_ip,
            destination: target,
        };
        // Labels can change after enrollment: the current snapshot's view of the pod decides.
        let workload: &Workload = state.workload(self.pod.workload.ip).unwrap_or(&self.pod.workload);
        let eval = authz::evaluate(&state, workload, conn);
        if authz::allowed(&eval, workload, conn) {
            return Ok(());
        }
        let detail = match &eval.decision {
            mesh_common::authz::Decision::Deny(d) => d.to_string(),
            mesh_common::authz::Decision::Allow => String::new(),
        };
        Err(Refused::new(
            StatusCode::FORBIDDEN,
            RefusalReason::Authorization,
            detail,
        ))
    }
}

/// The workload named by `forwarded: for=`, when its identity is the TLS peer's.
fn forwarded_source<'a>(state: &'a MeshState, req: &InboundRequest) -> Option<&'a std::sync::Arc<Workload>> {
    req.forwarded_for
        .as_deref()
        .and_then(|f| f.parse().ok())
        .and_then(|ip| state.workload(ip))
        .filter(|w| w.identity() == req.conn.peer_id.to_string())
}

impl Inbound for PodInbound {
    fn authorize(&self, req: &InboundRequest) -> Result<(), Refused> {
        if req.target.ip() != IpAddr::V4(self.pod.workload.ip) {
            let detail = format!(
                "{} is not pod {} ({})",
                req.target,
                self.pod.workload.key(),
                self.pod.workload.ip
            );
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                RefusalReason::NotLocalWorkload,
                detail,
            ));
        }
        if mesh_common::abi::is_mesh_port(req.target.port()) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                RefusalReason::MeshPort,
                format!("{} is a mesh port", req.target),
            ));
        }
        let target = SocketAddrV4::new(self.pod.workload.ip, req.target.port());
        self.authorize_policy(req, target)
    }

    /// From the client's address: the `forwarded: for=` workload when its identity is
    /// the peer's, else the HBONE peer (a waypoint's own address: the client is then in
    /// the request's `x-forwarded-for`).
    fn connect(&self, req: &InboundRequest) -> BoxFuture<'static, io::Result<Upstream>> {
        let pod = self.pod.clone();
        let client = forwarded_source(&self.state.borrow(), req).map_or(req.conn.peer_addr.ip(), |w| IpAddr::V4(w.ip));
        let app = SocketAddrV4::new(self.pod.workload.ip, req.target.port());
        Box::pin(async move {
            Ok(match connect_to_app(&pod, client, app).await? {
                (stream, Some(registered)) => Upstream::Held(stream, Box::new(registered)),
                (stream, None) => Upstream::Tcp(stream),
            })
        })
    }

    fn refused(&self, reason: RefusalReason, req: Option<&InboundRequest>) {
        self.telemetry.metrics.refused(Direction::inbound, reason);
        if let Some(req) = req {
            self.telemetry.failed(self.conn(req), reason);
        }
    }

    fn opened(&self, req: &InboundRequest) -> Closed {
        let open = self.telemetry.open(self.conn(req));
        // Istio counts bytes from the client's side: what the client sent arrived here.
        Box::new(move |copied| open.close(copied.received, copied.sent))
    }
}
