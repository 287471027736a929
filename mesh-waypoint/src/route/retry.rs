//! `retries`: how many extra attempts, on which outcomes, with what per-try timeout.

use std::time::Duration;

/// What one attempt produced, as far as retry decisions care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Status(u16),
    /// gRPC status from a response header (trailers-only responses).
    Grpc(u32),
    ConnectFailure,
    /// The upstream connection broke mid-request.
    Reset,
    /// The per-try timeout fired.
    Timeout,
    /// Refused locally (circuit breaker, no healthy endpoint): never retried.
    Local,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub any_5xx: bool,
    pub gateway_error: bool,
    pub connect_failure: bool,
    pub reset: bool,
    pub retriable_4xx: bool,
    pub refused_stream: bool,
    pub status_codes: Vec<u16>,
    pub grpc_codes: Vec<u32>,
}

impl RetryOn {
    /// Parses Istio's comma-separated `retryOn` (Envoy policy names and status codes).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut on = RetryOn::default();
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match token {
                "5xx" => on.any_5xx = true,
                "gateway-error" => on.gateway_error = true,
                "connect-failure" => on.connect_failure = true,
                "reset" | "reset-before-request" => on.reset = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "refused-stream" => on.refused_stream = true,
                // Status codes listed alongside enable this by themselves.
                "retriable-status-codes" | "retriable-headers" | "envoy-ratelimited" | "http3-post-connect-failure" => {
                }
                "cancelled" => on.grpc_codes.push(1),
                "deadline-exceeded" => on.grpc_codes.push(4),
                "resource-exhausted" => on.grpc_codes.push(8),
                "internal" => on.grpc_codes.push(13),
                "unavailable" => on.grpc_codes.push(14),
                code => match code.parse::<u16>() {
                    Ok(c) if (100..=599).contains(&c) => on.status_codes.push(c),
                    _ => {
                        return Err(format!(
                            "unknown retry condition `{code}`; use 5xx, gateway-error, connect-failure, reset, retriable-4xx, refused-stream, a gRPC condition or an HTTP status code"
                        ));
                    }
                },
            }
        }
        Ok(on)
    }

    pub fn covers(&self, result: AttemptResult) -> bool {
        match result {
            AttemptResult::Status(s) => {
                (self.any_5xx && s >= 500)
                    || (self.gateway_error && matches!(s, 502..=504))
                    || (self.retriable_4xx && s == 409)
                    || self.status_codes.contains(&s)
            }
            AttemptResult::Grpc(code) => self.grpc_codes.contains(&code),
            AttemptResult::ConnectFailure => self.connect_failure || self.any_5xx || self.gateway_error,
            AttemptResult::Reset => self.reset || self.any_5xx,
            AttemptResult::Timeout => self.any_5xx || self.gateway_error,
            AttemptResult::Local => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    pub retry_on: RetryOn,
    /// First backoff; each further retry doubles it, up to 10×, with jitter.
    pub backoff: Duration,
    pub ignore_previous_hosts: bool,
}

impl Default for RetryPolicy {
    /// Istio's default when a route has no `retries`: 2 retries on connection failures.
    fn default() -> Self {
        let retry_on = RetryOn {
            connect_failure: true,
            refused_stream: true,
            ..RetryOn::default()
        };
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on,
            backoff: Duration::from_millis(25),
            ignore_previous_hosts: true,
        }
    }
}

impl RetryPolicy {
    pub fn none() -> Self {
        Self {
            attempts: 0,
            ..Self::default()
        }
    }

    pub fn should_retry(&self, attempt: u32, result: AttemptResult) -> bool {
        attempt < self.attempts && self.retry_on.covers(result)
    }

    /// Envoy-style exponential backoff with full jitter.
    pub fn backoff_for(&self, retry: u32, rng: &mut impl rand::Rng) -> Duration {
        let cap = self.backoff.saturating_mul(10);
        let exp = self.backoff.saturating_mul(1u32 << retry.min(10)).min(cap);
        if exp.is_zero() {
            return exp;
        }
        Duration::from_nanos(rng.gen_range(0..=exp.as_nanos().min(u64::MAX as u128) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let table = [
            ("5xx", AttemptResult::Status(500), true),
            ("5xx", AttemptResult::Status(404), false),
            ("gateway-error", AttemptResult::Status(503), true),
            ("gateway-error", AttemptResult::Status(500), false),
            ("connect-failure", AttemptResult::ConnectFailure, true),
            ("connect-failure", AttemptResult::Status(503), false),
            ("reset", AttemptResult::Reset, true),
            ("retriable-4xx", AttemptResult::Status(409), true),
            ("retriable-status-codes,418", AttemptResult::Status(418), true),
            ("unavailable", AttemptResult::Grpc(14), true),
            ("5xx", AttemptResult::Timeout, true),
        ];
        for (on, result, want) in table {
            assert_eq!(RetryOn::parse(on).unwrap().covers(result), want, "{on} {result:?}");
        }
        assert!(RetryOn::parse("5xx,teapot").unwrap_err().contains("`teapot`"));
    }

    #[test]
    fn attempts_bound_retries() {
        let p = RetryPolicy {
            attempts: 3,
            retry_on: RetryOn::parse("5xx").unwrap(),
            ..RetryPolicy::default()
        };
        assert!(p.should_retry(2, AttemptResult::Status(500)));
        assert!(!p.should_retry(3, AttemptResult::Status(500)));
        assert!(!RetryPolicy::none().should_retry(0, AttemptResult::ConnectFailure));
    }
}
