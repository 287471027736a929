//! Keeps [`MeshState`] current from either configuration source (a directory, or the
//! API server with `--kubernetes`): mesh-common's [`Feed`] follows the source, and the
//! [`Publisher`] — the node daemon's [`Sink`] — builds each new state from the store
//! and publishes it to every subsystem through a `watch` channel, with the source's
//! health in readiness detail and `mesh_config_source_*` metrics.

mod source_gauges;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use mesh_common::model::store::{Changes, ConfigStore};
use mesh_common::source::SharedStore;
use mesh_common::source::dir::DirPoller;
use mesh_common::source::runner::{Feed, Sink, Source};
use mesh_common::source::status::SourceStatus;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::readiness::{Condition, Readiness};
use crate::state::{MeshState, StateParams};
use source_gauges::SourceGauges;

pub type StateRx = watch::Receiver<Arc<MeshState>>;

/// How often `mesh_config_source_last_sync_timestamp_seconds` advances while in sync.
const SYNC_TICK: Duration = Duration::from_secs(1);

/// Local mode: polls `dir` every `every`. The directory is read once before this
/// returns, so capture starts from the configuration on disk.
pub fn start_dir(
    dir: &Path,
    every: Duration,
    params: StateParams,
    readiness: &Readiness,
    metrics: &Metrics,
) -> StateRx {
    let store = SharedStore::default();
    // Decoding already validates every kind the node daemon reads.
    let poller = DirPoller::new(dir, store.clone(), Arc::new(|_| Ok(())), every);
    // An unreadable directory is logged and shown in readiness by the feed.
    let _ = poller.poll_once();
    let what = format!("the directory {}", dir.display());
    start(poller, store, Publisher::new(params, what, readiness, metrics))
}

/// Runs `source` (which writes `store`) and keeps the published state current.
pub fn start(source: impl Source, store: SharedStore, publisher: Publisher) -> StateRx {
    let state = publisher.subscribe();
    let feed = Feed::start(source, store, publisher);
    // The ticker owns the feed: the daemon follows its source for its whole life.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SYNC_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            feed.sink().gauges.tick(&feed.status().borrow());
        }
    });
    state
}

/// Builds a [`MeshState`] from the store and publishes it: the node daemon's end of
/// the one reconcile path both sources go through.
pub struct Publisher {
    params: StateParams,
    tx: watch::Sender<Arc<MeshState>>,
    /// `mesh_config_last_apply_seconds`.
    last_apply: Gauge<f64, AtomicU64>,
    /// The source, as readiness detail names it.
    what: String,
    readiness: Readiness,
    gauges: SourceGauges,
}

impl Publisher {
    pub fn new(params: StateParams, what: String, readiness: &Readiness, metrics: &Metrics) -> Self {
        let last_apply = Gauge::<f64, AtomicU64>::default();
        metrics.register(|r| {
            r.register(
                "mesh_config_last_apply_seconds",
                "Seconds the last configuration change took to take effect once in the store: cluster view update, policy compilation when a policy changed, publication",
                last_apply.clone(),
            )
        });
        readiness.set(
            "config",
            Condition::Pending(format!("waiting for the first complete list from {what}")),
        );
        Self {
            params,
            tx: watch::channel(Arc::new(MeshState::default())).0,
            last_apply,
            what,
            readiness: readiness.clone(),
            gauges: SourceGauges::register(metrics),
        }
    }

    pub fn subscribe(&self) -> StateRx {
        self.tx.subscribe()
    }
}

impl Sink for Publisher {
    /// Publishes the state after what changed in `store` since the last publish.
    fn publish(&self, store: &ConfigStore) {
        let started = std::time::Instant::now();
        let prev = self.tx.borrow().clone();
        let changes = store.changes_since(prev.generation);
        let state = MeshState::next(&prev, store, &changes, &self.params);
        let took = started.elapsed();
        tracing::info!(
            generation = state.generation,
            workloads = state.view.workload_count(),
            services = state.view.service_count(),
            changed = match &changes {
                Changes::All => "all".to_owned(),
                Changes::Some(c) => c.len().to_string(),
            },
            apply_ms = took.as_secs_f64() * 1000.0,
            authorization_policies = state.authz.policies().len(),
            "configuration applied"
        );
        if !Arc::ptr_eq(&prev.authz, &state.authz) {
            crate::policy::authz::log_unenforceable(&state.authz);
        }
        self.tx.send_replace(Arc::new(state));
        self.last_apply.set(took.as_secs_f64());
    }

    fn status(&self, status: &SourceStatus, objects: usize) {
        self.readiness.set("config", status.condition(objects, &self.what));
        self.gauges.show(status);
    }
}
