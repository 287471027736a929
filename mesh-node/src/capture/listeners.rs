//! Accept loops of a pod's capture listeners, dispatching to the [`ConnectionHandler`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::{TcpListener, TcpStream};

use super::bpf::Lookups;
use super::client_ip::ClientIp;
use super::handler::{CapturedPod, ConnectionHandler};
use crate::drain::Drain;
use crate::netns::netns_cookie;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Outbound,
    InboundPlaintext,
    Hbone,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::InboundPlaintext => "inbound_plaintext",
            Self::Hbone => "hbone",
        }
    }
}

pub type ConnCounter = Family<Vec<(String, String)>, Counter>;

/// What every accept loop shares.
pub struct LoopCtx {
    pub handler: Arc<dyn ConnectionHandler>,
    pub lookups: Arc<Lookups>,
    /// `mesh_capture_connections_total{direction, result}`.
    pub connections: ConnCounter,
    /// `mesh_capture_enrolled_pods`.
    pub enrolled: prometheus_client::metrics::gauge::Gauge,
    /// Ends the accept loops on hand-over and counts the connections still open.
    pub drain: Drain,
    /// Set with `--preserve-client-ip` (the default): prepares each enrolled pod's netns.
    pub client_ip: Option<Arc<ClientIp>>,
}

impl LoopCtx {
    fn count(&self, kind: Kind, result: &str) {
        self.connections
            .get_or_create(&vec![
                ("direction".into(), kind.name().into()),
                ("result".into(), result.into()),
            ])
            .inc();
    }
}

/// Accepts until the daemon hands over; then the successor (which holds the same
/// listening socket) accepts alone.
pub async fn accept_loop(l: TcpListener, kind: Kind, pod: Arc<CapturedPod>, ctx: Arc<LoopCtx>) {
    // One wait for the whole loop: not a new watch receiver per accepted connection.
    let draining = ctx.drain.started();
    tokio::pin!(draining);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut draining => return,
            a = l.accept() => a,
        };
        match accepted {
            Ok((s, peer)) => dispatch(s, peer, kind, &pod, &ctx),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the backlog holds clients.
                tracing::warn!(pod = %pod.workload.key(), kind = kind.name(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn dispatch(s: TcpStream, peer: SocketAddr, kind: Kind, pod: &Arc<CapturedPod>, ctx: &LoopCtx) {
    let pod = pod.clone();
    let fut = match kind {
        Kind::Outbound => {
            let Some(orig) = original_destination(&s, peer, ctx) else {
                tracing::warn!(pod = %pod.workload.key(), %peer, "captured connection without an original destination; reset");
                ctx.count(kind, "no_orig_dst");
                reset(s);
                return;
            };
            ctx.handler.outbound(pod, orig, s)
        }
        Kind::InboundPlaintext => {
            let Ok(SocketAddr::V4(orig)) = s.local_addr() else {
                ctx.count(kind, "not_ipv4");
                return;
            };
            ctx.handler.inbound_plaintext(pod, orig, peer, s)
        }
        Kind::Hbone => ctx.handler.hbone(pod, peer, s),
    };
    ctx.count(kind, "accepted");
    let open = ctx.drain.track();
    tokio::spawn(async move {
        fut.await;
        drop(open);
    });
}

/// The client's netns cookie and address identify its connect (sockops re-keyed it).
fn original_destination(s: &TcpStream, peer: SocketAddr, ctx: &LoopCtx) -> Option<SocketAddrV4> {
    let cookie = netns_cookie(s).ok()?;
    let ip = match peer.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped()?,
    };
    let orig = ctx.lookups.orig_dst(cookie, ip, peer.port())?;
    Some(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(orig.ip)), orig.port))
}

fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}
