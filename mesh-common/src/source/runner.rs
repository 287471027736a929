//! The one "source → store → publish" loop, for every binary and both sources.
//!
//! A [`Source`] (the directory poller, the Kubernetes watchers) writes a
//! [`SharedStore`] and announces each new store generation and its health on watch
//! channels. A [`Feed`] follows those channels and hands the store to the binary's
//! [`Sink`] once per new generation — never before the source has read everything
//! once: a half-read model (pods before their namespaces) would look like "nothing
//! enrolled" and make a restarted node daemon detach the capture it had re-adopted.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::SharedStore;
use super::status::SourceStatus;
use crate::model::store::ConfigStore;

/// What a binary does with its configuration.
pub trait Sink: Send + Sync + 'static {
    /// Builds and publishes the binary's state from `store` (whatever changed since the
    /// last call: the store's journal says what).
    fn publish(&self, store: &ConfigStore);
    /// The source's health, after every change of it or of the store (readiness detail,
    /// gauges). `objects`: how many objects the store holds.
    fn status(&self, _status: &SourceStatus, _objects: usize) {}
}

impl<T: Sink + ?Sized> Sink for Arc<T> {
    fn publish(&self, store: &ConfigStore) {
        (**self).publish(store)
    }

    fn status(&self, status: &SourceStatus, objects: usize) {
        (**self).status(status, objects)
    }
}

/// A configuration source that writes a [`SharedStore`].
pub trait Source: Send + 'static {
    /// The store's generation after each change the source made.
    fn generation(&self) -> watch::Receiver<u64>;
    fn status(&self) -> watch::Receiver<SourceStatus>;
    /// Reads (polls, watches) until the process ends.
    fn run(self) -> impl Future<Output = ()> + Send + 'static;
}

/// A running source followed into a sink.
pub struct Feed<S> {
    store: SharedStore,
    sink: S,
    status: watch::Receiver<SourceStatus>,
    /// The store generation last handed to the sink.
    published: Mutex<Option<u64>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl<S: Sink> Feed<S> {
    /// Runs `source`, which writes `store`, and follows it into `sink`. What the source
    /// has already read (a first directory poll) is published before this returns.
    pub fn start(source: impl Source, store: SharedStore, sink: S) -> Arc<Self> {
        let (generation, status) = (source.generation(), source.status());
        let feed = Arc::new(Self {
            store,
            sink,
            status: status.clone(),
            published: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        feed.sync();
        let run = tokio::spawn(source.run()).abort_handle();
        let follow = tokio::spawn(follow(Arc::downgrade(&feed), generation, status)).abort_handle();
        *lock(&feed.tasks) = vec![run, follow];
        feed
    }

    /// Publishes the store if it changed since the last publish and the source has read
    /// everything once; reports the source's status either way.
    pub fn sync(&self) {
        let status = self.status.borrow().clone();
        let store = lock(&self.store);
        if status.synced {
            let mut published = lock(&self.published);
            if *published != Some(store.generation()) {
                self.sink.publish(&store);
                *published = Some(store.generation());
            }
        }
        self.sink.status(&status, store.len());
    }

    pub fn status(&self) -> watch::Receiver<SourceStatus> {
        self.status.clone()
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Stops reading the source (a proxy shutting down inside a longer-lived process).
    pub fn stop(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

async fn follow<S: Sink>(
    feed: std::sync::Weak<Feed<S>>,
    mut generation: watch::Receiver<u64>,
    mut status: watch::Receiver<SourceStatus>,
) {
    loop {
        tokio::select! {
            changed = generation.changed() => if changed.is_err() { return },
            changed = status.changed() => if changed.is_err() { return },
        }
        generation.borrow_and_update();
        status.borrow_and_update();
        let Some(feed) = feed.upgrade() else { return };
        feed.sync();
    }
}

/// A panic elsewhere must not stop configuration updates: the store is consistent
/// between applies, so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::model::parse_documents;

    #[derive(Default)]
    struct Counting {
        published: AtomicUsize,
        objects: AtomicUsize,
    }

    impl Sink for Counting {
        fn publish(&self, _: &ConfigStore) {
            self.published.fetch_add(1, Ordering::SeqCst);
        }
        fn status(&self, _: &SourceStatus, objects: usize) {
            self.objects.store(objects, Ordering::SeqCst);
        }
    }

    /// A source driven by the test: it writes the store and announces like a real one.
    struct Manual {
        generation: watch::Sender<u64>,
        status: watch::Sender<SourceStatus>,
    }

    impl Source for Manual {
        fn generation(&self) -> watch::Receiver<u64> {
            self.generation.subscribe()
        }
        fn status(&self) -> watch::Receiver<SourceStatus> {
            self.status.subscribe()
        }
        fn run(self) -> impl Future<Output = ()> + Send + 'static {
            std::future::pending()
        }
    }

    fn namespace(store: &SharedStore, name: &str) -> u64 {
        let mut s = lock(store);
        let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
        s.apply_source(name, parse_documents(name, &yaml), &|_| Ok(()));
        s.generation()
    }

    async fn until(what: &str, ok: impl Fn() -> bool) {
        let polled = tokio::time::timeout(Duration::from_secs(5), async {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while !ok() {
                tick.tick().await;
            }
        });
        assert!(polled.await.is_ok(), "timed out waiting for {what}");
    }

    #[tokio::test]
    async fn publishes_once_per_generation_and_never_before_synced() {
        let (generation, _) = watch::channel(0);
        let (status, _) = watch::channel(SourceStatus::default());
        let (gen_tx, status_tx) = (generation.clone(), status.clone());
        let store = SharedStore::default();
        let feed = Feed::start(Manual { generation, status }, store.clone(), Counting::default());
        gen_tx.send_replace(namespace(&store, "a"));
        until("the unsynced status is reported", || {
            feed.sink().objects.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(
            feed.sink().published.load(Ordering::SeqCst),
            0,
            "published before synced"
        );

        status_tx.send_modify(|s| s.record("test", Ok(())));
        until("the first publish", || {
            feed.sink().published.load(Ordering::SeqCst) == 1
        })
        .await;
        feed.sync();
        assert_eq!(
            feed.sink().published.load(Ordering::SeqCst),
            1,
            "same generation published twice"
        );

        gen_tx.send_replace(namespace(&store, "b"));
        until("the second publish", || {
            feed.sink().published.load(Ordering::SeqCst) == 2
        })
        .await;
        feed.stop();
    }
}
