//! What sits behind a pod's HBONE server: the pod's own application, reached from the
//! pod's IP inside its netns. Only the pod's own addresses may be targeted.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;

use super::metrics::{Reporter, Security, TcpLabels, TcpMetrics};
use crate::capture::handler::{BoxFuture, CapturedPod};
use crate::config::StateRx;
use crate::hbone::relay::Copied;
use crate::hbone::server::{Inbound, InboundRequest, Refused, Upstream};

pub struct PodInbound {
    pod: Arc<CapturedPod>,
    state: StateRx,
    metrics: TcpMetrics,
}

impl PodInbound {
    pub fn new(pod: Arc<CapturedPod>, state: StateRx, metrics: TcpMetrics) -> Self {
        Self { pod, state, metrics }
    }

    fn labels(&self, req: &InboundRequest) -> TcpLabels {
        let state = self.state.borrow();
        let source = req
            .forwarded_for
            .as_deref()
            .and_then(|f| f.parse().ok())
            .and_then(|ip| state.workload(ip))
            .filter(|w| w.identity() == req.conn.peer_id.to_string());
        TcpLabels::new(Reporter::destination, Security::mutual_tls)
            .source(source.map(|w| &**w), Some(req.conn.peer_id.to_string()))
            .destination(Some(&self.pod.workload), None)
    }
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
            return Err(Refused::new(StatusCode::BAD_REQUEST, "not_local_workload", detail));
        }
        if matches!(req.target.port(), 15001 | 15006 | 15008) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "mesh_port",
                format!("{} is a mesh port", req.target),
            ));
        }
        Ok(())
    }

    fn connect(&self, req: &InboundRequest) -> BoxFuture<'static, io::Result<Upstream>> {
        let netns = self.pod.netns.clone();
        let (ip, target) = (self.pod.workload.ip, req.target);
        Box::pin(async move {
            let sock = netns.tcp_socket().await?;
            sock.bind(SocketAddr::from((ip, 0)))?;
            sock.set_nodelay(true)?;
            sock.connect(target).await.map(Upstream::Tcp)
        })
    }

    fn refused(&self, reason: &'static str) {
        self.metrics.refused("inbound", reason);
    }

    fn opened(&self, req: &InboundRequest) {
        self.metrics.opened(&self.labels(req));
    }

    fn closed(&self, req: &InboundRequest, copied: Copied) {
        // Istio counts bytes from the client's side: what the client sent arrived here.
        self.metrics.closed(&self.labels(req), copied.received, copied.sent);
    }
}
