//! Test double for the API server: a `tower::Service` that kube's `Client` runs on,
//! replaying scripted list responses and watch streams (the only mock of the
//! Kubernetes source; everything above the HTTP layer is the real kube-runtime
//! watcher). Other crates' tests get it with the feature `kube-replay`.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::kinds::{WATCHED, WatchedKind};

type Chunk = Result<Frame<Bytes>, std::io::Error>;
pub type ReplayBody = StreamBody<BoxStream<'static, Chunk>>;

/// How a scripted watch stream ends.
pub enum End {
    /// The server closes it (watch timeout): the watcher re-watches.
    Close,
    /// The connection breaks mid-stream.
    Drop,
    /// Stays open, fed by the test through the returned sender.
    Live(mpsc::UnboundedReceiver<Value>),
    /// Stays open and quiet (a cluster where nothing changes).
    Idle,
}

pub enum Reply {
    List {
        resource_version: String,
        items: Vec<Value>,
    },
    Watch {
        events: Vec<Value>,
        end: End,
    },
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
}

#[derive(Clone, Default)]
pub struct Replay {
    /// Keyed `"<path> list"` / `"<path> watch"`, consumed in order.
    script: Arc<Mutex<BTreeMap<String, VecDeque<Reply>>>>,
    /// GET paths answered the same every time (discovery).
    fixed: Arc<Mutex<BTreeMap<String, Value>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// While set, every request fails with 503: the API server is unreachable.
    pub outage: Arc<std::sync::atomic::AtomicBool>,
}

impl Replay {
    pub fn list(&self, path: &str, resource_version: &str, items: Vec<Value>) -> &Self {
        self.push(
            format!("{path} list"),
            Reply::List {
                resource_version: resource_version.into(),
                items,
            },
        )
    }

    pub fn watch(&self, path: &str, events: Vec<Value>, end: End) -> &Self {
        self.push(format!("{path} watch"), Reply::Watch { events, end })
    }

    /// A watch that stays open; the test sends events into it later.
    pub fn live_watch(&self, path: &str, events: Vec<Value>) -> mpsc::UnboundedSender<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.watch(path, events, End::Live(rx));
        tx
    }

    /// Lists the objects of `objs` (user YAML as JSON) for every watched kind not in
    /// `except`; their watches then stay idle.
    pub fn list_all(&self, objs: &[Value], except: &[&str]) -> &Self {
        for kind in WATCHED.iter().filter(|k| !except.contains(&k.kind)) {
            let items = objs
                .iter()
                .filter(|o| o["kind"] == kind.kind)
                .map(|o| item(o, "5"))
                .collect();
            self.list(&path(kind), "5", items);
        }
        self
    }

    /// A kube client stack over this replay, for [`super::KubeSource::new`].
    pub fn client_builder(&self) -> kube::client::ClientBuilder<Self> {
        kube::client::ClientBuilder::new(self.clone(), "default")
    }

    /// Answers discovery of every non-core API group we watch (Istio's, Gateway API's)
    /// with every version we accept.
    pub fn istio_groups(&self) -> &Self {
        for kind in WATCHED.iter().filter(|k| !k.group.is_empty()) {
            let vs: Vec<Value> = kind
                .versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{}/{v}", kind.group), "version": v}))
                .collect();
            let body = json!({"kind": "APIGroup", "apiVersion": "v1", "name": kind.group, "versions": vs, "preferredVersion": vs[0]});
            self.fixed(&format!("/apis/{}", kind.group), body);
        }
        self
    }

    pub fn fixed(&self, path: &str, body: Value) -> &Self {
        self.fixed.lock().unwrap().insert(path.into(), body);
        self
    }

    fn push(&self, key: String, reply: Reply) -> &Self {
        self.script.lock().unwrap().entry(key).or_default().push_back(reply);
        self
    }

    pub fn requests(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }

    fn next(&self, key: &str) -> Option<Reply> {
        self.script.lock().unwrap().get_mut(key).and_then(VecDeque::pop_front)
    }

    fn respond(&self, req: &http::request::Parts, body: String) -> Response<ReplayBody> {
        let path = req.uri.path().to_owned();
        let query = req.uri.query().unwrap_or_default().to_owned();
        self.seen.lock().unwrap().push(Seen {
            method: req.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        if self.outage.load(std::sync::atomic::Ordering::SeqCst) {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                status(503, "ServiceUnavailable", "replay: outage"),
            );
        }
        if req.method != http::Method::GET {
            return json_response(StatusCode::CREATED, serde_json::from_str(&body).unwrap_or(Value::Null));
        }
        if let Some(v) = self.fixed.lock().unwrap().get(&path) {
            return json_response(StatusCode::OK, v.clone());
        }
        let watching = query.split('&').any(|p| p == "watch=true");
        let key = format!("{path} {}", if watching { "watch" } else { "list" });
        match self.next(&key) {
            Some(Reply::List {
                resource_version,
                items,
            }) => json_response(
                StatusCode::OK,
                json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": resource_version}, "items": items}),
            ),
            Some(Reply::Watch { events, end }) => watch_response(events, end),
            // A script that ran out: watches idle (a quiet cluster), lists fail loudly.
            None if watching => watch_response(Vec::new(), End::Idle),
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                status(503, "ServiceUnavailable", &format!("script exhausted: {key}")),
            ),
        }
    }
}

pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn json_response(code: StatusCode, v: Value) -> Response<ReplayBody> {
    let bytes = Bytes::from(v.to_string());
    let body = StreamBody::new(stream::once(async move { Ok(Frame::data(bytes)) }).boxed());
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn line(v: Value) -> Chunk {
    Ok(Frame::data(Bytes::from(format!("{v}\n"))))
}

fn watch_response(events: Vec<Value>, end: End) -> Response<ReplayBody> {
    let head = stream::iter(events.into_iter().map(line));
    let body: BoxStream<'static, Chunk> = match end {
        End::Close => head.boxed(),
        End::Drop => head
            .chain(stream::once(async {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "replay: connection dropped",
                ))
            }))
            .boxed(),
        End::Idle => head.chain(stream::pending()).boxed(),
        End::Live(rx) => head
            .chain(stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|v| (line(v), rx))
            }))
            .boxed(),
    };
    Response::new(StreamBody::new(body))
}

impl tower::Service<Request<Body>> for Replay {
    type Response = Response<ReplayBody>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
                .unwrap_or_default();
            Ok(this.respond(&parts, body))
        })
    }
}

/// A watch event line as the API server sends it.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// `410 Gone` inside a watch stream: the resourceVersion is too old, relist.
pub fn gone() -> Value {
    event("ERROR", status(410, "Expired", "too old resource version: 10 (25)"))
}

/// The collection path of a watched kind at its preferred version (`/api/v1/pods`).
pub fn path(kind: &WatchedKind) -> String {
    let ar = kind.api_resource(kind.versions[0]);
    if ar.group.is_empty() {
        format!("/api/v1/{}", ar.plural)
    } else {
        format!("/apis/{}/{}", ar.api_version, ar.plural)
    }
}

/// [`path`] by kind name; panics on a kind we do not watch (a bug in the test).
pub fn path_of(kind: &str) -> String {
    path(
        WATCHED
            .iter()
            .find(|k| k.kind == kind)
            .unwrap_or_else(|| panic!("{kind} is not watched")),
    )
}

/// A list item as the API server returns it: no apiVersion/kind, a resourceVersion.
pub fn item(v: &Value, rv: &str) -> Value {
    let mut v = with_rv(v, rv);
    if let Some(map) = v.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    v
}

/// The object with `metadata.resourceVersion` set, as a watch event carries it.
pub fn with_rv(v: &Value, rv: &str) -> Value {
    let mut v = v.clone();
    v["metadata"]["resourceVersion"] = json!(rv);
    v
}

/// User YAML (multi-document) as the JSON objects the API server stores.
pub fn objects(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .filter_map(|v| serde_json::to_value(v).ok())
        .filter(|v| !v.is_null())
        .collect()
}

pub fn bookmark(api_version: &str, kind: &str, resource_version: &str) -> Value {
    event(
        "BOOKMARK",
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": resource_version}}),
    )
}
