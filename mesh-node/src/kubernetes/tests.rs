//! The daemon's Kubernetes mode against a replayed API server (mesh-common's
//! `kube-replay`: the real kube client and kube-runtime watcher over scripted HTTP
//! responses). Checks what the daemon acts on: the published `MeshState` (which pods
//! capture enrolls), readiness detail and metrics.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mesh_common::source::kube::Retry;
use mesh_common::source::kube::replay::{End, Replay, bookmark, event, gone, item, objects, path_of, with_rv};
use serde_json::{Value, json};

use super::*;
use crate::state::MeshState;

const DEADLINE: Duration = Duration::from_secs(20);
const NODE: &str = "node-a";

/// Two namespaces, pods of this node in both, a Service and Istio objects.
const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1, namespace: bookinfo, uid: 0b5e7c1e-0000-4000-8000-00000000000a, labels: {app: productpage}}
spec: {nodeName: node-a, serviceAccountName: bookinfo-productpage}
status: {podIP: 198.18.1.10, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews}}
spec: {nodeName: node-a}
status: {podIP: 198.18.1.11, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: tools-0, namespace: other, labels: {app: tools}}
spec: {nodeName: node-a}
status: {podIP: 198.18.1.20, phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: bookinfo}
spec: {clusterIP: 198.19.0.10, selector: {app: productpage}, ports: [{port: 9080}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bookinfo}
spec: {mtls: {mode: STRICT}}
";

fn find(all: &[Value], kind: &str, name: &str) -> Value {
    all.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{kind} {name}"))
}

fn annotated(ns: &Value) -> Value {
    let mut ns = ns.clone();
    ns["metadata"]["annotations"] = json!({"mesh.io/dataplane-mode": "ambient"});
    ns
}

struct Daemon {
    state: StateRx,
    readiness: Readiness,
    metrics: Metrics,
}

fn start(r: &Replay) -> Daemon {
    let store = SharedStore::default();
    let mut config = KubeSourceConfig::node(NODE);
    config.retry = Retry::Fixed(Duration::from_millis(20));
    let source = KubeSource::new(r.client_builder(), config, store.clone(), Arc::new(|_| Ok(())));
    let (readiness, metrics) = (Readiness::default(), Metrics::default());
    let state = spawn(
        source,
        store,
        crate::state::StateParams::new(NODE),
        &readiness,
        &metrics,
    );
    Daemon {
        state,
        readiness,
        metrics,
    }
}

impl Daemon {
    fn now(&self) -> Arc<MeshState> {
        self.state.borrow().clone()
    }

    /// What capture would enroll on this node.
    fn enrolled(&self) -> Vec<String> {
        let mut pods: Vec<String> = self.now().local_enrolled().map(|w| w.key()).collect();
        pods.sort();
        pods
    }

    fn workloads(&self) -> Vec<String> {
        let mut pods: Vec<String> = self.now().view.workloads().map(|w| w.key()).collect();
        pods.sort();
        pods
    }

    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    fn config_line(&self) -> String {
        self.readiness
            .report()
            .lines()
            .find(|l| l.starts_with("config:"))
            .unwrap_or_default()
            .to_owned()
    }
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let polled = tokio::time::timeout(DEADLINE, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if let Some(v) = f() {
                return v;
            }
        }
    });
    polled.await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Annotating a namespace enrolls exactly its pods on this node, removing the
