//! e2e: the live traffic map (issue 16) as a person sees it. The Bookinfo lab with its
//! real Prometheus scraping the waypoint and the gateway, the map's own server on the
//! host's loopback passing the page's PromQL on to that Prometheus, and the page in
//! Debian's Chromium (headless). While a bounded stream of product pages goes through
//! the gateway, the test reads the graph from the page's DOM hooks (`data-edge`,
//! `data-version`, `data-share`): first under a VirtualService splitting reviews
//! 10/30/60 over v1/v2/v3, then after `block reviews v3` (v1/v2 keep their relative
//! weights: 25/75). Screenshots land in `target/screenshots/`. Needs root and
//! `/usr/bin/chromium`; RAII teardown, also on failure.

mod browser;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use browser::{chromium, screenshot_path};
use headless_chrome::Tab;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use xtask::bookinfo::{self, Lab, LabOptions, prometheus, publish};
use xtask::harness::{Cluster, Ticker, wait_for};
use xtask::traffic_map;

/// reviews split three ways, so every version is on the map with a share of its own
/// (and none is what plain round-robin, 1/3 each, would give).
const SPLIT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 10}
    - {destination: {host: reviews, subset: v2}, weight: 30}
    - {destination: {host: reviews, subset: v3}, weight: 60}
";
const EDGE: &str = "productpage->reviews";
/// The page's rate window (its default).
const WINDOW_SECS: f64 = 30.0;
/// A share may differ from the configured weight by this much (absolute). Why it is
/// enough: the waypoint deals weighted routes from a shuffled deck of 100, so whole decks
/// are exact and only the two partial decks at the window's edges deviate (hypergeometric,
/// standard deviation at most 2.5 requests each, 3.5 together); with at least
/// `MIN_IN_WINDOW` requests in the window that is at most 3.5 % of the edge, so 10 points
/// is about 3 standard deviations, while a wrong split (round-robin's 33 %, or v1/v2 at
/// 50/50 after blocking v3) is at least 15 points off.
const TOLERANCE: f64 = 0.10;
const MIN_IN_WINDOW: f64 = 100.0;
/// The traffic: at most this many pages per second, this many in all, for this long.
const PAGES_PER_SECOND: u32 = 10;
const MAX_PAGES: u64 = 4000;
const MAX_TRAFFIC_TIME: Duration = Duration::from_secs(360);
/// How long the map may take to show a split: the old traffic must leave the window.
const SETTLE: Duration = Duration::from_secs(150);

/// What the page shows for one edge, read from its DOM hooks.
#[derive(Debug, Default, serde::Deserialize)]
struct Snapshot {
    state: String,
    updates: String,
    status: String,
    edges: Vec<String>,
    edge: Option<EdgeHooks>,
    splits: Vec<(String, String, String)>,
}

#[derive(Debug, serde::Deserialize)]
struct EdgeHooks {
    rps: String,
    mtls: String,
    p99: String,
    errors: String,
}

impl Snapshot {
    fn read(tab: &Tab) -> Option<Self> {
        let js = format!(
            "JSON.stringify({{
              state: document.body.dataset.state || '',
              updates: document.body.dataset.updates || '',
              status: document.getElementById('status').textContent,
              edges: Array.from(document.querySelectorAll('g.edge')).map(e => e.dataset.edge),
              edge: (e => e && {{rps: e.dataset.rps, mtls: e.dataset.mtls, p99: e.dataset.p99,
                               errors: e.dataset.errorRate}})(document.querySelector('g.edge[data-edge=\"{EDGE}\"]')),
              splits: Array.from(document.querySelectorAll('[data-edge=\"{EDGE}\"][data-version]'))
                .map(s => [s.dataset.version, s.dataset.share, s.dataset.rps]),
            }})"
        );
        let v = tab.evaluate(&js, false).ok()?.value?;
        serde_json::from_str(v.as_str()?).ok()
    }

    fn shares(&self) -> BTreeMap<String, f64> {
        self.splits
            .iter()
            .filter_map(|(v, share, _)| Some((v.clone(), share.parse().ok()?)))
            .collect()
    }

    fn edge_rps(&self) -> f64 {
        self.edge.as_ref().and_then(|e| e.rps.parse().ok()).unwrap_or(0.0)
    }

    /// The page is up to date and shows exactly `want`'s versions on the edge, each
    /// within the tolerance, over a window holding enough requests to judge.
    fn shows(&self, want: &[(&str, f64)]) -> bool {
        let shares = self.shares();
        self.state == "ok"
            && self.edge_rps() * WINDOW_SECS >= MIN_IN_WINDOW
            && shares.len() == want.len()
            && want
                .iter()
                .all(|(v, w)| shares.get(*v).is_some_and(|s| (s - w).abs() <= TOLERANCE))
    }
}

