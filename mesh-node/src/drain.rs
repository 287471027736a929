//! Draining: once a new daemon has taken over ([`crate::handoff`]), this one stops
//! accepting, asks the peers of its HBONE connections to move away (HTTP/2 GOAWAY), and
//! keeps relaying what it already holds until those connections end.

use std::time::Duration;

use tokio::sync::watch;

/// Shared by the accept loops, the HBONE servers and the daemon's main task.
#[derive(Clone)]
pub struct Drain {
    draining: watch::Sender<bool>,
    active: watch::Sender<usize>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: watch::Sender::new(false),
            active: watch::Sender::new(0),
        }
    }
}

/// Counts one open connection until dropped.
pub struct Tracked(watch::Sender<usize>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Drain {
    /// Stops accepting everywhere; open connections carry on.
    pub fn start(&self) {
        self.draining.send_replace(true);
    }

    /// Flips to `true` when draining starts (what `mesh_hbone::server` watches).
    pub fn signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Resolves once draining has started.
    pub async fn started(&self) {
        let mut rx = self.draining.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|d| *d).await;
    }

    pub fn track(&self) -> Tracked {
        self.active.send_modify(|n| *n += 1);
        Tracked(self.active.clone())
    }

    /// Connections accepted and not yet finished.
    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// Waits until no connection is open or `timeout` passes; returns how many are left.
    pub async fn until_idle(&self, timeout: Duration) -> usize {
        let mut rx = self.active.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await;
        self.active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn until_idle_waits_for_the_last_connection_or_the_timeout() {
        let d = Drain::default();
        let (a, b) = (d.track(), d.track());
        assert_eq!(d.active(), 2);
        assert_eq!(
            d.until_idle(Duration::from_millis(50)).await,
            2,
            "times out with both open"
        );
        drop(a);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.until_idle(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(b);
        assert_eq!(waiter.await.unwrap(), 0);
    }

    #[tokio::test]
    async fn started_resolves_after_start_only() {
        let d = Drain::default();
        assert!(!*d.signal().borrow());
        let started = tokio::spawn({
            let d = d.clone();
            async move { d.started().await }
        });
        tokio::task::yield_now().await;
        assert!(!started.is_finished());
        d.start();
        tokio::time::timeout(Duration::from_secs(5), started)
            .await
            .unwrap()
            .unwrap();
        assert!(*d.signal().borrow());
    }
}
