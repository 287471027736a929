//! The demo's live status: the URL, the commands to try, what the latest requests
//! got, and each process's state. On a terminal it is a small block redrawn in place
//! once a second (cursor up, clear, print), so the instructions never scroll away;
//! otherwise (a pipe, a log file) it is one line per second plus one per event.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use xtask::bookinfo::supervise::{INITIAL_BACKOFF, MAX_BACKOFF, State, UnitStatus};

use super::traffic::{WINDOW, Window};

/// Event lines the block keeps.
const EVENTS: usize = 5;

/// What the status says besides the live figures.
pub struct Info {
    pub url: String,
    /// Prometheus' web UI and API, published on the host's loopback.
    pub prometheus: String,
    /// The live traffic map (xtask::traffic_map), on the host's loopback.
    pub map: String,
    pub config_dir: String,
    pub log_dir: String,
}

pub struct Screen {
    terminal: bool,
    started: Instant,
    /// Lines of the block on screen, to move back over when redrawing.
    drawn: usize,
    events: VecDeque<String>,
}

impl Screen {
    pub fn new(started: Instant) -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
            started,
            drawn: 0,
            events: VecDeque::new(),
        }
    }

    /// Something happened (a restart): a line of its own, kept in the block on a terminal.
    pub fn event(&mut self, text: &str) {
        let line = format!("[{}] {text}", age(self.started.elapsed()));
        if !self.terminal {
            println!("[demo] {line}");
            return;
        }
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(line);
    }

    pub fn draw(&mut self, info: &Info, window: &Window, units: &[UnitStatus]) {
        let now = Instant::now();
        let mut out = std::io::stdout().lock();
        if !self.terminal {
            let _ = writeln!(out, "{}", summary(window, units, now));
            return;
        }
        let width = terminal_width().unwrap_or(200).saturating_sub(1).max(20);
        let lines = block(info, window, units, &self.events, now, self.started.elapsed());
        let mut text = String::new();
        if self.drawn > 0 {
            // To the first line of the previous block, then clear to the end of the screen.
            text.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        for l in &lines {
            text.extend(l.chars().take(width));
            text.push('\n');
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = lines.len();
    }
}

/// The block drawn on a terminal.
fn block(
    info: &Info,
    window: &Window,
    units: &[UnitStatus],
    events: &VecDeque<String>,
    now: Instant,
    up: Duration,
) -> Vec<String> {
    let mut l = vec![
        format!("== Bookinfo on the mesh, up {} ==", age(up)),
        format!("open     {}   (Sign in as jason: reviews v2 once virtual-service-reviews-test-v2.yaml is applied)", info.url),
        format!("metrics  {}   (Prometheus: sum(rate(istio_requests_total{{destination_service=~\"reviews.*\"}}[1m])) by (destination_version))", info.prometheus),
        format!("map      {}   (live traffic map: services, versions, requests/s, errors, p99, mutual TLS)", info.map),
        "apply    cargo xtask demo apply samples/bookinfo/virtual-service-reviews-v2-v3.yaml   (kubectl apply -f; -n NS)".into(),
        "delete   cargo xtask demo delete samples/bookinfo/virtual-service-reviews-v2-v3.yaml  (kubectl delete -f)".into(),
        "block    cargo xtask demo block reviews v3   /   cargo xtask demo restore reviews".into(),
        format!(
            "crash    kill PID   (a process that exits is restarted after {}s, doubling up to {}s)",
            INITIAL_BACKOFF.as_secs(),
            MAX_BACKOFF.as_secs()
        ),
        format!("config   {}   logs {}", info.config_dir, info.log_dir),
        String::new(),
        format!("traffic  last {} requests: {}", window.len().min(WINDOW), versions(window)),
        format!("errors   {} of {} requests since start; last: {}", window.errors, window.sent, last_error(window, now)),
        String::new(),
        format!("{:<34} {:>8}  {:<28} {:>8}  {}", "PROCESS", "PID", "STATE", "RESTARTS", "LAST EXIT"),
    ];
    for u in units {
        l.push(format!(
            "{:<34} {:>8}  {:<28} {:>8}  {}",
            u.unit.to_string(),
            pid(u),
            state(u, now),
            u.restarts,
            u.last_exit.as_deref().unwrap_or("-")
        ));
    }
    l.push(String::new());
    if events.is_empty() {
        l.push("events   none".into());
    }
    for (i, e) in events.iter().enumerate() {
        l.push(format!("{}{e}", if i == 0 { "events   " } else { "         " }));
    }
    l.push("Ctrl-C stops the demo and removes everything it created.".into());
    l
}

/// The one line per second when stdout is not a terminal.
fn summary(window: &Window, units: &[UnitStatus], now: Instant) -> String {
    let down: Vec<String> = units
        .iter()
        .filter(|u| !matches!(u.state, State::Running { .. }))
        .map(|u| format!("{} {}", u.unit, state(u, now)))
        .collect();
    let restarts: u32 = units.iter().map(|u| u.restarts).sum();
    let processes = if down.is_empty() {
        format!("{} processes running", units.len())
    } else {
        format!("not running: {}", down.join(", "))
    };
    format!(
        "last {} requests: {} | errors {} of {} | {processes} | restarts {restarts}",
        window.len().min(WINDOW),
        versions(window),
        window.errors,
        window.sent
    )
}

fn versions(window: &Window) -> String {
    let t = window.tally();
    if t.is_empty() {
        return "none yet".into();
    }
    t.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn last_error(window: &Window, now: Instant) -> String {
    match &window.last_error {
        Some((at, e)) => format!("{} ago: {e}", age(now.saturating_duration_since(*at))),
        None => "none".into(),
    }
}

fn pid(u: &UnitStatus) -> String {
    match u.state {
        State::Running { pid, .. } => pid.to_string(),
        State::BackOff { .. } => "-".into(),
    }
}

fn state(u: &UnitStatus, now: Instant) -> String {
    match u.state {
        State::Running { since, .. } => format!("running {}", age(now.saturating_duration_since(since))),
        State::BackOff { until } => format!(
            "back-off, restart in {}s",
            until.saturating_duration_since(now).as_secs_f64().ceil()
        ),
    }
}

/// `1h02m`, `5m03s`, `7s`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Columns of the terminal on stdout.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass; fd 1 is stdout.
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_short() {
        assert_eq!(age(Duration::from_secs(7)), "7s");
        assert_eq!(age(Duration::from_secs(303)), "5m03s");
        assert_eq!(age(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn the_block_names_the_url_the_commands_and_every_process() {
        let info = Info {
            url: "http://127.0.0.1:9080/productpage".into(),
            prometheus: "http://127.0.0.1:9090/".into(),
            map: "http://127.0.0.1:20001/".into(),
            config_dir: "/c".into(),
            log_dir: "/l".into(),
        };
        let lines = block(
            &info,
            &Window::default(),
            &[],
            &VecDeque::new(),
            Instant::now(),
            Duration::ZERO,
        );
        let text = lines.join("\n");
        for needle in [
            "http://127.0.0.1:9080/productpage",
            "http://127.0.0.1:9090/",
            "http://127.0.0.1:20001/",
            "demo apply",
            "demo delete",
            "demo block",
            "kill PID",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
