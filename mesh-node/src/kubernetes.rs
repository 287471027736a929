//! Kubernetes mode (`mesh-node run --kubernetes`): the API server as configuration
//! source. mesh-common's [`KubeSource`] watches it (this node's pods only) into a
//! shared store; this module republishes the [`crate::state::MeshState`] on every store
//! change through the same [`Publisher`] as the directory source, and shows the
//! source's connection in readiness detail and metrics.
//!
//! Nothing is published before every kind has been listed once: a half-listed model
//! (pods before their namespaces) would look like "nothing enrolled" and make a
//! restarted daemon detach the capture it had just re-adopted.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use mesh_common::source::kube::{KubeSource, KubeSourceConfig, KubeStatus, SharedStore, SharedValidator};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::config::{Publisher, StateRx};
use crate::metrics::Metrics;
use crate::readiness::{Condition, Readiness};
use crate::state::StateParams;

/// How often `mesh_config_source_last_sync_timestamp_seconds` advances while in sync.
const SYNC_TICK: Duration = Duration::from_secs(1);

/// Connects with the pod's service account and starts watching.
pub async fn start(params: StateParams, readiness: &Readiness, metrics: &Metrics) -> anyhow::Result<StateRx> {
    let store = SharedStore::default();
    // Decoding already validates every kind the node daemon reads; the same rule as
    // the directory source.
    let accept: SharedValidator = Arc::new(|_| Ok(()));
    let source = KubeSource::connect(KubeSourceConfig::node(&params.node), store.clone(), accept)
        .await
        .context("Kubernetes mode (--kubernetes)")?;
    Ok(spawn(source, store, params, readiness, metrics))
}

/// Runs `source` and follows it; `store` is the one `source` writes.
pub fn spawn(
    source: KubeSource,
    store: SharedStore,
    params: StateParams,
    readiness: &Readiness,
    metrics: &Metrics,
) -> StateRx {
    let (publisher, state) = Publisher::new(params, metrics);
    readiness.set(
        "config",
        Condition::Pending("waiting for the first list from the Kubernetes API server".into()),
    );
    let follow = Follow {
        store,
        publisher,
        readiness: readiness.clone(),
        gauges: SourceGauges::register(metrics),
        generation: source.generation(),
        status: source.status(),
        published: false,
    };
    tokio::spawn(source.run());
    tokio::spawn(follow.run());
    state
}

struct Follow {
    store: SharedStore,
    publisher: Publisher,
    readiness: Readiness,
    gauges: SourceGauges,
    generation: watch::Receiver<u64>,
    status: watch::Receiver<KubeStatus>,
    /// A complete model has been published at least once.
    published: bool,
}

impl Follow {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(SYNC_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = self.generation.changed() => if changed.is_err() { return },
                changed = self.status.changed() => if changed.is_err() { return },
                _ = tick.tick() => {
                    self.gauges.tick(&self.status.borrow());
                    continue;
                }
            }
            self.update();
        }
    }

    fn update(&mut self) {
        let status = self.status.borrow_and_update().clone();
        self.generation.borrow_and_update();
        let objects = {
            let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
            if status.synced && (!self.published || store.generation() != self.publisher.generation()) {
                self.publisher.publish(&store);
                self.published = true;
            }
            store.iter().count()
        };
        self.readiness.set("config", condition(&status, objects));
        self.gauges.show(&status);
    }
}

/// The readiness line of the configuration. Once the model is complete the daemon
/// stays ready through an API server outage (it serves its last known state, like
/// ztunnel without its control plane); the detail says so.
fn condition(s: &KubeStatus, objects: usize) -> Condition {
    let last_error = s
        .last_error
        .as_deref()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default();
    if !s.synced {
        return Condition::Pending(format!(
            "waiting for the first complete list from the Kubernetes API server{last_error}"
        ));
    }
    if s.connected {
        return Condition::Ok(format!("{objects} objects from the Kubernetes API server, connected"));
    }
    Condition::Ok(format!(
        "Kubernetes API server unreachable since {} (failing watches: {}): serving the last known state of {objects} objects{last_error}",
        rfc3339(s.since),
        s.failing.join(", "),
    ))
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// `mesh_config_source_*`: whether the API server is reachable, and since when the
/// model is stale.
#[derive(Clone, Default)]
struct SourceGauges {
    connected: Gauge,
    synced: Gauge,
    last_sync: Gauge<f64, AtomicU64>,
    checks: prometheus_client::metrics::counter::Counter,
}

impl SourceGauges {
    fn register(metrics: &Metrics) -> Self {
        let g = Self::default();
        metrics.register(|r| {
            r.register(
                "mesh_config_source_connected",
                "1 while every watch on the Kubernetes API server is up, 0 while the daemon serves its last known state",
                g.connected.clone(),
            );
            r.register(
                "mesh_config_source_synced",
                "1 once every watched kind has been listed completely at least once",
                g.synced.clone(),
            );
            r.register(
                "mesh_config_source_last_sync_timestamp_seconds",
                "Unix time at which the model last matched the Kubernetes API server (advances while connected)",
                g.last_sync.clone(),
            );
            r.register(
                "mesh_config_source_checks",
                "Times the daemon has evaluated its Kubernetes source's status (every second and on each change)",
                g.checks.clone(),
            );
        });
        g
    }

    fn show(&self, s: &KubeStatus) {
        self.connected.set(i64::from(s.connected));
        self.synced.set(i64::from(s.synced));
        self.tick(s);
    }

    fn tick(&self, s: &KubeStatus) {
        self.checks.inc();
        if s.connected && s.synced {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.last_sync.set(now.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests;
