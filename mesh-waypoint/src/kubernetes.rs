//! Kubernetes mode (`mesh-waypoint run --kubernetes`): the same Kubernetes source as
//! the node daemon (mesh-common's [`KubeSource`]) feeds the waypoint's [`Config`],
//! with the waypoint's own validation (routes and subsets that do not compile are
//! rejected alone and reported as Events). Pods of every node are read: a waypoint
//! routes to endpoints anywhere. The `config` readiness line ([`crate::readiness`])
//! turns ok once everything has been listed, and stays ok through an API server
//! outage with detail saying so.

use std::sync::Arc;

use mesh_common::source::kube::{KubeSource, KubeSourceConfig, KubeSourceError, Retry, SharedStore};
use mesh_common::source::runner::Feed;

use crate::config::Config;

/// Connects with the pod's service account and follows the API server into `config`
/// (mesh-common's source runner: a snapshot per change, once every kind is listed).
/// `instance` (the pod name) is the reporting instance of our Events. The ingress
/// gateway passes its namespace as `secrets_namespace`: its `credentialName` Secrets are
/// watched there (and only there); a waypoint passes `None` and reads no Secret. The
/// returned feed runs as long as it is held.
pub async fn start(
    config: Arc<Config>,
    instance: Option<String>,
    secrets_namespace: Option<String>,
) -> Result<Arc<Feed<Arc<Config>>>, KubeSourceError> {
    let store = SharedStore::default();
    let source_config = KubeSourceConfig {
        controller: "mesh.io/mesh-waypoint".into(),
        instance,
        record_events: true,
        retry: Retry::Default,
        secrets_namespace,
    };
    config.follow_source("the Kubernetes API server".into());
    let source = KubeSource::connect(source_config, store.clone(), Arc::new(crate::config::validate)).await?;
    Ok(Feed::start(source, store, config))
}
