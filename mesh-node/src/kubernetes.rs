//! Kubernetes mode (`mesh-node run --kubernetes`): the API server as configuration
//! source. mesh-common's [`KubeSource`] watches it into a shared store, followed by the
//! same feed and [`Publisher`] as the directory source ([`crate::config`]); nothing is
//! published before every kind has been listed once.

use std::sync::Arc;

use anyhow::Context;
use mesh_common::source::kube::{KubeSource, KubeSourceConfig, SharedStore, SharedValidator};

use crate::config::{Publisher, StateRx};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::state::StateParams;

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
    let publisher = Publisher::new(params, "the Kubernetes API server".into(), readiness, metrics);
    crate::config::start(source, store, publisher)
}

#[cfg(test)]
mod tests;
