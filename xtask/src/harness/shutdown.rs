//! Ctrl-C handling for long-running callers (the demo): SIGINT/SIGTERM set a flag
//! that the caller's loop polls, so it returns normally and every `Drop` runs. A
//! second signal exits at once (leftovers are then for `cargo xtask clean`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use super::HarnessError;

/// Set once SIGINT or SIGTERM arrives.
#[derive(Clone, Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// True once a shutdown signal arrived.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps until a signal arrives or `timeout` passes; true if a signal arrived.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.requested() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())));
        }
        self.requested()
    }
}

/// Installs the SIGINT/SIGTERM handlers and returns the flag they set.
pub fn install_shutdown_handler() -> Result<Shutdown, HarnessError> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit checks the flag before the second handler sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
            .map_err(|e| HarnessError::sys(format!("installing the handler for signal {signal}"), e))?;
    }
    Ok(Shutdown { flag })
}
