use super::*;
use crate::model::parse_documents;

const TOPOLOGY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web, version: v1}}
spec: {nodeName: n1, serviceAccountName: web}
status: {podIP: 198.18.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web, version: v2}}
spec: {nodeName: n2}
status: {podIP: 198.18.2.2, conditions: [{type: Ready, status: 'False'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: plain, labels: {app: web}}
spec: {nodeName: n1}
status: {podIP: 198.18.1.3}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 198.19.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec: {clusterIP: None, selector: {app: web, version: v2}, ports: [{port: 80}]}
";

/// A store of `yaml` (one source per document, like the Kubernetes source) and the
/// view built from it from scratch.
fn store_of(yaml: &str) -> ConfigStore {
    let mut store = ConfigStore::default();
    for (i, doc) in parse_documents("t", yaml).into_iter().enumerate() {
        store.apply_source(&format!("doc-{i}"), vec![doc], &|_| Ok(()));
    }
    store
}

fn full(store: &ConfigStore) -> ClusterView {
    let mut v = ClusterView::new("cluster.local");
    v.apply(store, &Changes::All);
    v
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Everything a consumer can observe, for comparing an incremental view with a rebuilt one.
fn observe(v: &ClusterView) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn selectors_pick_pods_of_the_same_namespace_only() {
    let v = full(&store_of(TOPOLOGY));
    let web = v.service(ip("198.19.0.10")).unwrap();
    assert_eq!(web.endpoints, vec![ip("198.18.1.2"), ip("198.18.2.2")]);
    let ready: Vec<_> = v.ready_endpoints(web).map(|w| w.name.as_str()).collect();
    assert_eq!(ready, vec!["a"]);
    let headless = v.service_named("shop", "web-v2").unwrap();
    assert_eq!(headless.vip, None);
    assert_eq!(headless.endpoints, vec![ip("198.18.2.2")]);
    assert!(v.workload(ip("198.18.1.2")).unwrap().enrolled);
    assert!(!v.workload(ip("198.18.1.3")).unwrap().enrolled);
}

#[test]
fn the_service_of_a_connection_is_the_one_selecting_the_pod_on_that_port() {
    let v = full(&store_of(TOPOLOGY));
    let b = v.workload(ip("198.18.2.2")).unwrap();
    let name = |port| v.service_of(b, port).map(|s| s.name.clone());
    // Both select b; only `web` targets 8080, only the headless `web-v2` targets 80.
    assert_eq!(name(8080).as_deref(), Some("web"));
    assert_eq!(name(80).as_deref(), Some("web-v2"));
    assert_eq!(name(9090), None);
    let c = v.workload(ip("198.18.1.3")).unwrap();
    assert_eq!(v.service_of(c, 8080), None, "selectors are namespaced");
}

/// Applies `change` as one more source and returns the incrementally updated view
/// next to a rebuilt one.
fn after(store: &mut ConfigStore, view: &mut ClusterView, source: &str, change: &str) -> ClusterView {
    let since = store.generation();
    store.apply_source(source, parse_documents(source, change), &|_| Ok(()));
    view.apply(store, &store.changes_since(since));
    full(store)
}

#[test]
fn one_change_at_a_time_equals_a_rebuild() {
    let mut store = store_of(TOPOLOGY);
    let mut view = full(&store);
    let steps = [
        // b's labels change: it leaves web-v2.
        (
            "doc-3",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop, labels: {app: web, version: v3}}\nspec: {nodeName: n2}\nstatus: {podIP: 198.18.2.2}\n",
        ),
        // un-enrolling the namespace reaches every pod in it.
        ("doc-0", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"),
        // a new pod joins web.
        (
            "new",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: d, namespace: shop, labels: {app: web}}\nspec: {nodeName: n3}\nstatus: {podIP: 198.18.3.2}\n",
        ),
        // the Service's selector narrows.
        (
            "doc-5",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 198.19.0.10, selector: {app: web, version: v3}, ports: [{port: 80}]}\n",
        ),
        // a pod is deleted.
        ("doc-2", ""),
        // waypoint label on the namespace reaches its Services.
        (
            "doc-0",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/use-waypoint: waypoint}}\n",
        ),
    ];
    for (source, change) in steps {
        let rebuilt = after(&mut store, &mut view, source, change);
        assert_eq!(observe(&view), observe(&rebuilt), "after {source}");
    }
    assert_eq!(
        view.service(ip("198.19.0.10")).unwrap().endpoints,
        vec![ip("198.18.2.2")]
    );
    assert_eq!(
        view.service_named("shop", "web").unwrap().waypoint.as_deref(),
        Some("waypoint")
    );
    assert!(view.workloads().all(|w| !w.enrolled));
}

#[test]
fn a_reused_ip_belongs_to_the_newest_pod_until_it_goes() {
    let mut store = store_of(TOPOLOGY);
    let mut view = full(&store);
    let twin = "apiVersion: v1\nkind: Pod\nmetadata: {name: a2, namespace: shop, labels: {app: other}}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.1.2}\n";
    after(&mut store, &mut view, "twin", twin);
    assert_eq!(view.workload(ip("198.18.1.2")).unwrap().name, "a2");
    assert!(
        !view
            .service(ip("198.19.0.10"))
            .unwrap()
            .endpoints
            .contains(&ip("198.18.1.2"))
    );
    // The newer pod goes: the older one, still running with that IP, is back.
    after(&mut store, &mut view, "twin", "");
    assert_eq!(view.workload(ip("198.18.1.2")).unwrap().name, "a");
    assert!(
        view.service(ip("198.19.0.10"))
            .unwrap()
            .endpoints
            .contains(&ip("198.18.1.2"))
    );
}

#[test]
fn a_consumer_too_far_behind_rebuilds() {
    let mut store = ConfigStore::default();
    assert_eq!(store.changes_since(0), Changes::All);
    store.apply_source(
        "a",
        parse_documents("a", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"),
        &|_| Ok(()),
    );
    let g = store.generation();
    store.apply_source(
        "b",
        parse_documents("b", "apiVersion: v1\nkind: Namespace\nmetadata: {name: y}\n"),
        &|_| Ok(()),
    );
    let Changes::Some(refs) = store.changes_since(g) else {
        panic!("journal lost a change")
    };
    assert_eq!(refs.into_iter().map(|r| r.name).collect::<Vec<_>>(), vec!["y"]);
    for i in 0..crate::model::store::JOURNAL_CAPACITY {
        let doc = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: n{i}}}\n");
        store.apply_source(&format!("n{i}"), parse_documents("n", &doc), &|_| Ok(()));
    }
    assert_eq!(store.changes_since(g), Changes::All);
}