/// annotation un-enrolls them, and the model is the API's final state after a 410
/// Gone, a dropped stream and a closed stream.
#[tokio::test]
async fn enrollment_follows_the_namespace_annotation_through_gone_and_dropped_streams() {
    let all = objects(CLUSTER);
    let (bookinfo, other) = (find(&all, "Namespace", "bookinfo"), find(&all, "Namespace", "other"));
    let (productpage, reviews, tools) = (
        find(&all, "Pod", "productpage-v1"),
        find(&all, "Pod", "reviews-v1"),
        find(&all, "Pod", "tools-0"),
    );
    let mut ratings = reviews.clone();
    ratings["metadata"]["name"] = json!("ratings-v1");
    ratings["status"]["podIP"] = json!("198.18.1.12");
    let scratch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}});

    let r = Replay::default();
    r.istio_groups();
    let (ns, pods) = (path_of("Namespace"), path_of("Pod"));
    // Namespaces: a watch ending in 410 Gone (scratch deleted meanwhile), a relist, a
    // watch that breaks mid-stream, then a live watch the test writes to.
    r.list(
        &ns,
        "10",
        vec![item(&bookinfo, "3"), item(&other, "4"), item(&scratch, "5")],
    );
    r.watch(&ns, vec![bookmark("v1", "Namespace", "12"), gone()], End::Close);
    r.list(&ns, "20", vec![item(&bookinfo, "3"), item(&other, "4")]);
    r.watch(&ns, vec![event("ADDED", with_rv(&scratch, "21"))], End::Drop);
    let live = r.live_watch(&ns, vec![event("DELETED", with_rv(&scratch, "22"))]);
    // Pods: one added and one deleted on a watch the server then closes.
    r.list(
        &pods,
        "10",
        vec![item(&productpage, "6"), item(&reviews, "7"), item(&tools, "8")],
    );
    r.watch(
        &pods,
        vec![
            event("ADDED", with_rv(&ratings, "11")),
            event("DELETED", with_rv(&reviews, "12")),
        ],
        End::Close,
    );
    r.list_all(&all, &["Namespace", "Pod"]);

    let d = start(&r);
    let final_pods = strings(&["bookinfo/productpage-v1", "bookinfo/ratings-v1", "other/tools-0"]);
    until("the API's final state", || {
        let namespaces: Vec<String> = d.now().view.namespaces().map(|(n, _)| n.clone()).collect();
        (namespaces == strings(&["bookinfo", "other"]) && d.workloads() == final_pods).then_some(())
    })
    .await;
    let lists = r
        .requests("GET", &ns)
        .into_iter()
        .filter(|s| !s.query.contains("watch=true"))
        .count();
    assert_eq!(lists, 2, "the 410 Gone made the watcher relist");
    let pod_requests = r.requests("GET", &pods);
    assert!(
        pod_requests.iter().all(|s| !s.query.contains("fieldSelector")),
        "every pod of the cluster is watched, not only this node's: {pod_requests:?}"
    );
    assert!(
        d.enrolled().is_empty(),
        "nothing enrolled before the annotation: {:?}",
        d.enrolled()
    );
    assert!(d.readiness.is_ready(), "{}", d.readiness.report());
    assert!(d.config_line().contains("connected"), "{}", d.config_line());

    live.send(event("MODIFIED", with_rv(&annotated(&bookinfo), "30")))
        .unwrap();
    let bookinfo_pods = strings(&["bookinfo/productpage-v1", "bookinfo/ratings-v1"]);
    until("the annotation enrolls bookinfo's pods of this node", || {
        (d.enrolled() == bookinfo_pods).then_some(())
    })
    .await;

    live.send(event("MODIFIED", with_rv(&bookinfo, "31"))).unwrap();
    until("removing the annotation un-enrolls them", || {
        d.enrolled().is_empty().then_some(())
    })
    .await;

    // Istio's label works too, and enrolls only that namespace.
    let mut istio_labelled = other.clone();
    istio_labelled["metadata"]["labels"] = json!({"istio.io/dataplane-mode": "ambient"});
    live.send(event("MODIFIED", with_rv(&istio_labelled, "32"))).unwrap();
    let other_pods = strings(&["other/tools-0"]);
    until("istio.io/dataplane-mode enrolls other's pod", || {
        (d.enrolled() == other_pods).then_some(())
    })
    .await;
}

