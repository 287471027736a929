//! Debian's Chromium for the browser e2e tests (`demo.rs`, `traffic_map.rs`): headless,
//! driven over the DevTools protocol, and where their screenshots go.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use headless_chrome::{Browser, LaunchOptions};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium as the workplace runs it: headless, no sandbox (root), nothing that
/// reaches out to the network by itself, a fresh profile.
pub fn chromium(profile: &Path, window: (u32, u32)) -> Browser {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: `cargo xtask bootstrap` installs Debian's chromium"
    );
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let options = LaunchOptions {
        path: Some(PathBuf::from(CHROMIUM)),
        headless: true,
        sandbox: false,
        window_size: Some(window),
        user_data_dir: Some(profile.to_path_buf()),
        disable_default_args: true,
        args: flags.iter().map(OsStr::new).collect(),
        idle_browser_timeout: Duration::from_secs(120),
        ..LaunchOptions::default()
    };
    Browser::new(options).expect("start headless chromium")
}

/// `target/screenshots/<name>` (honouring `CARGO_TARGET_DIR`), its directory created.
pub fn screenshot_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir.join(name)
}
