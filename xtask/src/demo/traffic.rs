//! The demo's own traffic: a few product pages per second from the `outside` pod
//! through the ingress gateway, remembered in a window of the last requests so the
//! status can say which reviews versions served them and what failed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xtask::bookinfo::{CLIENT, reviews_version};
use xtask::harness::{Cluster, Ticker};
use xtask::mesh::http_get_from_pod;

/// Pages per second: small, so the demo stays light.
const PER_SECOND: u32 = 5;
/// How many of the latest requests the status counts.
pub const WINDOW: usize = 50;
/// One page may take this long (productpage's own retries towards reviews take up to ~9 s).
const TIMEOUT: Duration = Duration::from_secs(12);

/// The latest requests' outcomes and the latest error.
#[derive(Default)]
pub struct Window {
    last: VecDeque<String>,
    pub sent: u64,
    pub errors: u64,
    pub last_error: Option<(Instant, String)>,
}

impl Window {
    fn record(&mut self, outcome: Result<String, String>) {
        self.sent += 1;
        let label = match outcome {
            Ok(label) => label,
            Err(e) => {
                self.errors += 1;
                self.last_error = Some((Instant::now(), e));
                "error".into()
            }
        };
        if self.last.len() == WINDOW {
            self.last.pop_front();
        }
        self.last.push_back(label);
    }

    /// Outcomes of the latest requests: `reviews-v1` …, `error`, with counts.
    pub fn tally(&self) -> BTreeMap<String, usize> {
        let mut t = BTreeMap::new();
        for l in &self.last {
            *t.entry(l.clone()).or_default() += 1;
        }
        t
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }
}

/// Sends pages until `done`, recording each outcome in `window`.
pub fn run(cluster: &Cluster, entry: std::net::SocketAddr, window: &Mutex<Window>, done: &AtomicBool) {
    let mut ticker = Ticker::every(Duration::from_secs(1) / PER_SECOND);
    while !done.load(Ordering::SeqCst) {
        let outcome = one_page(cluster, entry);
        window.lock().unwrap_or_else(|p| p.into_inner()).record(outcome);
        ticker.tick();
    }
}

/// The reviews version that rendered the page (noting missing ratings), or what failed.
fn one_page(cluster: &Cluster, entry: std::net::SocketAddr) -> Result<String, String> {
    let r = http_get_from_pod(cluster, CLIENT, entry, "/productpage", &[], TIMEOUT).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!(
            "HTTP {} {}",
            r.status,
            r.body.lines().next().unwrap_or("").trim()
        ));
    }
    let Some(version) = reviews_version(&r.body) else {
        return Err("page without reviews (Sorry, product reviews are currently unavailable)".into());
    };
    if r.body.contains("Ratings service is currently unavailable") {
        return Ok(format!("{version} (ratings unavailable)"));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_latest_requests_and_counts_errors() {
        let mut w = Window::default();
        for _ in 0..WINDOW {
            w.record(Ok("reviews-v1".into()));
        }
        for _ in 0..10 {
            w.record(Ok("reviews-v2".into()));
        }
        w.record(Err("HTTP 503".into()));
        let t = w.tally();
        assert_eq!(w.len(), WINDOW);
        assert_eq!(t["reviews-v1"], WINDOW - 11);
        assert_eq!(t["reviews-v2"], 10);
        assert_eq!(t["error"], 1);
        assert_eq!((w.sent, w.errors), (WINDOW as u64 + 11, 1));
        assert_eq!(w.last_error.as_ref().map(|e| e.1.as_str()), Some("HTTP 503"));
    }
}
