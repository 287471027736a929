//! How a configuration source is doing, for readiness detail and metrics: both sources
//! (directory, Kubernetes) report it the same way.

use std::time::SystemTime;

#[derive(Clone, Debug, PartialEq)]
pub struct SourceStatus {
    /// The source's last read succeeded (Kubernetes: every watch is up).
    pub connected: bool,
    /// Everything has been read completely at least once: the model is complete.
    pub synced: bool,
    /// The most recent error, with what it came from.
    pub last_error: Option<String>,
    /// When `connected` last changed.
    pub since: SystemTime,
    /// What is currently failing (Kubernetes: the kinds whose watch fails).
    pub failing: Vec<String>,
}

impl Default for SourceStatus {
    fn default() -> Self {
        Self {
            connected: false,
            synced: false,
            last_error: None,
            since: SystemTime::now(),
            failing: Vec::new(),
        }
    }
}

impl SourceStatus {
    /// Records the outcome of one read of `what`.
    pub fn record(&mut self, what: &str, result: Result<(), String>) {
        let connected = result.is_ok();
        if self.connected != connected {
            self.since = SystemTime::now();
        }
        self.connected = connected;
        match result {
            Ok(()) => {
                self.synced = true;
                self.failing.clear();
            }
            Err(e) => {
                self.failing = vec![what.to_owned()];
                self.last_error = Some(e);
            }
        }
    }
}
