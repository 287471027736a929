//! Endpoint layer: one address of a backend, its live counters, how one is
//! picked ([`balancer`], with [`consistent_hash`] over a [`ring_hash`] or [`maglev`]
//! table) and how a connection to it is opened ([`connector`]).

pub mod balancer;
pub mod connector;
pub mod consistent_hash;
pub mod maglev;
pub mod ring_hash;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::outlier::OutlierState;

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Requests in flight (LEAST_REQUEST reads it).
    pub active: AtomicUsize,
    pub outlier: Mutex<OutlierState>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            active: AtomicUsize::new(0),
            outlier: Mutex::new(OutlierState::default()),
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// `n` endpoint addresses (10.0.0.1:8080 …) for the balancers' tests.
#[cfg(test)]
pub(crate) fn test_addrs(n: u8) -> Vec<SocketAddr> {
    (1..=n).map(|i| SocketAddr::from(([10, 0, 0, i], 8080))).collect()
}
