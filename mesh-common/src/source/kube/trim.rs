//! Drops what the mesh never reads from a watched object before it is buffered or
//! decoded: the node daemon watches every pod of the cluster, and a pod as the API
//! server returns it (managedFields, container specs, volumes, statuses) is several
//! kilobytes of which the model keeps a few hundred bytes.

use kube::api::DynamicObject;
use serde_json::{Map, Value};

/// Annotation domains kept on pods: the mesh's own (local-mode placement) and Istio's
/// (`istio.io`, `*.istio.io`); nothing else on a pod is read.
const KEPT_POD_ANNOTATION_DOMAINS: &[&str] = &["mesh.io", "istio.io"];
/// Written by `kubectl apply`: a full copy of the object, never read.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Trims `obj` of kind `kind` in place.
pub fn trim(kind: &str, obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    if kind == "Pod" {
        trim_pod(obj);
    }
}

fn trim_pod(obj: &mut DynamicObject) {
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.retain(|k, _| kept_pod_annotation(k));
    }
    obj.metadata.owner_references = None;
    obj.metadata.finalizers = None;
    let Some(data) = obj.data.as_object_mut() else { return };
    let spec = data.get("spec").map(pod_spec);
    let status = data.get("status").map(pod_status);
    data.clear();
    if let Some(spec) = spec {
        data.insert("spec".into(), spec);
    }
    if let Some(status) = status {
        data.insert("status".into(), status);
    }
}

fn kept_pod_annotation(key: &str) -> bool {
    let Some((domain, _)) = key.split_once('/') else {
        return false;
    };
    KEPT_POD_ANNOTATION_DOMAINS
        .iter()
        .any(|d| domain == *d || domain.strip_suffix(d).is_some_and(|sub| sub.ends_with('.')))
}

/// `nodeName`, `serviceAccountName` and the named container ports.
fn pod_spec(spec: &Value) -> Value {
    let mut out = pick(spec, &["nodeName", "serviceAccountName"]);
    let containers: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let ports: Vec<Value> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p.get("name").is_some())
                .map(|p| Value::Object(pick(p, &["name", "containerPort"])))
                .collect();
            serde_json::json!({ "ports": ports })
        })
        .collect();
    if containers
        .iter()
        .any(|c| c["ports"].as_array().is_some_and(|p| !p.is_empty()))
    {
        out.insert("containers".into(), Value::Array(containers));
    }
    Value::Object(out)
}

/// Addresses, phase and the `Ready` condition.
fn pod_status(status: &Value) -> Value {
    let mut out = pick(status, &["podIP", "podIPs", "phase"]);
    let ready: Vec<Value> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "Ready")
        .map(|c| Value::Object(pick(c, &["type", "status"])))
        .collect();
    if !ready.is_empty() {
        out.insert("conditions".into(), Value::Array(ready));
    }
    Value::Object(out)
}

