//! Keeps [`MeshState`] current: polls the configuration directory, applies changes
//! to the store (bad objects keep their last good version) and publishes a new
//! state to every subsystem through a `watch` channel. Kubernetes mode
//! ([`crate::kubernetes`]) feeds the same [`Publisher`] from the API server.

use std::sync::Arc;
use std::time::Duration;

use mesh_common::model::store::{Changes, ConfigStore};
use mesh_common::source::dir::DirSource;
use tokio::sync::watch;

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;
use crate::readiness::{Condition, Readiness};
use crate::state::{MeshState, StateParams};

pub type StateRx = watch::Receiver<Arc<MeshState>>;

/// Builds a [`MeshState`] from the store and publishes it: the one reconcile path
/// both configuration sources (directory, Kubernetes) go through.
pub struct Publisher {
    params: StateParams,
    tx: watch::Sender<Arc<MeshState>>,
    /// `mesh_config_last_apply_seconds`.
    last_apply: Gauge<f64, AtomicU64>,
}

impl Publisher {
    pub fn new(params: StateParams, metrics: &Metrics) -> (Self, StateRx) {
        let (tx, rx) = watch::channel(Arc::new(MeshState::default()));
        let last_apply = Gauge::<f64, AtomicU64>::default();
        metrics.register(|r| {
            r.register(
                "mesh_config_last_apply_seconds",
                "Seconds the last configuration change took to take effect once in the store: cluster view update, policy compilation when a policy changed, publication",
                last_apply.clone(),
            )
        });
        (Self { params, tx, last_apply }, rx)
    }

    /// The generation last published (0: nothing yet).
    pub fn generation(&self) -> u64 {
        self.tx.borrow().generation
    }

    /// Publishes the state after what changed in `store` since the last publish.
    pub fn publish(&self, store: &ConfigStore) {
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
}

pub struct ConfigLoop {
    source: DirSource,
    store: ConfigStore,
    publisher: Publisher,
    /// The last poll succeeded and readiness says so.
    healthy: bool,
}

impl ConfigLoop {
    pub fn new(source: DirSource, params: StateParams, metrics: &Metrics) -> (Self, StateRx) {
        let (publisher, rx) = Publisher::new(params, metrics);
        (
            Self {
                source,
                store: ConfigStore::default(),
                publisher,
                healthy: false,
            },
            rx,
        )
    }

    /// One poll: re-reads changed files and publishes a new state if anything changed.
    pub fn poll_once(&mut self, readiness: &Readiness) {
        match self.source.poll(&mut self.store, &|_| Ok(())) {
            Ok(report) => {
                for line in &report.rejected {
                    tracing::warn!("configuration rejected, last good version kept: {line}");
                }
                let first = self.publisher.generation() == 0 && self.store.generation() > 0;
                if !report.is_noop() || first {
                    self.publisher.publish(&self.store);
                }
                if !report.is_noop() || !self.healthy {
                    // Counted on change only: a poll that found nothing new costs no scan.
                    let objects = self.store.iter().count();
                    readiness.set(
                        "config",
                        Condition::Ok(format!("{objects} objects from {}", self.source.root().display())),
                    );
                    self.healthy = true;
                }
            }
            Err(e) => {
                tracing::error!("{e}; serving the last good configuration");
                readiness.set("config", Condition::Failed(e.to_string()));
                self.healthy = false;
            }
        }
    }

    pub async fn run(mut self, every: Duration, readiness: Readiness) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.poll_once(&readiness);
        }
    }
}
