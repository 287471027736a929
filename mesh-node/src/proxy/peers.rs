//! Who the two ends of a connection are, as Istio's labels say it, from the daemon's
//! view: the owning workload of a pod, the SPIFFE id the TLS peer proved, and the
//! Service the connection was for.

use std::net::{IpAddr, SocketAddr};

use mesh_common::telemetry::{Peer, ServiceLabels};

use crate::state::{MeshState, Workload};

/// The source of an HBONE stream that proved `peer_id`: the pod at the peer's address
/// carrying that identity, or — when that pod is a mesh proxy (a waypoint) and names
/// its client in `forwarded: for=` — that client; a peer whose address is no pod of the
/// view with that identity is labelled from its identity alone.
pub fn hbone_source(state: &MeshState, peer: SocketAddr, peer_id: &str, forwarded_for: Option<&str>) -> Peer {
    let forwarded = forwarded_for
        .and_then(|f| f.trim_matches(|c| c == '[' || c == ']').parse().ok())
        .and_then(|ip| state.workload(ip))
        .map(|w| &**w);
    let at_peer = workload_at(state, peer.ip()).filter(|w| w.identity() == peer_id);
    let client = match (at_peer, forwarded) {
        // The client's own daemon (or the client itself) speaks for it.
        (_, Some(f)) if f.identity() == peer_id => Some(f),
        // A waypoint passes on who called it.
        (Some(p), Some(f)) if p.proxy => Some(f),
        (p, _) => p,
    };
    client.map_or_else(|| Peer::of_principal(peer_id), Peer::of_workload)
}

/// The source of plaintext: the pod at the peer's address when the view knows one; no
/// principal, since nothing proved it.
pub fn plaintext_source(state: &MeshState, peer: SocketAddr) -> Peer {
    let mut p = workload_at(state, peer.ip()).map_or_else(Peer::unknown, Peer::of_workload);
    p.principal = mesh_common::telemetry::UNKNOWN.into();
    p
}

/// A local pod receiving a connection on `port`: its labels (current view, falling back
/// to the enrollment snapshot) and the Service that selects it on that port.
pub fn local_destination(state: &MeshState, pod: &Workload, port: u16) -> (Peer, ServiceLabels) {
    let w = state.workload(pod.ip).map_or(pod, |w| &**w);
    let service = state
        .view
        .service_of(w, port)
        .map_or_else(ServiceLabels::unknown, |s| ServiceLabels::of(s));
    (Peer::of_workload(w), service)
}

/// Any address the view knows as a pod (plaintext passthrough to a pod outside the mesh).
pub fn remote(state: &MeshState, ip: IpAddr) -> Peer {
    workload_at(state, ip).map_or_else(Peer::unknown, Peer::of_workload)
}

fn workload_at(state: &MeshState, ip: IpAddr) -> Option<&Workload> {
    match ip {
        IpAddr::V4(v4) => state.workload(v4).map(|w| &**w),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests;
