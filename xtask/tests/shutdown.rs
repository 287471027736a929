//! The Ctrl-C handler (own test binary: it changes this process's signal handling).

use std::time::Duration;

use nix::sys::signal::{Signal, raise};
use xtask::harness::install_shutdown_handler;

#[test]
fn sigint_sets_the_flag_instead_of_killing_the_process() {
    let shutdown = install_shutdown_handler().unwrap();
    assert!(!shutdown.requested());
    assert!(!shutdown.wait(Duration::from_millis(20)), "no signal yet");
    raise(Signal::SIGINT).unwrap();
    assert!(shutdown.wait(Duration::from_secs(5)), "SIGINT must set the flag");
}
