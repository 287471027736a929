//! Plain-TCP passthrough is never silent: each one is counted by reason
//! (`mesh_outbound_passthrough_total{reason}`) and, when the destination is or may be a
//! pod of the cluster, logged once per destination address.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;

use super::metrics::{PassthroughReason, TcpMetrics};
use crate::capture::handler::CapturedPod;

/// Destinations remembered as already logged; past this the memory starts over (a
/// destination may then be logged again), so a scan of the cluster cannot grow it.
const LOGGED_CAPACITY: usize = 4096;

pub struct Passthrough {
    metrics: TcpMetrics,
    logged: Mutex<HashSet<Ipv4Addr>>,
}

impl Passthrough {
    pub fn new(metrics: TcpMetrics) -> Self {
        Self {
            metrics,
            logged: Mutex::new(HashSet::new()),
        }
    }

    pub fn record(&self, pod: &CapturedPod, dst: SocketAddrV4, reason: PassthroughReason) {
        self.metrics.passthrough(reason);
        if reason.in_cluster() && self.first_time(*dst.ip()) {
            tracing::warn!(
                pod = %pod.workload.key(),
                %dst,
                reason = ?reason,
                "outbound connection to a cluster address sent as plain TCP (logged once per destination)"
            );
        }
    }

    fn first_time(&self, ip: Ipv4Addr) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() >= LOGGED_CAPACITY {
            logged.clear();
        }
        logged.insert(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_destination_is_logged_once_and_memory_stays_bounded() {
        let p = Passthrough::new(TcpMetrics::default());
        let ip = Ipv4Addr::new(198, 18, 2, 9);
        assert!(p.first_time(ip));
        assert!(!p.first_time(ip));
        for i in 0..(LOGGED_CAPACITY as u32 * 2) {
            p.first_time(Ipv4Addr::from(i));
        }
        assert!(p.logged.lock().unwrap().len() <= LOGGED_CAPACITY);
    }
}
