//! The real kube-runtime watcher against a replayed API server ([`super::replay`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::replay::{End, Replay, bookmark, event, gone, item, objects, path_of, with_rv};
use super::*;
use crate::model::enrollment::is_enrolled;
use crate::model::store::ConfigStore;
use crate::model::{ConfigError, FieldError, ObjectRef, Resource};
use crate::source::dir::DirSource;

const BOOKINFO: &str = include_str!("testdata/bookinfo.yaml");
const DEADLINE: Duration = Duration::from_secs(20);

fn config(node: Option<&str>) -> KubeSourceConfig {
    KubeSourceConfig {
        controller: "mesh.io/mesh-node".into(),
        instance: node.map(str::to_owned),
        record_events: true,
        retry: Retry::Fixed(Duration::from_millis(20)),
        secrets_namespace: None,
    }
}

fn accept_all() -> SharedValidator {
    Arc::new(|_| Ok(()))
}

fn replay() -> Replay {
    let r = Replay::default();
    r.istio_groups();
    r
}

struct Running {
    store: SharedStore,
    status: watch::Receiver<SourceStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(r: &Replay, node: Option<&str>, validator: SharedValidator) -> Running {
    let store = SharedStore::default();
    let source = KubeSource::new(r.client_builder(), config(node), store.clone(), validator);
    let status = source.status();
    Running {
        store,
        status,
        task: tokio::spawn(source.run()),
    }
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let poll = async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if let Some(v) = f() {
                return v;
            }
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn enrolled(run: &Running, node: &str) -> Vec<String> {
    let store = run.store.lock().unwrap();
    let namespace = |name: &str| store.get(&ObjectRef::new("Namespace", None, name)).cloned();
    store
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p) if p.spec.node_name.as_deref() == Some(node) => {
                let ns = match namespace(p.metadata.namespace_or_default()) {
                    Some(Resource::Namespace(ns)) => Some(ns),
                    _ => None,
                };
                is_enrolled(p, ns.as_ref())
                    .then(|| format!("{}/{}", p.metadata.namespace_or_default(), p.metadata.name))
            }
            _ => None,
        })
        .collect()
}

fn refs(run: &Running) -> Vec<String> {
    run.store
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.object_ref().to_string())
        .collect()
}

#[tokio::test]
async fn directory_and_api_server_produce_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bookinfo.yaml"), BOOKINFO).unwrap();
    let mut from_dir = ConfigStore::default();
    let report = DirSource::new(dir.path()).poll(&mut from_dir, &|_| Ok(())).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    let r = replay();
    r.list_all(&objects(BOOKINFO), &[]);
    let run = start(&r, None, accept_all());
    until("initial sync", || run.status.borrow().synced.then_some(())).await;

    let dir_model: Vec<Resource> = from_dir.iter().cloned().collect();
    let kube_model: Vec<Resource> = run.store.lock().unwrap().iter().cloned().collect();
    assert_eq!(dir_model.len(), 11);
    assert_eq!(kube_model, dir_model);
    assert!(run.status.borrow().connected);
}

