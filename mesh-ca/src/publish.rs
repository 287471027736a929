//! Kubernetes mode: the root certificate alone, in a ConfigMap of every namespace
//! (`mesh-ca-root-cert`, key `root-cert.pem`, as istiod publishes `istio-ca-root-cert`),
//! so clients can trust the mesh root without any access to the CA Secret. Server-side
//! apply, re-applied every `--root-configmap-resync-secs` (new namespaces, edits).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

pub const ROOT_KEY: &str = "root-cert.pem";
const FIELD_MANAGER: &str = "mesh-ca";

/// Publishes `root_pem` as ConfigMap `name` in every namespace, again every `every`.
pub async fn run(client: Client, name: String, root_pem: String, every: Duration) {
    loop {
        if let Err(e) = publish_all(&client, &name, &root_pem).await {
            tracing::warn!(configmap = %name, "publishing the root certificate failed (retrying in {every:?}): {e}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn publish_all(client: &Client, name: &str, root_pem: &str) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces.list(&ListParams::default()).await?.items {
        let Some(ns) = ns.metadata.name else { continue };
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".into(), "mesh".into())])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(ROOT_KEY.to_owned(), root_pem.to_owned())])),
            ..Default::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = api
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&cm))
            .await
        {
            tracing::warn!(configmap = %format!("{ns}/{name}"), "cannot publish the root certificate: {e}");
        }
    }
    Ok(())
}
