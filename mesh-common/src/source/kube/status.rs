//! The Kubernetes source's [`SourceStatus`], folded from the health of every watched
//! kind. While the API server is unreachable the store keeps its last known state; this
//! status is how the daemons say so.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::sync::watch;

pub use crate::source::status::SourceStatus;

#[derive(Default)]
struct KindHealth {
    ok: bool,
    synced: bool,
}

/// Per-kind health folded into one [`SourceStatus`], published on a watch channel.
pub(crate) struct StatusTracker {
    kinds: BTreeMap<String, KindHealth>,
    tx: watch::Sender<SourceStatus>,
}

impl StatusTracker {
    pub fn new(kinds: impl IntoIterator<Item = String>) -> (Self, watch::Receiver<SourceStatus>) {
        let (tx, rx) = watch::channel(SourceStatus::default());
        let kinds = kinds.into_iter().map(|k| (k, KindHealth::default())).collect();
        (Self { kinds, tx }, rx)
    }

    pub fn ok(&mut self, kind: &str, synced: bool) {
        let h = self.kinds.entry(kind.to_owned()).or_default();
        if h.ok && (h.synced || !synced) {
            return; // nothing changed: skip waking readers on every event
        }
        h.ok = true;
        h.synced |= synced;
        self.publish(None);
    }

    pub fn failed(&mut self, kind: &str, error: String) {
        self.kinds.entry(kind.to_owned()).or_default().ok = false;
        self.publish(Some(format!("{kind}: {error}")));
    }

    fn publish(&self, error: Option<String>) {
        let connected = self.kinds.values().all(|h| h.ok);
        let synced = self.kinds.values().all(|h| h.synced);
        let failing = self
            .kinds
            .iter()
            .filter(|(_, h)| !h.ok)
            .map(|(k, _)| k.clone())
            .collect();
        self.tx.send_modify(|s| {
            if s.connected != connected {
                s.since = SystemTime::now();
            }
            s.connected = connected;
            s.synced = synced;
            s.failing = failing;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_only_when_every_kind_is_up() {
        let (mut t, rx) = StatusTracker::new(["Pod".to_string(), "Service".to_string()]);
        t.ok("Pod", true);
        assert!(!rx.borrow().connected);
        t.ok("Service", true);
        assert!(rx.borrow().connected && rx.borrow().synced);
        t.failed("Pod", "connection refused".into());
        let s = rx.borrow().clone();
        assert!(!s.connected && s.synced);
        assert_eq!(s.failing, vec!["Pod".to_string()]);
        assert_eq!(s.last_error.as_deref(), Some("Pod: connection refused"));
        t.ok("Pod", false);
        assert!(rx.borrow().connected);
        assert!(
            rx.borrow().last_error.is_some(),
            "last error stays visible after recovery"
        );
    }
}
