//! Waiting without guessing: every wait in the harness, the demo and the e2e tests
//! polls a condition until a deadline, and fixed-rate loops tick on a schedule.
//! The only sleeps are here, between two checks of a condition.

use std::time::{Duration, Instant};

use super::HarnessError;

/// How often a condition is re-checked: short enough not to slow tests down,
/// long enough not to spin a core on a 2-vCPU machine.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Some`, or fails with [`HarnessError::Timeout`]
/// naming `what` once `timeout` has passed. `check` runs at least once.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(POLL_INTERVAL.min(left));
    }
}

/// Like [`wait_for`] for a plain condition.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<(), HarnessError> {
    wait_for(what, timeout, || check().then_some(()))
}

/// A fixed-rate schedule for bounded load loops (one tick every `period`, however
/// long the work between ticks took), so a loop's rate does not drift with load.
#[derive(Debug)]
pub struct Ticker {
    period: Duration,
    next: Instant,
}

impl Ticker {
    pub fn every(period: Duration) -> Self {
        Self {
            period,
            next: Instant::now() + period,
        }
    }

    /// Blocks until the next tick; a late caller gets it at once.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next = self.next.max(now) + self.period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_the_value_or_names_what_timed_out() {
        let mut n = 0;
        assert_eq!(
            wait_for("three calls", Duration::from_secs(5), || {
                n += 1;
                (n == 3).then_some(n)
            })
            .unwrap(),
            3
        );
        let err = wait_until("never", Duration::from_millis(30), || false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("never"), "{err}");
    }
}
