//! The access-log output the waypoint (a line per request) and the node daemon (a line
//! per connection) share: the `--access-log-format` flag and the JSON writer. `text`
//! lines go through each binary's log (`tracing`, key=value) with its own fields.
//!
//! JSON lines never wait for stdout: the request (or connection) serializes its line
//! and puts it into a bounded in-memory queue of [`QUEUED_LINES`] lines, which a
//! thread of its own (`access-log`) writes to stdout in large writes. When stdout does
//! not keep up and the queue is full, the line is dropped and counted
//! ([`dropped_lines`], exported as `mesh_access_log_dropped_lines_total`): a slow log
//! reader must not slow the traffic the log describes, and no loss is silent.

use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

pub use crate::rfc3339;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for stdout at most (about 400 bytes each: ~3 MiB when full, a
/// fraction of a second of traffic at the rates the waypoint serves).
pub const QUEUED_LINES: usize = 8192;

/// `--access-log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    /// key=value through the binary's log, target `<binary>::access`.
    #[default]
    Text,
    /// One JSON object per line on stdout (Envoy's usual field names).
    Json,
    /// No access log.
    Off,
}

impl AccessLogFormat {
    pub fn is_on(self) -> bool {
        self != AccessLogFormat::Off
    }
}

struct Writer {
    queue: NonBlocking,
    dropped: ErrorCounter,
    /// Dropping it writes what is still queued; [`flush`] does at shutdown.
    guard: Mutex<Option<WorkerGuard>>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

fn writer() -> &'static Writer {
    WRITER.get_or_init(|| {
        // BufWriter: the thread writes whatever has queued up in one write, and
        // flushes when the queue is empty, so a line is out as soon as it is alone.
        let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
        let (queue, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name("access-log")
            .finish(stdout);
        Writer {
            dropped: queue.error_counter(),
            queue,
            guard: Mutex::new(Some(guard)),
        }
    })
}

/// One JSON object on one stdout line, queued (see the module's doc). Nothing here
/// can fail the request or connection the line describes.
pub fn write_json(line: &impl serde::Serialize) {
    let mut buf = Vec::with_capacity(512);
    if serde_json::to_writer(&mut buf, line).is_err() {
        return;
    }
    buf.push(b'\n');
    // One write is one queued line; a full queue counts it as dropped.
    let _ = writer().queue.clone().write_all(&buf);
}

/// JSON lines dropped because the queue to stdout was full, since start.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, |w| w.dropped.dropped_lines() as u64)
}

/// Writes every queued line out and stops the writer thread (at shutdown; lines
/// written after it are dropped and counted).
pub fn flush() {
    if let Some(w) = WRITER.get() {
        drop(w.guard.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// `mesh_access_log_dropped_lines_total` in `registry`, read when scraped.
pub fn register_dropped(registry: &mut prometheus_client::registry::Registry) {
    registry.register_collector(Box::new(DroppedCollector));
}

#[derive(Debug)]
struct DroppedCollector;

impl prometheus_client::collector::Collector for DroppedCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = prometheus_client::metrics::counter::ConstCounter::new(dropped_lines());
        let metric = encoder.encode_descriptor(
            "mesh_access_log_dropped_lines",
            "JSON access-log lines dropped because the queue to stdout was full",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        prometheus_client::encoding::EncodeMetric::encode(&counter, metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_the_only_silent_format() {
        assert!(!AccessLogFormat::Off.is_on());
        assert!(AccessLogFormat::default().is_on());
    }

    #[test]
    fn dropped_lines_are_exported_as_a_counter() {
        let mut registry = prometheus_client::registry::Registry::default();
        register_dropped(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("# TYPE mesh_access_log_dropped_lines counter")
                && text.contains("mesh_access_log_dropped_lines_total 0"),
            "{text}"
        );
    }
}