/// While the API server is unreachable the daemon keeps its last known state and
/// stays ready, and readiness detail and metrics say it is disconnected.
#[tokio::test]
async fn api_server_outage_keeps_the_last_known_state_and_says_so() {
    let all = objects(CLUSTER);
    let r = Replay::default();
    r.istio_groups();
    let enrolled_ns = annotated(&find(&all, "Namespace", "bookinfo"));
    let live = r.live_watch(&path_of("Namespace"), Vec::new());
    r.list(
        &path_of("Namespace"),
        "5",
        vec![item(&enrolled_ns, "3"), item(&find(&all, "Namespace", "other"), "4")],
    );
    r.list_all(&all, &["Namespace"]);

    let d = start(&r);
    let before = strings(&["bookinfo/productpage-v1", "bookinfo/reviews-v1"]);
    until("synced and enrolled", || {
        (d.enrolled() == before && d.metric("mesh_config_source_connected") == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(d.metric("mesh_config_source_synced"), Some(1.0));
    let synced_at = d
        .metric("mesh_config_source_last_sync_timestamp_seconds")
        .expect("last sync metric");
    assert!(synced_at > 1.7e9, "a Unix time: {synced_at}");

    r.outage.store(true, Ordering::SeqCst);
    drop(live); // the watch connection ends; every reconnect now fails
    until("the metric shows the outage", || {
        (d.metric("mesh_config_source_connected") == Some(0.0)).then_some(())
    })
    .await;
    let line = until("readiness detail shows the outage", || {
        let line = d.config_line();
        line.contains("unreachable").then_some(line)
    })
    .await;
    assert!(
        line.contains("serving the last known state") && line.contains("Namespace"),
        "{line}"
    );
    assert!(
        d.readiness.is_ready(),
        "a daemon serving its last known state stays ready: {}",
        d.readiness.report()
    );
    assert_eq!(d.enrolled(), before, "the outage un-enrolled nothing");
    let frozen = d.metric("mesh_config_source_last_sync_timestamp_seconds");
    // Two status checks must run during the outage; neither may advance the last sync.
    let checked = d.metric("mesh_config_source_checks_total").unwrap_or(0.0);
    until("two status checks during the outage", || {
        (d.metric("mesh_config_source_checks_total") >= Some(checked + 2.0)).then_some(())
    })
    .await;
    assert_eq!(
        d.metric("mesh_config_source_last_sync_timestamp_seconds"),
        frozen,
        "last sync advanced during the outage"
    );

    r.outage.store(false, Ordering::SeqCst);
    until("reconnected", || {
        (d.metric("mesh_config_source_connected") == Some(1.0)).then_some(())
    })
    .await;
    until("readiness detail shows it", || {
        d.config_line().contains("connected").then_some(())
    })
    .await;
    assert_eq!(d.enrolled(), before);
}

/// Unreachable from the start: not ready, nothing published (capture must not start
/// from an empty model), and the error is shown.
#[tokio::test]
async fn unreachable_at_start_is_pending_with_the_error_and_publishes_nothing() {
    let r = Replay::default();
    r.outage.store(true, Ordering::SeqCst);
    let d = start(&r);
    let line = until("the error in readiness detail", || {
        let line = d.config_line();
        line.contains("last error").then_some(line)
    })
    .await;
    assert!(
        line.starts_with("config: pending (waiting for the first complete list"),
        "{line}"
    );
    assert!(
        line.contains("503") || line.contains("outage") || line.contains("Service"),
        "{line}"
    );
    assert!(!d.readiness.is_ready());
    assert_eq!(d.metric("mesh_config_source_connected"), Some(0.0));
    assert_eq!(d.metric("mesh_config_source_synced"), Some(0.0));
    assert!(
        !d.state.has_changed().unwrap_or(true),
        "a state was published before the first complete list"
    );
}

/// Log lines go to a buffer the test reads (tracing's thread-local default: the
/// current-thread test runtime runs every task on this thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// An invalid Istio object is skipped, logged with kind/namespace/name/field,
/// reported as a Warning Event on the object, and listed in the daemon's state;
/// everything else is in force.
#[tokio::test]
async fn invalid_crd_object_is_skipped_logged_and_reported() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut all = objects(CLUSTER);
    let mut bad = find(&all, "PeerAuthentication", "default");
    bad["metadata"]["name"] = json!("bad-mode");
    bad["spec"]["mtls"]["mode"] = json!("STRICTEST");
    all.push(bad);
    let r = Replay::default();
    r.istio_groups();
    r.list_all(&all, &[]);
    let d = start(&r);

    let errors = until("the state lists the rejection", || {
        let e = d.now().config_errors.clone();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("PeerAuthentication bookinfo/bad-mode: spec.mtls.mode:")),
        "{errors:?}"
    );
    let policies = serde_json::to_string(&d.now().peer_authn).unwrap_or_default();
    assert!(
        policies.contains("default") && !policies.contains("bad-mode"),
        "{policies}"
    );
    assert_eq!(d.workloads().len(), 3, "every other object is in force");

    let events = until("a Warning Event on the object", || {
        let e = r.requests("POST", "/apis/events.k8s.io/v1/namespaces/bookinfo/events");
        (!e.is_empty()).then_some(e)
    })
    .await;
    let body: Value = serde_json::from_str(&events[0].body).unwrap_or_default();
    assert_eq!(
        (body["type"].as_str(), body["reason"].as_str()),
        (Some("Warning"), Some("InvalidConfiguration")),
        "{body}"
    );
    assert_eq!(body["regarding"]["kind"], "PeerAuthentication");
    assert_eq!(body["regarding"]["name"], "bad-mode");
    assert!(
        body["note"].as_str().unwrap_or_default().contains("spec.mtls.mode"),
        "{body}"
    );

    let log = logs.text();
    let line = log
        .lines()
        .find(|l| l.contains("rejected Kubernetes object"))
        .unwrap_or_else(|| panic!("no log line in:\n{log}"));
    for part in [
        r#"kind="PeerAuthentication""#,
        r#"namespace="bookinfo""#,
        r#"name="bad-mode""#,
        "spec.mtls.mode",
    ] {
        assert!(line.contains(part), "{part:?} missing from {line}");
    }
}

/// Another node's pods, as the API server returns them to a daemon on node-a: the
/// daemon watches every pod, so traffic to them is tunnelled (it used to leave as plain
/// TCP: the daemon only knew its own node's pods). Also a Service whose endpoints are
/// all remote (named targetPort), a waypoint on the other node, a headless Service, a
/// dual-stack pod and a pod without an IP yet, none of them rejected.
const REMOTE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: bookinfo, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1, namespace: bookinfo, labels: {app: productpage}}
spec: {nodeName: node-a, serviceAccountName: bookinfo-productpage}
status: {podIP: 198.18.1.10, phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: bookinfo, labels: {app: reviews}}
spec:
  nodeName: node-b
  serviceAccountName: bookinfo-reviews
  containers: [{name: reviews, image: x, ports: [{name: http-web, containerPort: 9081}]}]
status: {podIP: 198.18.2.11, phase: Running, conditions: [{type: Ready, status: 'True'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: bookinfo, labels: {app: reviews}}
spec:
  nodeName: node-c
  serviceAccountName: bookinfo-reviews
  containers: [{name: reviews, image: x, ports: [{name: http-web, containerPort: 9082}]}]
status: {podIP: 'fd00::12', podIPs: [{ip: 'fd00::12'}, {ip: 198.18.3.12}], phase: Running}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v3, namespace: bookinfo, labels: {app: reviews}}
spec: {nodeName: node-c, serviceAccountName: bookinfo-reviews}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-0, namespace: bookinfo, labels: {app: waypoint, gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: node-b, serviceAccountName: waypoint}
status: {podIP: 198.18.2.20, phase: Running}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: bookinfo}
spec: {clusterIP: 198.19.0.11, selector: {app: reviews}, ports: [{port: 9080, targetPort: http-web}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-headless, namespace: bookinfo}
spec: {clusterIP: None, selector: {app: reviews}, ports: [{port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: bookinfo}
spec: {clusterIP: 198.19.0.20, selector: {app: waypoint}, ports: [{port: 15008}]}
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: bookinfo, labels: {istio.io/use-waypoint: waypoint}}
spec: {clusterIP: 198.19.0.12, selector: {app: reviews}, ports: [{port: 9080}]}
";

#[tokio::test]
async fn other_nodes_pods_resolve_to_a_tunnel_never_direct() {
    use crate::proxy::resolve::{Resolver, Route};
    use std::net::SocketAddrV4;

    let all = objects(REMOTE);
    let r = Replay::default();
    r.istio_groups();
    r.list_all(&all, &[]);
    let d = start(&r);
    let state = until("every pod with an IPv4 address is a workload", || {
        (d.workloads().len() == 4).then(|| d.now())
    })
    .await;
    assert!(state.config_errors.is_empty(), "{:?}", state.config_errors);
    assert_eq!(
        d.enrolled(),
        strings(&["bookinfo/productpage-v1"]),
        "capture stays on this node"
    );

    let resolver = Resolver::default();
    let addr = |s: &str| s.parse::<SocketAddrV4>().expect("address");
    let tunnel = |dst: &str| match resolver.resolve(&state, addr(dst)) {
        Some(Route::Tunnel {
            hbone,
            identity,
            authority,
            ..
        }) => (hbone, identity.to_string(), authority),
        other => panic!("{dst}: {other:?}, expected an HBONE tunnel"),
    };

    let (hbone, identity, authority) = tunnel("198.18.2.11:9081");
    assert_eq!(hbone, addr("198.18.2.11:15008"));
    assert_eq!(identity, "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews");
    assert_eq!(authority, addr("198.18.2.11:9081"));
    let (hbone, _, _) = tunnel("198.18.3.12:9082");
    assert_eq!(hbone, addr("198.18.3.12:15008"), "dual-stack pod by its IPv4 address");

    // Only remote endpoints: load-balanced across both, each at its own named port.
    let mut seen: Vec<SocketAddrV4> = (0..4).map(|_| tunnel("198.19.0.11:9080").2).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, [addr("198.18.2.11:9081"), addr("198.18.3.12:9082")]);

    // The waypoint on node-b serves a Service of this node's namespace.
    let (hbone, identity, authority) = tunnel("198.19.0.12:9080");
    assert_eq!(hbone, addr("198.18.2.20:15008"));
    assert_eq!(identity, "spiffe://cluster.local/ns/bookinfo/sa/waypoint");
    assert_eq!(authority, addr("198.19.0.12:9080"));
}
