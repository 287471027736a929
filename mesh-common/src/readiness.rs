//! Readiness: named conditions (eBPF loaded, configuration read, certificates held, ...)
//! that must all hold. Every daemon answers `GET /healthz/ready` with 200 or 503 and one
//! line per condition, built from this type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::rfc3339;
use crate::source::status::SourceStatus;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Pending(String),
    Ok(String),
}

#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<&'static str, Condition>>>,
}

impl Readiness {
    pub fn set(&self, name: &'static str, c: Condition) {
        if let Ok(mut m) = self.conditions.lock() {
            m.insert(name, c);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.snapshot().values().all(|c| matches!(c, Condition::Ok(_)))
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, Condition> {
        self.conditions.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn report(&self) -> String {
        self.snapshot()
            .iter()
            .map(|(name, c)| match c {
                Condition::Ok(d) => format!("{name}: ok ({d})\n"),
                Condition::Pending(d) => format!("{name}: pending ({d})\n"),
            })
            .collect()
    }
}

impl SourceStatus {
    /// The readiness line of a configuration source (`what`: where it reads from). Once
    /// the model is complete the daemon stays ready through a source outage (it serves
    /// its last known state, like ztunnel without its control plane); the detail says so.
    pub fn condition(&self, objects: usize, what: &str) -> Condition {
        let last_error = self
            .last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        if !self.synced {
            return Condition::Pending(format!("waiting for the first complete list from {what}{last_error}"));
        }
        if self.connected {
            return Condition::Ok(format!("{objects} objects from {what}, connected"));
        }
        Condition::Ok(format!(
            "{what} unreachable since {} (failing: {}): serving the last known state of {objects} objects{last_error}",
            rfc3339(self.since),
            self.failing.join(", "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_ok() {
        let r = Readiness::default();
        r.set("config", Condition::Pending("not read yet".into()));
        assert!(!r.is_ready());
        r.set("config", Condition::Ok("3 objects".into()));
        r.set("ebpf", Condition::Ok("loaded".into()));
        assert!(r.is_ready());
        r.set("ebpf", Condition::Pending("verifier".into()));
        assert!(!r.is_ready());
        assert!(r.report().contains("ebpf: pending (verifier)"));
    }

    #[test]
    fn a_source_is_ready_once_synced_and_through_an_outage() {
        let mut s = SourceStatus::default();
        s.record("Pod", Err("connection refused".into()));
        let c = s.condition(0, "the Kubernetes API server");
        assert!(
            matches!(&c, Condition::Pending(d) if d.contains("connection refused")),
            "{c:?}"
        );
        s.record("Pod", Ok(()));
        assert!(matches!(s.condition(3, "x"), Condition::Ok(d) if d.contains("3 objects from x, connected")));
        s.record("Pod", Err("timeout".into()));
        let c = s.condition(3, "x");
        assert!(
            matches!(&c, Condition::Ok(d) if d.contains("unreachable since") && d.contains("failing: Pod")),
            "{c:?}"
        );
    }
}
