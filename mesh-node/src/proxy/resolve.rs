//! Where a captured outbound connection goes: a pod IP straight to that pod, a Service
//! VIP to one ready endpoint (round-robin) or to the Service's waypoint, a pod outside
//! the mesh out unchanged (passthrough). An address the view does not know is left to
//! the caller, which may wait for the view ([`super::MeshHandler`]).

use mesh_hbone::RefusalReason;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use mesh_common::abi::PORT_HBONE as HBONE_PORT;

use super::metrics::PassthroughReason;
use crate::identity::SpiffeId;
use crate::state::{MeshState, ServiceEntry, Workload};

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Through HBONE to `hbone` (a pod's or waypoint's IP:15008).
    Tunnel {
        hbone: SocketAddrV4,
        identity: SpiffeId,
        authority: SocketAddrV4,
        workload: Arc<Workload>,
        /// The Service whose VIP was asked for (its endpoint's or waypoint's).
        service: Option<Arc<ServiceEntry>>,
    },
    /// Plain TCP from the source pod, for the reason given (counted and logged), with
    /// the Service when a VIP led there.
    Passthrough(SocketAddrV4, PassthroughReason, Option<Arc<ServiceEntry>>),
    /// Nothing can serve it: the client gets a reset.
    Refuse(RefusalReason),
}

#[derive(Default)]
pub struct Resolver {
    /// Round-robin position per Service VIP (headless Services share one position):
    /// a `Copy` key, so picking allocates nothing per connection.
    next: Mutex<HashMap<Option<Ipv4Addr>, usize>>,
}

impl Resolver {
    /// `None`: `dst` is neither a pod nor a Service VIP of this view.
    pub fn resolve(&self, state: &MeshState, dst: SocketAddrV4) -> Option<Route> {
        if let Some(w) = state.workload(*dst.ip()) {
            return Some(to_workload(w, dst, None));
        }
        let svc = state.service(*dst.ip())?;
        Some(self.to_service(state, svc, dst))
    }

    fn to_service(&self, state: &MeshState, svc: &Arc<ServiceEntry>, dst: SocketAddrV4) -> Route {
        let Some(target) = svc.target_port(dst.port()) else {
            return Route::Refuse(RefusalReason::ServicePortUnknown);
        };
        if let Some(wp) = &svc.waypoint {
            return self.to_waypoint(state, svc, wp, dst);
        }
        // A named targetPort may differ per pod; a pod without that name is no endpoint.
        let serving = state.view.ready_endpoints(svc).filter(|w| w.port(&target).is_some());
        match self.pick(svc, serving) {
            Some(ep) => {
                let port = ep.port(&target).unwrap_or(dst.port());
                to_workload(&ep, SocketAddrV4::new(ep.ip, port), Some(svc.clone()))
            }
            None => Route::Refuse(RefusalReason::NoHealthyUpstream),
        }
    }

    fn to_waypoint(&self, state: &MeshState, svc: &Arc<ServiceEntry>, waypoint: &str, dst: SocketAddrV4) -> Route {
        let Some(wp_svc) = state.view.service_named(&svc.namespace, waypoint) else {
            return Route::Refuse(RefusalReason::WaypointUnknown);
        };
        match self.pick(wp_svc, state.view.ready_endpoints(wp_svc)) {
            Some(wp) => Route::Tunnel {
                hbone: SocketAddrV4::new(wp.ip, HBONE_PORT),
                identity: SpiffeId::new(&wp.trust_domain, &wp.namespace, &wp.service_account),
                authority: dst,
                workload: wp,
                service: Some(svc.clone()),
            },
            None => Route::Refuse(RefusalReason::WaypointUnavailable),
        }
    }

    /// Round-robin over the ready endpoints, per Service.
    fn pick<'a>(&self, svc: &ServiceEntry, ready: impl Iterator<Item = &'a Arc<Workload>>) -> Option<Arc<Workload>> {
        let ready: Vec<&Arc<Workload>> = ready.collect();
        if ready.is_empty() {
            return None;
        }
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let n = next.entry(svc.vip).or_default();
        let chosen = ready[*n % ready.len()].clone();
        *n = n.wrapping_add(1);
        Some(chosen)
    }
}

