//! `istio.io/ingress-use-waypoint: "true"`: the gateway sends a Service's requests to
//! the Service's waypoint (HBONE, `:authority` = the Service VIP:port) instead of to its
//! pods, so the waypoint's L7 policies (AuthorizationPolicy, RequestAuthentication)
//! see gateway traffic too, as in Istio. The gateway's own routing still decides which
//! Service a request goes to; the waypoint then picks the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::config::Snapshot;
use crate::endpoint::Endpoint;

/// Rewrites the backends of such Services to the single endpoint `VIP:port`
/// (the HBONE connector sends VIPs to the waypoint).
pub fn reroute(snap: &mut Snapshot) {
    let mut rerouted = Vec::new();
    for (key, backend) in &snap.backends {
        let Some(svc) = snap.service(&key.host) else { continue };
        let (true, Some(_), Some(vip)) = (svc.ingress_use_waypoint, &svc.waypoint, svc.cluster_ip) else {
            continue;
        };
        let endpoint = Arc::new(Endpoint::new(SocketAddr::new(vip, key.port)));
        let b = Backend::new(
            key.clone(),
            backend.policy.clone(),
            vec![endpoint],
            backend.pool.clone(),
            None,
        )
        .with_protocol(backend.protocol);
        rerouted.push((key.clone(), Arc::new(b)));
    }
    snap.backends.extend(rerouted);
}
