//! `fault`: injected delay and abort.
//!
//! Faults apply **per attempt**, not per request: each attempt first rolls the
//! delay, then the abort. A retry can therefore recover from an injected abort
//! (Istio applies faults before its router and cannot, istio/istio#13705), and the
//! route `timeout` bounds the whole request, injected delays included.

use std::time::Duration;

use http::StatusCode;
use rand::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, Percentage)>,
    pub abort: Option<(AbortWith, Percentage)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AbortWith {
    Http(StatusCode),
    /// gRPC status code, sent as a trailers-only response.
    Grpc(u32),
}

/// A validated percentage in [0, 100].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentage(f64);

impl Percentage {
    pub const ALL: Percentage = Percentage(100.0);

    pub fn new(value: f64) -> Result<Self, String> {
        if value.is_finite() && (0.0..=100.0).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("percentage {value} is outside 0–100"))
        }
    }

    pub fn value(self) -> f64 {
        self.0
    }

    pub fn roll(self, rng: &mut impl Rng) -> bool {
        self.0 >= 100.0 || (self.0 > 0.0 && rng.gen_range(0.0..100.0) < self.0)
    }
}

impl Fault {
    pub fn roll_delay(&self, rng: &mut impl Rng) -> Option<Duration> {
        self.delay.as_ref().filter(|(_, p)| p.roll(rng)).map(|(d, _)| *d)
    }

    pub fn roll_abort(&self, rng: &mut impl Rng) -> Option<&AbortWith> {
        self.abort.as_ref().filter(|(_, p)| p.roll(rng)).map(|(a, _)| a)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn percentage_bounds_and_rolls() {
        assert!(Percentage::new(-0.1).is_err());
        assert!(Percentage::new(100.5).is_err());
        assert!(Percentage::new(f64::NAN).is_err());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = Percentage::new(50.0).unwrap();
        let hits = (0..4000).filter(|_| p.roll(&mut rng)).count();
        assert!((1880..=2120).contains(&hits), "{hits}");
        assert!((0..100).all(|_| !Percentage::new(0.0).unwrap().roll(&mut rng)));
        assert!((0..100).all(|_| Percentage::ALL.roll(&mut rng)));
    }
}
