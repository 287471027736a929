//! Outlier detection: consecutive 5xx / gateway errors eject an endpoint for
//! `baseEjectionTime × ejections` (rounded up to the `interval` grid, as Envoy only
//! un-ejects at interval ticks), never more than `maxEjectionPercent` of the backend.
//! Ejected endpoints come back lazily, on the first pick after their time is up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::OutlierPolicy;
use crate::endpoint::Endpoint;

#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

/// What an attempt taught us about an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    Status(u16),
    /// Connect failure, reset or timeout: counted as both 5xx and gateway error
    /// (Envoy without `splitExternalLocalOriginErrors`).
    LocalFailure,
}

impl OutlierState {
    /// True if usable at `now`; restores an endpoint whose ejection is over.
    pub fn usable(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if until > now => false,
            Some(_) => {
                self.ejected_until = None;
                self.consecutive_5xx = 0;
                self.consecutive_gateway = 0;
                true
            }
            None => true,
        }
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|u| u > now)
    }
}

/// Records `obs` for `ep`; returns true when this observation ejected it.
pub fn observe(all: &[Arc<Endpoint>], ep: &Endpoint, policy: &OutlierPolicy, obs: Observation, now: Instant) -> bool {
    let trips = {
        let Ok(mut s) = ep.outlier.lock() else { return false };
        if s.is_ejected(now) {
            return false;
        }
        let (is_5xx, is_gateway) = match obs {
            Observation::Status(code) => (code >= 500, matches!(code, 502..=504)),
            Observation::LocalFailure => (true, true),
        };
        s.consecutive_5xx = if is_5xx { s.consecutive_5xx + 1 } else { 0 };
        s.consecutive_gateway = if is_gateway { s.consecutive_gateway + 1 } else { 0 };
        if !is_5xx && !is_gateway {
            s.ejections = 0;
        }
        policy.consecutive_5xx.is_some_and(|n| s.consecutive_5xx >= n)
            || policy.consecutive_gateway.is_some_and(|n| s.consecutive_gateway >= n)
    };
    if !trips || !may_eject(all, ep, policy, now) {
        return false;
    }
    let Ok(mut s) = ep.outlier.lock() else { return false };
    s.ejections += 1;
    let time = policy.base_ejection.saturating_mul(s.ejections);
    s.ejected_until = Some(now + round_up(time, policy.interval));
    tracing::warn!(endpoint = %ep.addr, ejections = s.ejections, ejected_for_ms = time.as_millis() as u64, "outlier detection ejected endpoint");
    true
}

/// Envoy's rule: eject while the ejected share is below `maxEjectionPercent`.
fn may_eject(all: &[Arc<Endpoint>], ep: &Endpoint, policy: &OutlierPolicy, now: Instant) -> bool {
    let ejected = all
        .iter()
        .filter(|e| !std::ptr::eq(e.as_ref(), ep))
        .filter(|e| e.outlier.lock().is_ok_and(|s| s.is_ejected(now)))
        .count();
    !all.is_empty() && (ejected * 100) < (policy.max_ejection_percent as usize * all.len())
}

fn round_up(d: Duration, grid: Duration) -> Duration {
    if grid.is_zero() {
        return d;
    }
    let ticks = d.as_nanos().div_ceil(grid.as_nanos());
    Duration::from_nanos((ticks * grid.as_nanos()).min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: Some(2),
            consecutive_gateway: None,
            interval: Duration::from_millis(100),
            base_ejection: Duration::from_secs(1),
            max_ejection_percent: 50,
        }
    }

    fn eps(n: u8) -> Vec<Arc<Endpoint>> {
        (1..=n)
            .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([127, 0, 0, i], 80)))))
            .collect()
    }

    #[test]
    fn ejects_after_consecutive_errors_and_restores_after_base_time() {
        let (all, p, t0) = (eps(2), policy(), Instant::now());
        assert!(!observe(&all, &all[0], &p, Observation::Status(500), t0));
        assert!(
            !observe(&all, &all[0], &p, Observation::Status(200), t0),
            "success resets the count"
        );
        assert!(!observe(&all, &all[0], &p, Observation::Status(503), t0));
        assert!(observe(&all, &all[0], &p, Observation::Status(500), t0));
        let mut s = all[0].outlier.lock().unwrap();
        assert!(!s.usable(t0 + Duration::from_millis(999)));
        assert!(s.usable(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn max_ejection_percent_caps_ejections() {
        let (all, p, t0) = (eps(2), policy(), Instant::now());
        for _ in 0..2 {
            observe(&all, &all[0], &p, Observation::LocalFailure, t0);
            observe(&all, &all[1], &p, Observation::LocalFailure, t0);
        }
        let ejected = all.iter().filter(|e| !e.outlier.lock().unwrap().usable(t0)).count();
        assert_eq!(ejected, 1, "50% of 2 endpoints");
    }

    #[test]
    fn second_ejection_lasts_longer() {
        let (all, p, t0) = (
            eps(4),
            OutlierPolicy {
                max_ejection_percent: 100,
                ..policy()
            },
            Instant::now(),
        );
        observe(&all, &all[0], &p, Observation::Status(500), t0);
        observe(&all, &all[0], &p, Observation::Status(500), t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(all[0].outlier.lock().unwrap().usable(t1));
        observe(&all, &all[0], &p, Observation::Status(500), t1);
        observe(&all, &all[0], &p, Observation::Status(500), t1);
        assert!(!all[0].outlier.lock().unwrap().usable(t1 + Duration::from_millis(1500)));
        assert!(all[0].outlier.lock().unwrap().usable(t1 + Duration::from_secs(2)));
    }
}
