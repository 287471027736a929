//! Local mode's pod view: the Pods of the cluster's configuration directory (the same
//! objects the node daemons read), re-polled before each answer.

use std::sync::Mutex;

use mesh_common::model::Resource;
use mesh_common::model::store::ConfigStore;
use mesh_common::source::dir::DirSource;

use super::{BoxFuture, Denial, PodView};

pub struct DirPods {
    inner: Mutex<(DirSource, ConfigStore)>,
}

impl DirPods {
    pub fn new(dir: std::path::PathBuf) -> Self {
        Self {
            inner: Mutex::new((DirSource::new(dir), ConfigStore::default())),
        }
    }

    fn with_pods<T>(&self, f: impl FnOnce(&[&mesh_common::model::k8s::Pod]) -> T) -> Result<T, Denial> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (source, store) = &mut *guard;
        source
            .poll(store, &|_| Ok(()))
            .map_err(|e| Denial::Unavailable(format!("reading the pods: {e}")))?;
        let pods: Vec<&mesh_common::model::k8s::Pod> = store
            .iter()
            .filter_map(|r| match r {
                Resource::Pod(p) => Some(p),
                _ => None,
            })
            .collect();
        Ok(f(&pods))
    }
}

impl PodView for DirPods {
    fn pod_node<'a>(&'a self, namespace: &'a str, pod: &'a str) -> BoxFuture<'a, Result<Option<String>, Denial>> {
        Box::pin(async move {
            self.with_pods(|pods| {
                pods.iter()
                    .find(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.name == pod)
                    .and_then(|p| p.spec.node_name.clone())
            })
        })
    }

    fn service_account_on_node<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<bool, Denial>> {
        Box::pin(async move {
            self.with_pods(|pods| {
                pods.iter().any(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace)
                        && p.service_account() == service_account
                        && p.spec.node_name.as_deref() == Some(node)
                })
            })
        })
    }
}
