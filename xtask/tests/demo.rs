//! e2e: what a person sees of the demo. Bookinfo in a real browser (Debian's
//! Chromium, headless, driven over the DevTools protocol) through the demo's
//! host-loopback relay, and the demo's supervisor bringing back a killed node daemon.
//! Needs root (netns, cgroups, eBPF) and `/usr/bin/chromium` (`cargo xtask bootstrap`
//! installs it); without either the tests fail with the reason.

mod browser;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use browser::{chromium, screenshot_path};
use headless_chrome::Tab;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use xtask::bookinfo::supervise::{Event, Supervisor, Unit};
use xtask::bookinfo::{self, Lab, LabOptions, pages, publish, reviews_version, tally};
use xtask::harness::{Cluster, Signal, wait_for};

fn lab() -> (Cluster, Lab) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces, cgroups, eBPF): run `cargo xtask test` as root"
    );
    let cluster = bookinfo::cluster().expect("bookinfo cluster");
    let lab = Lab::start(&cluster, LabOptions::default()).expect("bookinfo lab");
    (cluster, lab)
}

/// The page's HTML once `check` accepts it (the browser follows redirects and loads on its own).
fn page_when(tab: &Tab, what: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let found = wait_for(what, Duration::from_secs(30), || {
        last = tab.get_content().ok()?;
        if check(&last) {
            return Some(last.clone());
        }
        // A page whose reviews call failed (a first connection that was slow while the
        // whole suite loads the machine) is loaded again, as a person would.
        if last.contains("Error fetching product reviews!") {
            let _ = tab.reload(false, None);
        }
        None
    });
    found.unwrap_or_else(|_| panic!("{what}; the page was:\n{}", last.chars().take(3000).collect::<String>()))
}

/// Counts the rating stars drawn in `color` (computed style, as the person sees them).
fn stars_in(tab: &Tab, color: &str) -> u64 {
    let js = format!(
        "Array.from(document.querySelectorAll('.stars')).filter(e => getComputedStyle(e).color === '{color}').length"
    );
    tab.evaluate(&js, false)
        .expect("evaluate")
        .value
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

#[test]
fn browser_signs_in_as_jason_through_the_form_and_sees_reviews_v2_then_v1_after_signing_out() {
    let (c, lab) = lab();
    for f in ["destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml"] {
        lab.apply_sample(&c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    // The demo's relay on host loopback, on a free port so parallel runs do not collide.
    let published = publish::publish(&c, SocketAddr::from(([127, 0, 0, 1], 0))).expect("publish");
    let profile = tempfile::tempdir().expect("profile dir");
    let browser = chromium(profile.path(), (1280, 860));
    let tab = browser.new_tab().expect("tab");
    tab.navigate_to(&published.url()).expect("open productpage");

    let before = page_when(&tab, "the signed-out page", |p| {
        p.contains("id=\"sign-in\"") && reviews_version(p).is_some()
    });
    assert_eq!(
        reviews_version(&before).as_deref(),
        Some("reviews-v1"),
        "signed out: v1"
    );
    assert_eq!(
        stars_in(&tab, "rgb(0, 0, 0)") + stars_in(&tab, "rgb(255, 0, 0)"),
        0,
        "v1 has no stars"
    );
    let sheet = tab
        .evaluate(
            "getComputedStyle(document.querySelector('.navbar')).backgroundColor",
            false,
        )
        .expect("evaluate")
        .value;
    assert_eq!(
        sheet.as_ref().and_then(|v| v.as_str()),
        Some("rgb(34, 34, 34)"),
        "/static/bookinfo.css applied"
    );

    // Sign in as a person does: the Sign in button opens the form, type, submit.
    tab.find_element("#sign-in")
        .expect("Sign in button")
        .click()
        .expect("click Sign in");
    tab.wait_for_element("#username")
        .expect("user name field")
        .click()
        .expect("focus");
    tab.type_str("jason").expect("type the user name");
    tab.find_element("#login-submit")
        .expect("submit")
        .click()
        .expect("submit the form");
    let signed_in = page_when(&tab, "jason's page with reviews v2", |p| {
        p.contains("id=\"sign-out\"") && reviews_version(p).as_deref() == Some("reviews-v2")
    });
    assert!(signed_in.contains("jason ( <a"), "the navbar names jason");
    let black = stars_in(&tab, "rgb(0, 0, 0)");
    eprintln!("FIGURE browser: jason sees {black} black star ratings from reviews-v2");
    assert_eq!(black, 2, "one black rating per review");
    assert_eq!(stars_in(&tab, "rgb(255, 0, 0)"), 0, "no red stars for v2");

    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let path = screenshot_path("bookinfo-jason.png");
    std::fs::write(&path, &png).expect("write screenshot");
    eprintln!("FIGURE browser: screenshot {} ({} bytes)", path.display(), png.len());

    tab.find_element("#sign-out")
        .expect("sign out link")
        .click()
        .expect("sign out");
    let after = page_when(&tab, "the signed-out page again", |p| {
        p.contains("id=\"sign-in\"") && reviews_version(p).is_some()
    });
    assert_eq!(
        reviews_version(&after).as_deref(),
        Some("reviews-v1"),
        "signed out again: v1"
    );
    drop(tab);
    drop(browser);
    drop(published);
}

#[test]
fn a_killed_node_daemon_is_restarted_by_the_demo_supervisor_and_traffic_recovers() {
    let (c, mut lab) = lab();
    let mut supervisor = Supervisor::new(&lab);
    let node = Unit::Node("node2".into());
    let old = lab.pid(&node).expect("node2's daemon pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL).expect("kill -9 mesh-node");
    let started = Instant::now();
    let mut events = Vec::new();
    let restarted = wait_for(
        "the supervisor to restart mesh-node node2",
        Duration::from_secs(20),
        || {
            events.extend(supervisor.tick(&mut lab, &c, Instant::now()));
            events.iter().find_map(|e| match e {
                Event::Restarted { unit, pid, restarts } if *unit == node => Some((*pid, *restarts)),
                _ => None,
            })
        },
    );
    let (pid, restarts) = restarted.unwrap_or_else(|_| panic!("no restart; events: {events:?}"));
    eprintln!(
        "FIGURE supervisor: node2 back as pid {pid} after {:?}; events: {}",
        started.elapsed(),
        events.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    );
    assert_ne!(pid, old);
    assert_eq!(restarts, 1);
    assert!(
        matches!(&events[0], Event::Exited { unit, status, .. } if *unit == node && status.contains("SIGKILL")),
        "the exit is reported first: {events:?}"
    );
    let status = supervisor
        .status()
        .iter()
        .find(|u| u.unit == node)
        .expect("node2 listed")
        .clone();
    assert_eq!(status.restarts, 1);
    lab.mesh
        .wait_node_ready(&c, "node2", Duration::from_secs(60))
        .expect("restarted node2 ready");
    // reviews v2/v3 and ratings run on node2, so most pages cross the restarted daemon.
    let t = tally(&pages(&c, 50, 4, &[]));
    eprintln!("FIGURE supervisor: 50 pages after the restart: {t:?}");
    assert_eq!(t.get("error"), None, "pages after the restart: {t:?}");
}
