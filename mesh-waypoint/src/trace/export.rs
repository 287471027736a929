//! The OTLP exporter behind a failure log that speaks at most once per
//! [`REPORT_EVERY`]: a collector that is down must not flood the proxy's log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

pub const REPORT_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct LoggedExporter<E> {
    inner: E,
    endpoint: String,
    failures: Mutex<Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    last_report: Option<Instant>,
    /// Failed batches (and their spans) not yet reported.
    batches: u64,
    spans: u64,
}

impl Failures {
    /// Counts one failure; returns the totals to report when the log may speak.
    fn note(&mut self, spans: usize, now: Instant) -> Option<(u64, u64)> {
        self.batches += 1;
        self.spans += spans as u64;
        if self.last_report.is_some_and(|t| now.duration_since(t) < REPORT_EVERY) {
            return None;
        }
        self.last_report = Some(now);
        let out = (self.batches, self.spans);
        (self.batches, self.spans) = (0, 0);
        Some(out)
    }
}

impl<E> LoggedExporter<E> {
    pub fn new(inner: E, endpoint: &str) -> Self {
        Self {
            inner,
            endpoint: endpoint.to_owned(),
            failures: Mutex::default(),
        }
    }
}

impl<E: SpanExporter> SpanExporter for LoggedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            let report = self
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note(n, Instant::now());
            if let Some((batches, spans)) = report {
                tracing::warn!(
                    endpoint = self.endpoint,
                    batches,
                    spans,
                    "cannot export spans over OTLP (dropped; next report in {}s at the earliest): {e}",
                    REPORT_EVERY.as_secs()
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_at_most_once_per_period_with_the_count_since() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        assert_eq!(f.note(3, t0), Some((1, 3)));
        assert_eq!(f.note(2, t0 + Duration::from_secs(1)), None);
        assert_eq!(f.note(4, t0 + Duration::from_secs(2)), None);
        assert_eq!(f.note(1, t0 + REPORT_EVERY + Duration::from_secs(1)), Some((3, 7)));
    }
}