fn pick(v: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| Some(((*k).to_owned(), v.get(*k)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Resource;
    use crate::model::k8s::TargetPort;
    use serde_json::json;

    /// A pod as `kubectl get pod -o json` shows it (abridged, but every kind of field).
    fn full_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "reviews-v2-7d79d5bd5d-x8x8f", "namespace": "bookinfo", "uid": "u-1",
                "resourceVersion": "1234", "labels": {"app": "reviews", "version": "v2"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}",
                    "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
                    "mesh.io/local-netns": "/run/netns/x",
                    "ambient.istio.io/redirection": "enabled"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "o"}],
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {
                "nodeName": "node-b", "serviceAccountName": "bookinfo-reviews",
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "containers": [{
                    "name": "reviews", "image": "docker.io/istio/examples-bookinfo-reviews-v2:1.20",
                    "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                    "ports": [{"name": "http", "containerPort": 9080, "protocol": "TCP"}, {"containerPort": 9443}]
                }]
            },
            "status": {
                "phase": "Running", "podIP": "fd00::7",
                "podIPs": [{"ip": "fd00::7"}, {"ip": "198.18.2.7"}],
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ],
                "containerStatuses": [{"name": "reviews", "ready": true, "restartCount": 0, "image": "x"}]
            }
        })
    }

    #[test]
    fn a_trimmed_pod_keeps_what_the_model_reads_and_nothing_else() {
        let mut obj: DynamicObject = serde_json::from_value(full_pod()).unwrap();
        let before = serde_json::to_string(&obj).unwrap().len();
        trim("Pod", &mut obj);
        let text = serde_json::to_string(&obj).unwrap();
        for gone in [
            "managedFields",
            "last-applied",
            "restartedAt",
            "ownerReferences",
            "volumes",
            "image",
            "env",
            "containerStatuses",
            "Initialized",
            "lastTransitionTime",
            "9443",
        ] {
            assert!(!text.contains(gone), "{gone} kept: {text}");
        }
        assert!(text.len() * 2 < before, "{} of {before} bytes kept", text.len());
        let value = serde_json::to_value(&obj).unwrap();
        let Ok(Resource::Pod(pod)) = Resource::from_value("t", serde_yaml::to_value(value).unwrap()) else {
            panic!("trimmed pod does not decode: {text}")
        };
        assert_eq!(pod.ipv4(), Some("198.18.2.7".parse().unwrap()));
        assert_eq!(pod.spec.node_name.as_deref(), Some("node-b"));
        assert_eq!(pod.service_account(), "bookinfo-reviews");
        assert!(pod.is_ready());
        assert_eq!(pod.metadata.labels["version"], "v2");
        assert_eq!(TargetPort::Name("http".into()).on(&pod), Some(9080));
        let kept: Vec<&str> = pod.metadata.annotations.keys().map(String::as_str).collect();
        assert_eq!(kept, ["ambient.istio.io/redirection", "mesh.io/local-netns"]);
    }

    #[test]
    fn a_pod_without_an_ip_yet_trims_and_decodes() {
        let mut obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pending", "namespace": "a"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        trim("Pod", &mut obj);
        let value = serde_yaml::to_value(serde_json::to_value(&obj).unwrap()).unwrap();
        let Ok(Resource::Pod(pod)) = Resource::from_value("t", value) else {
            panic!("pending pod rejected")
        };
        assert_eq!(pod.ipv4(), None);
    }

    #[test]
    fn other_kinds_lose_only_managed_fields_and_the_last_applied_copy() {
        let mut obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "a", "annotations": {LAST_APPLIED: "{}", "x": "y"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"clusterIP": "None", "selector": {"app": "s"}}
        }))
        .unwrap();
        trim("Service", &mut obj);
        assert!(obj.metadata.managed_fields.is_none());
        let annotations = obj.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["x"]);
        assert_eq!(obj.data["spec"]["selector"]["app"], "s");
    }
    /// An EndpointSlice as the EndpointSlice controller writes it, with `n` endpoints.
    fn endpoint_slice(n: usize) -> Value {
        let endpoints: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "addresses": [format!("10.244.{}.{}", 1 + i / 250, 1 + i % 250)],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": format!("worker-{}", i % 3),
                    "targetRef": {"kind": "Pod", "name": format!("reviews-v2-7d79d5bd5d-{i:05x}"),
                                  "namespace": "bookinfo", "uid": format!("9a0c2d1e-7b3f-4c6a-8e5d-{i:012x}")}
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {
                "name": "reviews-6xk2p", "generateName": "reviews-", "namespace": "bookinfo",
                "resourceVersion": "1834480", "uid": "0e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918",
                "creationTimestamp": "2026-11-20T09:10:00Z", "generation": 42,
                "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                           "kubernetes.io/service-name": "reviews", "app": "reviews", "service": "reviews"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-11-20T09:14:09Z"},
                "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": true, "controller": true,
                                     "kind": "Service", "name": "reviews", "uid": "7c6b5a49-3827-4160-8f9e-0d1c2b3a4958"}],
                "managedFields": [{"apiVersion": "discovery.k8s.io/v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
                                   "operation": "Update", "time": "2026-11-20T09:14:09Z",
                                   "fieldsV1": {"f:addressType": {}, "f:endpoints": {}, "f:ports": {},
                                                "f:metadata": {"f:annotations": {".": {}, "f:endpoints.kubernetes.io/last-change-trigger-time": {}},
                                                               "f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}}}}]
            },
            "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
            "endpoints": endpoints
        })
    }

    /// README "Why every pod, and no EndpointSlices": what each choice costs per pod and
    /// per change, on a pod as a cluster returns it (testdata/pod-full.json: a Bookinfo
    /// Deployment pod with its managedFields, container spec, volumes and statuses).
    #[test]
    fn watch_cost_of_every_pod_vs_endpoint_slices() {
        let full: Value = serde_json::from_str(include_str!("testdata/pod-full.json")).unwrap();
        let full_bytes = full.to_string().len();
        let mut obj: DynamicObject = serde_json::from_value(full).unwrap();
        trim("Pod", &mut obj);
        let trimmed = serde_json::to_value(&obj).unwrap();
        let trimmed_bytes = trimmed.to_string().len();
        let slice = endpoint_slice(100);
        let slice_bytes = slice.to_string().len();
        let entry_bytes = slice["endpoints"][0].to_string().len();
        println!("FIGURE pod as served: {full_bytes} B; kept after trim: {trimmed_bytes} B");
        println!("FIGURE EndpointSlice of 100 endpoints: {slice_bytes} B ({entry_bytes} B per endpoint)");
        let small_bytes = endpoint_slice(10).to_string().len();
        println!(
            "FIGURE one pod turns ready: the every-pod watch sends {full_bytes} B to each daemon; \
             EndpointSlices resend the whole slice: {small_bytes} B (10 endpoints) to {slice_bytes} B (100)"
        );
        // The trimmed pod is what every daemon keeps per pod of the cluster.
        assert!(trimmed_bytes * 5 < full_bytes, "{trimmed_bytes} of {full_bytes} B kept");
        // What decides: the endpoint carries no identity, the pod does. A daemon that
        // knew remote pods only through slices could not name the peer's SPIFFE id.
        let entry = slice["endpoints"][0].to_string();
        assert!(!entry.contains("serviceAccount"), "{entry}");
        assert_eq!(trimmed["spec"]["serviceAccountName"], "bookinfo-reviews");
    }
}
