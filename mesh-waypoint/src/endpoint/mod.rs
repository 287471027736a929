//! Endpoint layer: one address of a backend, its live counters, how one is
//! picked ([`balancer`]) and how a connection to it is opened ([`connector`]).

pub mod balancer;
pub mod connector;

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
