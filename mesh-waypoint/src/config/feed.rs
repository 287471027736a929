//! Local mode: the configuration directory followed into a [`Config`] by mesh-common's
//! source runner, polled every `--config-poll-ms`.

use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use mesh_common::model::ConfigError;
use mesh_common::source::SharedStore;
use mesh_common::source::dir::DirPoller;
use mesh_common::source::runner::{Feed, Sink};

use super::{Config, validate};

/// A configuration directory feeding a [`Config`] until dropped.
pub struct DirFeed {
    poller: DirPoller,
    feed: Arc<Feed<Arc<Config>>>,
}

impl DirFeed {
    /// Reads `dir` and publishes it before returning (a waypoint starts with its
    /// configuration), then polls it every `every`.
    pub fn start(dir: &Path, every: Duration, config: Arc<Config>) -> Result<Self, ConfigError> {
        let store = SharedStore::default();
        config.follow_source(format!("directory {}", dir.display()));
        let poller = DirPoller::new(dir, store.clone(), Arc::new(validate), every);
        poller.poll_once()?;
        let feed = Feed::start(poller.clone(), store, config);
        Ok(Self { poller, feed })
    }

    /// Reads the directory now and publishes what changed; true if anything did.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        let changed = !self.poller.poll_once()?.is_noop();
        self.feed.sync();
        Ok(changed)
    }

    /// Reads `dir` once into `config`, with no polling (`mesh-waypoint check`).
    pub fn read_once(dir: &Path, config: &Config) -> Result<(), ConfigError> {
        let store = SharedStore::default();
        DirPoller::new(dir, store.clone(), Arc::new(validate), Duration::MAX).poll_once()?;
        config.publish(&store.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(())
    }
}

impl Drop for DirFeed {
    fn drop(&mut self) {
        self.feed.stop();
    }
}