fn to_workload(w: &Arc<Workload>, dst: SocketAddrV4, service: Option<Arc<ServiceEntry>>) -> Route {
    if !w.enrolled && !w.proxy {
        return Route::Passthrough(dst, PassthroughReason::not_in_mesh, service);
    }
    Route::Tunnel {
        hbone: SocketAddrV4::new(w.ip, HBONE_PORT),
        identity: SpiffeId::new(&w.trust_domain, &w.namespace, &w.service_account),
        authority: dst,
        workload: w.clone(),
        service,
    }
}

pub fn v4(addr: SocketAddrV4) -> SocketAddr {
    SocketAddr::V4(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPOLOGY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, serviceAccountName: web}
status: {podIP: 198.18.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec: {nodeName: n2, serviceAccountName: web}
status: {podIP: 198.18.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: shop, labels: {app: web}}
spec: {nodeName: n2, serviceAccountName: web}
status: {podIP: 198.18.2.3}
---
apiVersion: v1
kind: Pod
metadata: {name: web-4, namespace: shop, labels: {app: web}}
spec: {nodeName: n2, serviceAccountName: web}
status: {podIP: 198.18.2.4, conditions: [{type: Ready, status: 'False'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: plain, labels: {app: legacy}}
spec: {nodeName: n1}
status: {podIP: 198.18.1.9}
---
apiVersion: v1
kind: Pod
metadata: {name: wp, namespace: shop, labels: {app: wp}}
spec: {nodeName: n1, serviceAccountName: waypoint}
status: {podIP: 198.18.1.5}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 198.19.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: shop}
spec: {clusterIP: 198.19.0.20, selector: {app: wp}, ports: [{port: 15008}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 198.19.0.30, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
";

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn vip_round_robins_over_ready_endpoints_only() {
        let state = crate::state::tests::state_from(TOPOLOGY, "n1");
        let r = Resolver::default();
        let mut hits: HashMap<String, usize> = HashMap::new();
        for _ in 0..300 {
            match r.resolve(&state, addr("198.19.0.10:80")) {
                Some(Route::Tunnel {
                    hbone,
                    authority,
                    workload,
                    ..
                }) => {
                    assert_eq!(hbone.port(), 15008);
                    assert_eq!(authority, SocketAddrV4::new(*hbone.ip(), 8080));
                    *hits.entry(workload.name.clone()).or_default() += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(hits.len(), 3, "{hits:?}");
        assert!(hits.values().all(|n| *n == 100), "{hits:?}");
        assert!(!hits.contains_key("web-4"));
    }

    #[test]
    fn pod_ip_waypoint_and_passthrough() {
        let state = crate::state::tests::state_from(TOPOLOGY, "n1");
        let r = Resolver::default();
        match r.resolve(&state, addr("198.18.2.2:8080")) {
            Some(Route::Tunnel {
                hbone,
                identity,
                authority,
                ..
            }) => {
                assert_eq!(hbone, addr("198.18.2.2:15008"));
                assert_eq!(identity.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
                assert_eq!(authority, addr("198.18.2.2:8080"));
            }
            other => panic!("{other:?}"),
        }
        match r.resolve(&state, addr("198.19.0.30:80")) {
            Some(Route::Tunnel {
                hbone,
                identity,
                authority,
                ..
            }) => {
                assert_eq!(hbone, addr("198.18.1.5:15008"));
                assert_eq!(identity.service_account, "waypoint");
                assert_eq!(authority, addr("198.19.0.30:80"), "waypoints get the VIP");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.resolve(&state, addr("198.18.1.9:80")),
            Some(Route::Passthrough(
                addr("198.18.1.9:80"),
                PassthroughReason::not_in_mesh,
                None
            ))
        );
        assert_eq!(r.resolve(&state, addr("198.18.200.1:80")), None, "not in the view");
        assert_eq!(
            r.resolve(&state, addr("198.19.0.10:81")),
            Some(Route::Refuse(RefusalReason::ServicePortUnknown))
        );
    }
}
