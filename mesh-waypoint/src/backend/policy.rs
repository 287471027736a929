//! A backend's effective traffic policy (DestinationRule top level, then port-level,
//! then subset, then subset port-level), with Istio's defaults filled in.

use std::time::Duration;

use crate::endpoint::balancer::LbPolicy;

#[derive(Clone, Debug, PartialEq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub max_pending: usize,
    pub max_requests: usize,
    pub max_requests_per_connection: Option<u64>,
    pub max_retries: usize,
    pub idle_timeout: Duration,
}

impl Default for PoolLimits {
    /// Istio's defaults: effectively unlimited, 10 s connect, 1 h idle.
    fn default() -> Self {
        let unlimited = u32::MAX as usize;
        Self {
            max_connections: unlimited,
            connect_timeout: Duration::from_secs(10),
            max_pending: unlimited,
            max_requests: unlimited,
            max_requests_per_connection: None,
            max_retries: unlimited,
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutlierPolicy {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_5xx: Some(5),
            consecutive_gateway: None,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

/// The parts a DestinationRule level may set; unset parts inherit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyParts {
    pub lb: Option<LbPolicy>,
    pub pool: Option<PoolLimits>,
    pub outlier: Option<OutlierPolicy>,
}

impl PolicyParts {
    pub fn overlay(&mut self, over: &PolicyParts) {
        if over.lb.is_some() {
            self.lb.clone_from(&over.lb);
        }
        if over.pool.is_some() {
            self.pool.clone_from(&over.pool);
        }
        if over.outlier.is_some() {
            self.outlier.clone_from(&over.outlier);
        }
    }
}

/// A traffic policy level with its `portLevelSettings`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LevelPolicy {
    pub parts: PolicyParts,
    pub ports: Vec<(u16, PolicyParts)>,
}

impl LevelPolicy {
    pub fn apply_to(&self, out: &mut PolicyParts, port: u16) {
        out.overlay(&self.parts);
        if let Some((_, p)) = self.ports.iter().find(|(n, _)| *n == port) {
            out.overlay(p);
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub lb: LbPolicy,
    pub pool: PoolLimits,
    pub outlier: Option<OutlierPolicy>,
}

impl From<PolicyParts> for Policy {
    fn from(p: PolicyParts) -> Self {
        Self {
            lb: p.lb.unwrap_or_default(),
            pool: p.pool.unwrap_or_default(),
            outlier: p.outlier,
        }
    }
}
