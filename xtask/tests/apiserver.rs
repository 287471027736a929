//! The test API server over real HTTP on loopback: discovery, list with label and
//! field selectors, watch from a resourceVersion with bookmarks, `410 Gone` after a
//! restart compacted the history. (The multi-node e2e drives it with kube-rs.)

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use xtask::apiserver::ApiServer;

const DEADLINE: Duration = Duration::from_secs(10);

const OBJECTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web, tier: front}}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}}
spec: {nodeName: n2}
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec: {hosts: [web]}
";

fn server() -> ApiServer {
    // The first bind takes a free port; a restart must get the same one back.
    let first = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = first.local_addr().expect("addr");
    let once = std::sync::Mutex::new(Some(first));
    ApiServer::start(move || match once.lock().map(|mut o| o.take()) {
        Ok(Some(l)) => Ok(l),
        _ => TcpListener::bind(addr),
    })
    .expect("test API server")
}

struct Response {
    status: u16,
    body: hyper::body::Incoming,
}

async fn request(addr: SocketAddr, path: &str) -> Response {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    Response {
        status: resp.status().as_u16(),
        body: resp.into_body(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = request(addr, path).await;
    let bytes = r.body.collect().await.expect("body").to_bytes();
    (r.status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// Reads watch events until `until` says stop (or the deadline fails the test).
async fn watch(addr: SocketAddr, path: &str, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut r = request(addr, path).await;
    assert_eq!(r.status, 200, "{path}");
    let (mut events, mut buf, started) = (Vec::new(), Vec::new(), Instant::now());
    while !until(&events) {
        assert!(started.elapsed() < DEADLINE, "watch {path}: only {events:?}");
        let frame = tokio::time::timeout(DEADLINE, r.body.frame())
            .await
            .expect("an event in time");
        let Some(Ok(frame)) = frame else { break };
        buf.extend_from_slice(frame.data_ref().map_or(&[][..], |b| &b[..]));
        while let Some(n) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=n).collect();
            events.push(serde_json::from_slice(&line).expect("event JSON"));
        }
    }
    events
}

/// The server owns a runtime: created and dropped outside the client's.
#[test]
fn discovery_list_selectors_watch_bookmarks_and_gone() {
    let api = server();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    client.block_on(exercise(&api));
}

async fn exercise(api: &ApiServer) {
    api.apply_yaml("objects.yaml", OBJECTS).expect("apply");
    let addr = api.addr();

    let (status, group) = get(addr, "/apis/networking.istio.io").await;
    assert_eq!(
        (status, group["preferredVersion"]["version"].as_str()),
        (200, Some("v1"))
    );
    let (_, groups) = get(addr, "/apis").await;
    assert!(groups["groups"].as_array().is_some_and(|g| g.len() >= 3), "{groups}");

    let (_, all) = get(addr, "/api/v1/pods").await;
    let rv: u64 = all["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("rv");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    let (_, front) = get(
        addr,
        "/api/v1/namespaces/shop/pods?labelSelector=app%3Dweb%2Ctier%3Dfront",
    )
    .await;
    assert_eq!(names(&front), ["a"]);
    let (_, on_n2) = get(addr, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2").await;
    assert_eq!(names(&on_n2), ["b"]);
    let (_, vs) = get(addr, "/apis/networking.istio.io/v1/virtualservices").await;
    assert_eq!(vs["items"][0]["apiVersion"], "networking.istio.io/v1", "served at v1");
    let (status, bad) = get(addr, "/api/v1/pods?labelSelector=app+in+web").await;
    assert_eq!(status, 400, "{bad}");

    // A watch from the list's version sees later changes (selected ones only) and bookmarks.
    let path = format!("/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&labelSelector=app%3Dweb");
    let applying = async {
        api.apply_yaml(
            "c.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: shop, labels: {app: web}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: shop, labels: {app: db}}\n",
        )
        .expect("apply c");
    };
    let (events, ()) = tokio::join!(
        watch(addr, &path, |e| e.iter().any(|e| e["type"] == "BOOKMARK")),
        applying
    );
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default(),
                e["object"]["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kinds.first(), Some(&("ADDED", "c")), "{kinds:?}");
    assert!(!kinds.iter().any(|(_, n)| *n == "other"), "selector ignored: {kinds:?}");

    // After a restart (compacted history) a watch from the old version gets 410 Gone.
    api.restart().expect("restart");
    assert_eq!(api.addr(), addr);
    let path = format!("/api/v1/pods?watch=true&resourceVersion={rv}");
    let events = watch(addr, &path, |e| !e.is_empty()).await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410, "{events:?}");
    let (status, _) = get(
        addr,
        &format!("/api/v1/pods?resourceVersion={rv}&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(status, 410);
}
