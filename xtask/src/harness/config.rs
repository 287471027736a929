//! The topology as YAML for a local-mode daemon: Namespaces (with annotations),
//! Nodes and Pods (with `status.podIP` and annotations saying where the pod's
//! netns and cgroup are: mesh-common's `LOCAL_NETNS_ANNOTATION` (the
//! `/run/netns/...` path) and `LOCAL_CGROUP_ANNOTATION` (the absolute cgroup2
//! directory); Nodes carry the same two plus `mesh.io/local-ip`).

use std::path::{Path, PathBuf};

use mesh_common::model::ObjectMeta;
use mesh_common::model::k8s::{
    LOCAL_CGROUP_ANNOTATION, LOCAL_NETNS_ANNOTATION, Node, Pod, PodCondition, PodSpec, PodStatus,
};
use serde::Serialize;

use super::HarnessError;
use super::cluster::{Cluster, NodeInfo, PodInfo};
use super::topology::LOCAL_IP_ANNOTATION;

/// File name [`write`] uses inside the config directory.
pub const TOPOLOGY_FILE: &str = "00-harness-topology.yaml";

/// Writes `dir/TOPOLOGY_FILE` atomically (temp file + rename, so a daemon watching
/// the directory never reads half a file) and returns its path.
pub fn write(cluster: &Cluster, dir: &Path) -> Result<PathBuf, HarnessError> {
    let yaml = render(cluster)?;
    std::fs::create_dir_all(dir).map_err(|e| HarnessError::io("create", dir, e))?;
    let path = dir.join(TOPOLOGY_FILE);
    let tmp = dir.join(format!(".{TOPOLOGY_FILE}.tmp"));
    std::fs::write(&tmp, yaml).map_err(|e| HarnessError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| HarnessError::io("rename into place", &path, e))?;
    Ok(path)
}

/// The multi-document YAML [`write`] writes.
pub fn render(cluster: &Cluster) -> Result<String, HarnessError> {
    let mut docs = Vec::new();
    for ns in cluster.namespaces() {
        docs.push(document("Namespace", &ns)?);
    }
    for node in cluster.nodes() {
        docs.push(document("Node", &node_object(&node))?);
    }
    for pod in cluster.pods() {
        docs.push(document("Pod", &pod_object(&pod))?);
    }
    Ok(docs.join("---\n"))
}

fn document(kind: &str, object: &impl Serialize) -> Result<String, HarnessError> {
    let mut value = serde_yaml::to_value(object)
        .map_err(|e| HarnessError::sys(format!("serializing a {kind}"), std::io::Error::other(e)))?;
    if let serde_yaml::Value::Mapping(map) = &mut value {
        let mut head = serde_yaml::Mapping::new();
        head.insert("apiVersion".into(), "v1".into());
        head.insert("kind".into(), kind.into());
        head.extend(std::mem::take(map));
        *map = head;
    }
    serde_yaml::to_string(&value)
        .map_err(|e| HarnessError::sys(format!("serializing a {kind}"), std::io::Error::other(e)))
}

fn node_object(node: &NodeInfo) -> Node {
    let mut metadata = ObjectMeta {
        name: node.name.clone(),
        labels: node.labels.clone(),
        ..ObjectMeta::default()
    };
    let a = &mut metadata.annotations;
    a.insert(LOCAL_NETNS_ANNOTATION.into(), node.netns_path.display().to_string());
    a.insert(LOCAL_CGROUP_ANNOTATION.into(), node.cgroup.display().to_string());
    a.insert(LOCAL_IP_ANNOTATION.into(), node.ip.to_string());
    Node { metadata }
}

fn pod_object(pod: &PodInfo) -> Pod {
    let mut metadata = ObjectMeta {
        name: pod.name.clone(),
        namespace: Some(pod.namespace.clone()),
        labels: pod.labels.clone(),
        annotations: pod.annotations.clone(),
        ..ObjectMeta::default()
    };
    metadata
        .annotations
        .insert(LOCAL_NETNS_ANNOTATION.into(), pod.netns_path.display().to_string());
    metadata
        .annotations
        .insert(LOCAL_CGROUP_ANNOTATION.into(), pod.cgroup.display().to_string());
    Pod {
        metadata,
        spec: PodSpec {
            node_name: Some(pod.node.clone()),
            service_account_name: Some(pod.service_account.clone()),
            ..PodSpec::default()
        },
        status: PodStatus {
            pod_ip: Some(pod.ip.into()),
            phase: Some("Running".into()),
            conditions: vec![PodCondition {
                type_: "Ready".into(),
                status: if pod.ready { "True" } else { "False" }.into(),
            }],
            ..PodStatus::default()
        },
    }
}