/// Product pages from the `outside` pod through the gateway, two clients at up to
/// `PAGES_PER_SECOND` together, until `stop` or the count / time bound.
fn drive(c: &Cluster, stop: &AtomicBool, sent: &AtomicU64, failed: &AtomicU64) {
    let started = Instant::now();
    let mut ticker = Ticker::every(Duration::from_secs(2) / PAGES_PER_SECOND);
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < MAX_TRAFFIC_TIME
        && sent.fetch_add(1, Ordering::SeqCst) < MAX_PAGES
    {
        match bookinfo::productpage(c, &[]) {
            Ok(r) if r.status == 200 => {}
            _ => {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        }
        ticker.tick();
    }
}

/// Sets the flag when dropped, so the traffic stops however the test ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn wait_for_map(tab: &Tab, what: &str, want: &[(&str, f64)]) -> (Snapshot, Duration) {
    let started = Instant::now();
    let mut last = Snapshot::default();
    let found = wait_for(what, SETTLE, || {
        last = Snapshot::read(tab)?;
        last.shows(want).then(|| std::mem::take(&mut last))
    });
    match found {
        Ok(s) => (s, started.elapsed()),
        Err(_) => panic!(
            "{what}: the map never showed {want:?} (±{TOLERANCE}, ≥ {MIN_IN_WINDOW} requests in the window); last: {last:?}"
        ),
    }
}

fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let path = screenshot_path(name);
    std::fs::write(&path, &png).expect("write screenshot");
    eprintln!(
        "FIGURE traffic map: screenshot {} ({} bytes)",
        path.display(),
        png.len()
    );
}

fn figure(what: &str, s: &Snapshot, took: Duration) {
    let e = s.edge.as_ref().expect("edge shown");
    eprintln!(
        "FIGURE traffic map {what} after {took:.1?}: {EDGE} {} rps ({:.0} requests in the {WINDOW_SECS} s window), errors {}, p99 {} ms, mtls {}; shares {:?}",
        e.rps,
        s.edge_rps() * WINDOW_SECS,
        e.errors,
        e.p99,
        e.mtls,
        s.shares()
    );
}

#[test]
fn traffic_map_in_chromium_shows_the_reviews_split_and_moves_when_v3_is_blocked() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, cgroups, eBPF): run `cargo xtask test` as root"
    );
    let c = bookinfo::cluster().expect("bookinfo cluster");
    let opts = LabOptions {
        prometheus: true,
        ..LabOptions::default()
    };
    let lab = Lab::start(&c, opts).expect("bookinfo lab");
    lab.apply_sample(&c, "destination-rule-all.yaml")
        .expect("destination-rule-all.yaml");
    lab.apply_yaml(&c, "the test's reviews 10/30/60 split", SPLIT)
        .expect("reviews split");
    // As the demo does: Prometheus published on the host's loopback, the map in front of it.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let prom = publish::publish_to(&c, loopback, prometheus::address(&c).expect("prometheus address"))
        .expect("publish Prometheus");
    let map = traffic_map::serve(loopback, prom.addr()).expect("traffic map server");
    let profile = tempfile::tempdir().expect("profile dir");
    let browser = chromium(profile.path(), (1360, 900));
    let tab = browser.new_tab().expect("tab");

    let (stop, sent, failed) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for _ in 0..2 {
            s.spawn(|| drive(&c, &stop, &sent, &failed));
        }
        tab.navigate_to(&map.url()).expect("open the traffic map");

        let split = [("v1", 0.10), ("v2", 0.30), ("v3", 0.60)];
        let (seen, took) = wait_for_map(&tab, "reviews v1/v2/v3 at 10/30/60", &split);
        figure("10/30/60", &seen, took);
        eprintln!("FIGURE traffic map: edges {:?}", seen.edges);
        let edge = seen.edge.as_ref().expect("edge");
        assert_eq!(edge.mtls, "true", "productpage → reviews goes over HBONE: {seen:?}");
        assert!(edge.p99.parse::<f64>().is_ok_and(|p| p > 0.0), "a p99: {seen:?}");
        for e in ["productpage->details", "reviews->ratings"] {
            assert!(seen.edges.iter().any(|x| x == e), "edge {e} on the map: {seen:?}");
        }
        assert!(
            seen.edges.iter().any(|x| x.ends_with("->productpage")),
            "the gateway's requests reach productpage on the map: {seen:?}"
        );
        assert!(seen.updates.parse::<u64>().is_ok_and(|n| n >= 1), "{seen:?}");
        screenshot(&tab, "traffic-map.png");

        // The tutorial's quiz: block v3; its share leaves the map within the window.
        let blocked = Instant::now();
        lab.block(&c, "reviews", "v3").expect("block reviews v3");
        let (moved, took) = wait_for_map(
            &tab,
            "reviews v1/v2 at 25/75 after blocking v3",
            &[("v1", 0.25), ("v2", 0.75)],
        );
        figure("v3 blocked", &moved, took);
        eprintln!(
            "FIGURE traffic map: v3 left the map {:.1?} after `block reviews v3` (rate window {WINDOW_SECS} s); status `{}`",
            blocked.elapsed(),
            moved.status
        );
        screenshot(&tab, "traffic-map-v3-blocked.png");
    });
    eprintln!(
        "FIGURE traffic map: {} pages sent through the gateway, {} not 200",
        sent.load(Ordering::SeqCst).min(MAX_PAGES),
        failed.load(Ordering::SeqCst)
    );
    drop(tab);
    drop(browser);
    drop(map);
    drop(prom);
}
