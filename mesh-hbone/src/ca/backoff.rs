//! Retry delays for certificate requests: exponential from `min` to `max`, with full
//! jitter in the upper half so daemons that lost the CA together do not retry together.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before attempt `failures + 1` (`failures` ≥ 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = self.min.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let ceiling = exp.min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_are_jittered_within_bounds() {
        let b = Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_secs(10),
        };
        for failures in 1..40 {
            let ceiling = (Duration::from_millis(200) * 2u32.pow((failures - 1).min(16))).min(b.max);
            let d = b.delay(failures);
            assert!(d >= ceiling / 2 && d <= ceiling, "{failures}: {d:?} vs {ceiling:?}");
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| b.delay(5)).collect();
        assert!(samples.len() > 1, "jitter varies the delay");
    }
}
