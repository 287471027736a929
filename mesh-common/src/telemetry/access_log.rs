//! The access-log output the waypoint (a line per request) and the node daemon (a line
//! per connection) share: the `--access-log-format` flag and the JSON writer. `text`
//! lines go through each binary's log (`tracing`, key=value) with its own fields.
//!
//! JSON lines never wait for stdout, and a line costs its writer no system call and
//! no wake-up: the request (or connection) serializes its line into a buffer of its
//! thread and appends it to one shared in-memory batch of at most [`QUEUED_LINES`]
//! lines. A thread of its own (`access-log`) takes the whole batch every
//! [`FLUSH_EVERY`] (sooner when it is a quarter full) and writes it to stdout in one
//! write. When stdout does not keep up and the batch is full, the line is dropped and
//! counted ([`dropped_lines`], exported as `mesh_access_log_dropped_lines_total`): a
//! slow log reader must not slow the traffic the log describes, and no loss is silent.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::rfc3339;

use super::json;

/// Lines waiting for stdout at most (about 400 bytes each: ~3 MiB when full, a
/// fraction of a second of traffic at the rates the waypoint serves).
pub const QUEUED_LINES: usize = 8192;
/// How long a line waits for stdout at most while the batch is small. Envoy flushes
/// its access-log files every second; a tenth of that keeps `tail -f` and the tests'
/// readers prompt at ten wake-ups a second.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The batch size that wakes the writer before [`FLUSH_EVERY`], so a burst is written
/// long before it fills the batch.
const WAKE_AT: usize = QUEUED_LINES / 4;

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

/// The lines not yet written, shared by every thread that logs and the writer.
struct Queue {
    batch: Mutex<Batch>,
    /// Signalled when the batch reaches [`WAKE_AT`] lines and at shutdown.
    wake: Condvar,
    dropped: AtomicU64,
}

struct Batch {
    bytes: Vec<u8>,
    lines: usize,
    /// Set by [`flush`]: the writer writes what is left and stops; later lines drop.
    stopped: bool,
}

static QUEUE: Queue = Queue::new();
static START: Once = Once::new();
static WRITER: Mutex<Option<JoinHandle<()>>> = Mutex::new(None);

/// The process' queue, its writer thread started by the first line.
fn queue() -> &'static Queue {
    START.call_once(|| {
        // Without a thread the lines stay queued until the batch is full, then drop
        // (counted): the log must not take the process down.
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| QUEUE.write_batches(&mut std::io::stdout()));
        *lock(&WRITER) = thread.ok();
    });
    &QUEUE
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    const fn new() -> Self {
        Self {
            batch: Mutex::new(Batch {
                bytes: Vec::new(),
                lines: 0,
                stopped: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends one whole line (ending in `\n`), or counts it as dropped.
    fn push(&self, line: &[u8]) {
        let mut batch = lock(&self.batch);
        if batch.stopped || batch.lines >= QUEUED_LINES {
            drop(batch);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        batch.bytes.extend_from_slice(line);
        batch.lines += 1;
        if batch.lines == WAKE_AT {
            self.wake.notify_one();
        }
    }

    /// Waits for a batch worth writing and takes it; `None` once stopped and empty.
    /// `spare` (the last written batch, emptied) becomes the next batch's buffer.
    fn take(&self, spare: Vec<u8>) -> Option<Vec<u8>> {
        let batch = lock(&self.batch);
        let (mut batch, _) = self
            .wake
            .wait_timeout_while(batch, FLUSH_EVERY, |b| !b.stopped && b.lines < WAKE_AT)
            .unwrap_or_else(|p| p.into_inner());
        if batch.stopped && batch.lines == 0 {
            return None;
        }
        batch.lines = 0;
        Some(std::mem::replace(&mut batch.bytes, spare))
    }

    /// The `access-log` thread: batch after batch to `out` until [`Queue::stop`].
    fn write_batches(&self, out: &mut impl std::io::Write) {
        let mut spare = Vec::new();
        while let Some(mut bytes) = self.take(spare) {
            if !bytes.is_empty() {
                // stdout gone (closed pipe): the lines are lost, the traffic goes on.
                let _ = out.write_all(&bytes).and_then(|()| out.flush());
            }
            bytes.clear();
            spare = bytes;
        }
    }

    /// Lets the writer write what is queued and end; later lines are dropped.
    fn stop(&self) {
        lock(&self.batch).stopped = true;
        self.wake.notify_one();
    }
}

thread_local! {
    /// The line being serialized, reused: no allocation per line once it has grown.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// One JSON object on one stdout line, queued (see the module's doc). Nothing here
/// can fail the request or connection the line describes.
pub fn write_json(line: &impl serde::Serialize) {
    queue_line(|buf| serde_json::to_writer(buf, line).is_ok());
}

/// The same for a line written field by field by `fill` ([`json::Object`]), without
/// serde (the waypoint's line per request).
pub fn write_object(fill: impl FnOnce(&mut json::Object<'_>)) {
    queue_line(|buf| {
        let mut object = json::Object::begin(buf);
        fill(&mut object);
        object.end();
        true
    });
}

/// Writes a line into the thread's buffer with `write` and queues it when it says so.
fn queue_line(write: impl FnOnce(&mut Vec<u8>) -> bool) {
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        if write(buf) {
            buf.push(b'\n');
            queue().push(buf);
        }
    });
}

/// JSON lines dropped because the queue to stdout was full, since start.
pub fn dropped_lines() -> u64 {
    QUEUE.dropped.load(Ordering::Relaxed)
}

/// Writes every queued line out and stops the writer thread (at shutdown; lines
/// written after it are dropped and counted).
pub fn flush() {
    QUEUE.stop();
    if let Some(thread) = lock(&WRITER).take() {
        let _ = thread.join();
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

    fn lines(q: &Queue, n: usize) {
        for i in 0..n {
            q.push(format!("{{\"n\":{i}}}\n").as_bytes());
        }
    }

    #[test]
    fn lines_wait_in_one_batch_and_a_full_batch_drops_and_counts() {
        let q = Queue::new();
        lines(&q, QUEUED_LINES + 3);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        // Full (past WAKE_AT): taken without waiting, every line whole and in order.
        let batch = q.take(Vec::new()).expect("a batch");
        let text = String::from_utf8(batch).expect("utf-8");
        assert_eq!(text.lines().count(), QUEUED_LINES);
        assert_eq!(
            text.lines().last(),
            Some(format!("{{\"n\":{}}}", QUEUED_LINES - 1).as_str())
        );
        lines(&q, 1);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3, "room again once taken");
    }

    #[test]
    fn the_writer_writes_everything_queued_before_it_stops_and_nothing_after() {
        let q = Queue::new();
        let mut out = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| q.write_batches(&mut out));
            lines(&q, WAKE_AT * 3 + 5);
            q.stop();
        });
        let text = String::from_utf8(out).expect("utf-8");
        let expected: Vec<String> = (0..WAKE_AT * 3 + 5).map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected);
        lines(&q, 2);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 2, "lines after the stop are counted");
        assert_eq!(q.take(Vec::new()), None);
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