/// The node daemon's view through 410 Gone, a dropped stream, a closed stream and
/// enrollment toggled by annotating the namespace.
#[tokio::test]
async fn converges_through_gone_and_dropped_streams_and_follows_enrollment() {
    let all = objects(BOOKINFO);
    let find = |kind: &str, name: &str| {
        all.iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let mut bookinfo_plain = find("Namespace", "bookinfo");
    bookinfo_plain["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let bookinfo_ambient = find("Namespace", "bookinfo");
    let other = find("Namespace", "other");
    let (productpage, reviews_v1, tools) = (
        find("Pod", "productpage-v1-7d8b9c"),
        find("Pod", "reviews-v1-5f6c7d"),
        find("Pod", "tools-0"),
    );
    let mut ratings = productpage.clone();
    ratings["metadata"]["name"] = json!("ratings-v1-1a2b3c");
    let scratch = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "scratch"}});

    let r = replay();
    let (ns, pods) = (path_of("Namespace"), path_of("Pod"));
    // Namespaces: list, a watch that ends in 410 Gone (scratch was deleted while we
    // could not see it), relist, a watch that drops, then a live watch.
    r.list(
        &ns,
        "10",
        vec![item(&bookinfo_plain, "3"), item(&other, "4"), item(&scratch, "5")],
    );
    r.watch(&ns, vec![bookmark("v1", "Namespace", "12"), gone()], End::Close);
    r.list(&ns, "20", vec![item(&bookinfo_plain, "3"), item(&other, "4")]);
    r.watch(&ns, vec![event("ADDED", with_rv(&scratch, "21"))], End::Drop);
    let live = r.live_watch(&ns, vec![event("DELETED", with_rv(&scratch, "22"))]);
    // Pods: list, a watch adding one pod and deleting another, then closed.
    r.list(
        &pods,
        "10",
        vec![item(&productpage, "6"), item(&reviews_v1, "7"), item(&tools, "8")],
    );
    r.watch(
        &pods,
        vec![
            event("ADDED", with_rv(&ratings, "11")),
            event("DELETED", with_rv(&reviews_v1, "12")),
        ],
        End::Close,
    );
    r.list_all(&all, &["Namespace", "Pod"]);

    let run = start(&r, Some("node-a"), accept_all());
    let expected_refs = [
        "Namespace bookinfo",
        "Namespace other",
        "Pod bookinfo/productpage-v1-7d8b9c",
        "Pod bookinfo/ratings-v1-1a2b3c",
        "Pod other/tools-0",
    ];
    until("the API's final state", || {
        let have = refs(&run);
        let core: Vec<&str> = have
            .iter()
            .map(String::as_str)
            .filter(|s| s.starts_with("Namespace") || s.starts_with("Pod"))
            .collect();
        (core == expected_refs).then_some(())
    })
    .await;
    assert_eq!(
        r.requests("GET", &ns)
            .iter()
            .filter(|s| !s.query.contains("watch=true"))
            .count(),
        2,
        "410 Gone relists"
    );
    let pod_requests = r.requests("GET", &pods);
    assert!(
        pod_requests.iter().all(|s| !s.query.contains("fieldSelector")),
        "every pod of the cluster is watched, not only this node's: {pod_requests:?}"
    );
    assert!(
        enrolled(&run, "node-a").is_empty(),
        "nothing enrolled before the annotation"
    );

    live.send(event("MODIFIED", with_rv(&bookinfo_ambient, "30"))).unwrap();
    let want = vec![
        "bookinfo/productpage-v1-7d8b9c".to_string(),
        "bookinfo/ratings-v1-1a2b3c".to_string(),
    ];
    until("annotation enrolls bookinfo's node-a pods", || {
        (enrolled(&run, "node-a") == want).then_some(())
    })
    .await;

    live.send(event("MODIFIED", with_rv(&bookinfo_plain, "31"))).unwrap();
    until("removing it un-enrolls them", || {
        enrolled(&run, "node-a").is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn keeps_last_known_state_while_the_api_server_is_unreachable() {
    let all = objects(BOOKINFO);
    let r = replay();
    let ns = path_of("Namespace");
    let live = r.live_watch(&ns, Vec::new());
    r.list_all(&all, &[]);
    let run = start(&r, Some("node-a"), accept_all());
    until("initial sync", || run.status.borrow().connected.then_some(())).await;
    let before = refs(&run);

    r.outage.store(true, Ordering::SeqCst);
    drop(live); // the watch connection ends; every reconnect now fails
    let status = until("status shows the outage", || {
        let s = run.status.borrow().clone();
        (!s.connected).then_some(s)
    })
    .await;
    assert!(
        status.last_error.as_deref().unwrap_or_default().contains("Namespace"),
        "{status:?}"
    );
    assert_eq!(status.failing, vec!["Namespace".to_string()]);
    assert_eq!(refs(&run), before, "the model survives the outage");

    r.outage.store(false, Ordering::SeqCst);
    until("reconnected", || run.status.borrow().connected.then_some(())).await;
    assert_eq!(refs(&run), before);
}

/// A consumer's semantic validation on top of decoding (the waypoint compiles
/// regexes, mesh-node resolves policy): here it vetoes one AuthorizationPolicy.
fn veto_policy_named_vetoed() -> SharedValidator {
    Arc::new(|r: &Resource| {
        let object = r.object_ref();
        if object.kind == "AuthorizationPolicy" && object.name == "vetoed" {
            Err(ConfigError::Invalid {
                object,
                error: FieldError::new("spec.rules[0].from", "vetoed by the consumer"),
            })
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn invalid_objects_are_skipped_logged_and_reported_as_events() {
    let mut all = objects(BOOKINFO);
    let pick = |kind: &str| all.iter().find(|o| o["kind"] == kind).unwrap().clone();
    let mut bad_vs = pick("VirtualService");
    bad_vs["metadata"]["name"] = json!("broken");
    bad_vs["metadata"]["uid"] = json!("0b5e7c1e-0000-4000-8000-000000000001");
    bad_vs["spec"]["hosts"] = json!("reviews");
    let mut bad_svc = pick("Service");
    bad_svc["metadata"]["name"] = json!("bad-port");
    bad_svc["spec"]["ports"][0]["port"] = json!("http");
    let mut bad_pa = pick("PeerAuthentication");
    bad_pa["metadata"]["name"] = json!("bad-mode");
    bad_pa["spec"]["mtls"]["mode"] = json!("STRICTEST");
    let vetoed = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "vetoed", "namespace": "bookinfo"}, "spec": {"rules": [{"from": []}]}});
    all.extend([bad_vs, bad_svc, bad_pa, vetoed]);

    let r = replay();
    r.list_all(&all, &[]);
    let run = start(&r, None, veto_policy_named_vetoed());
    until("initial sync", || run.status.borrow().synced.then_some(())).await;

    let have = refs(&run);
    assert!(
        have.contains(&"VirtualService bookinfo/reviews".to_string()),
        "{have:?}"
    );
    assert!(
        have.contains(&"PeerAuthentication bookinfo/default".to_string()),
        "{have:?}"
    );
    for rejected in [
        "VirtualService bookinfo/broken",
        "Service bookinfo/bad-port",
        "PeerAuthentication bookinfo/bad-mode",
        "AuthorizationPolicy bookinfo/vetoed",
    ] {
        assert!(!have.contains(&rejected.to_string()), "{rejected} was accepted");
    }
    let errors: Vec<String> = run
        .store
        .lock()
        .unwrap()
        .errors()
        .flat_map(|(_, e)| e.to_vec())
        .collect();
    for prefix in [
        "VirtualService bookinfo/broken: spec.hosts:",
        "Service bookinfo/bad-port: spec.ports[0].port:",
        "PeerAuthentication bookinfo/bad-mode: spec.mtls.mode:",
        "AuthorizationPolicy bookinfo/vetoed: spec.rules[0].from: vetoed by the consumer",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(prefix)),
            "no error starting {prefix:?} in {errors:?}"
        );
    }

    let events_path = "/apis/events.k8s.io/v1/namespaces/bookinfo/events";
    let events = until("four Events posted", || {
        let e = r.requests("POST", events_path);
        (e.len() == 4).then_some(e)
    })
    .await;
    let bodies: Vec<Value> = events.iter().map(|e| serde_json::from_str(&e.body).unwrap()).collect();
    let vs_event = bodies
        .iter()
        .find(|e| e["regarding"]["kind"] == "VirtualService")
        .unwrap();
    assert_eq!(vs_event["type"], "Warning");
    assert_eq!(vs_event["reason"], "InvalidConfiguration");
    assert_eq!(vs_event["regarding"]["name"], "broken");
    assert_eq!(vs_event["regarding"]["apiVersion"], "networking.istio.io/v1");
    assert_eq!(vs_event["regarding"]["uid"], "0b5e7c1e-0000-4000-8000-000000000001");
    assert!(vs_event["note"].as_str().unwrap().contains("spec.hosts"), "{vs_event}");
    for (kind, field) in [
        ("PeerAuthentication", "spec.mtls.mode"),
        ("AuthorizationPolicy", "spec.rules[0].from"),
    ] {
        let noted = bodies
            .iter()
            .any(|e| e["regarding"]["kind"] == kind && e["note"].as_str().unwrap().contains(field));
        assert!(noted, "no Event on the {kind} naming {field}: {bodies:?}");
    }
}
