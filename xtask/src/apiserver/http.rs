//! The HTTP side: discovery, list, watch (chunked JSON lines, bookmarks, `410 Gone` as
//! an `ERROR` event), get, and create/patch (the Events the mesh posts on rejected
//! objects), over hyper on one listener.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::kinds::{KINDS, Kind};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Change, Store};
use super::tokenreview::{self, TokenSubject};

pub type Body = BoxBody<Bytes, Infallible>;

/// What every connection shares: the objects, and the version last written (watches
/// wake up on it).
pub struct Shared {
    pub store: Mutex<Store>,
    pub version: watch::Sender<u64>,
    pub bookmark_every: Duration,
    /// Lists served, by kind and namespace (`None`: cluster-wide): a test sees clients
    /// relist (after `410 Gone`), and which namespaces a client reads a kind in.
    pub lists: Mutex<HashMap<(&'static str, Option<String>), u64>>,
    /// Tokens a TokenReview authenticates, and whom for.
    pub tokens: Mutex<HashMap<String, TokenSubject>>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req.uri().query().map(|q| url_pairs(q).collect()).unwrap_or_default();
    let method = req.method().clone();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(reply) = discovery(&segments) {
        return Ok(reply);
    }
    if method == Method::POST && segments == ["apis", "authentication.k8s.io", "v1", "tokenreviews"] {
        return Ok(token_review(&shared, req.into_body()).await);
    }
    let Some(target) = Target::parse(&segments) else {
        return Ok(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no resource at {path}"),
        ));
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())),
    };
    Ok(match (method, &target.name) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch_stream(shared, target, &query)
        }
        (Method::GET, None) => list(&shared, &target, &query),
        (Method::GET, Some(name)) => get(&shared, &target, name),
        (Method::POST, None) | (Method::PATCH, Some(_)) | (Method::PUT, Some(_)) => write(&shared, &target, &body),
        (m, _) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{m} {path}"),
        ),
    })
}

/// `a=b&c=d`, percent-decoded.
fn url_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).map(|h| u8::from_str_radix(h, 16)) {
                    Ok(Ok(b)) => {
                        out.push(b);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A collection or object path.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
}

impl Target {
    fn parse(s: &[&str]) -> Option<Self> {
        let (group, version, rest) = match s {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (namespace, plural, name) = match rest {
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            [plural] => (None, *plural, None),
            [plural, name] => (None, *plural, Some(*name)),
            _ => return None,
        };
        // `/api/v1/namespaces/<name>` is a Namespace, not a collection in it.
        let (namespace, plural, name) = match (namespace, plural, name) {
            (Some(ns), "namespaces", None) if rest.len() == 2 => (None, "namespaces", Some(ns)),
            other => other,
        };
        Some(Self {
            kind: Kind::by_plural(group, version, plural)?,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }
}

fn json_reply(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn status_object(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code.as_u16()})
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_reply(code, &status_object(code, reason, message))
}

fn discovery(s: &[&str]) -> Option<Response<Body>> {
    let resources = |group: &str, version: &str| {
        let list: Vec<Value> = KINDS
            .iter()
            .filter(|k| k.group == group && k.version == version)
            .map(|k| {
                json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
                       "kind": k.kind, "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]})
            })
            .collect();
        let gv = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
    };
    let group = |g: &str, v: &str| {
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv})
    };
    let v = match s {
        ["version"] => json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-mesh-test-apiserver"}),
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ["api", "v1"] => resources("", "v1"),
        ["apis"] => {
            let groups: Vec<Value> = Kind::groups().iter().map(|(g, v)| group(g, v)).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] => {
            let (g, v) = Kind::groups().into_iter().find(|(name, _)| name == g)?;
            group(g, v)
        }
        ["apis", g, v] if Kind::groups().contains(&(*g, *v)) => resources(g, v),
        _ => return None,
    };
    Some(json_reply(StatusCode::OK, &v))
}

struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// A bad selector is answered `400` (boxed: the response is large beside `Self`).
    fn new(target: &Target, q: &HashMap<String, String>) -> Result<Self, Box<Response<Body>>> {
        let bad =
            |e: super::selector::SelectorError| Box::new(status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()));
        Ok(Self {
            namespace: target.namespace.clone(),
            labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str)).map_err(bad)?,
            fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str)).map_err(bad)?,
        })
    }

    fn matches(&self, o: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns));
        ns_ok && self.labels.matches(o) && self.fields.matches(o)
    }
}

fn list(shared: &Shared, target: &Target, q: &HashMap<String, String>) -> Response<Body> {
    let filter = match Filter::new(target, q) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    *shared
        .lists
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((target.kind.kind, target.namespace.clone()))
        .or_default() += 1;
    let store = shared.lock();
    let requested: Option<u64> = q.get("resourceVersion").and_then(|v| v.parse().ok());
    let exact = q.get("resourceVersionMatch").is_some_and(|m| m == "Exact");
    if let (Some(rv), true) = (requested, exact)
        && rv != store.resource_version()
    {
        return status(StatusCode::GONE, "Expired", &format!("resourceVersion {rv} is too old"));
    }
    let items: Vec<Value> = store
        .list(target.kind, target.namespace.as_deref())
        .into_iter()
        .filter(|o| filter.matches(o))
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({"kind": format!("{}List", target.kind.kind), "apiVersion": target.kind.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": items}),
    )
}

fn get(shared: &Shared, target: &Target, name: &str) -> Response<Body> {
    let store = shared.lock();
    let found = store
        .list(target.kind, target.namespace.as_deref())
        .into_iter()
        .find(|o| o["metadata"]["name"] == name);
    match found {
        Some(o) => json_reply(StatusCode::OK, &o),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} {name:?} not found", target.kind.plural),
        ),
    }
}

/// Create or replace (a PATCH replaces the object with the patch's fields merged over
/// it at the top level: enough for the Events the mesh writes).
fn write(shared: &Shared, target: &Target, body: &Bytes) -> Response<Body> {
    let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not JSON");
    };
    if let Some(ns) = &target.namespace {
        object["metadata"]["namespace"] = ns.clone().into();
    }
    if let Some(name) = &target.name {
        object["metadata"]["name"] = name.clone().into();
        let existing = get_value(shared, target, name);
        if let (Some(mut base), Some(patch)) = (existing, object.as_object()) {
            for (k, v) in patch {
                base[k] = v.clone();
            }
            object = base;
        }
    }
    if object["metadata"]["name"].is_null() {
        let generated = object["metadata"]["generateName"].as_str().unwrap_or("obj-").to_owned();
        let n = shared.lock().resource_version();
        object["metadata"]["name"] = format!("{generated}{n:x}").into();
    }
    let stored = {
        let mut store = shared.lock();
        let v = store.put(target.kind, object);
        shared.version.send_replace(store.resource_version());
        v
    };
    json_reply(StatusCode::CREATED, &stored)
}

/// A TokenReview, answered from the tokens the test registered (`201 Created`).
async fn token_review(shared: &Shared, body: Incoming) -> Response<Body> {
    let request: Value = match body.collect().await.map(|b| serde_json::from_slice(&b.to_bytes())) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the body is not JSON: {e}"),
            );
        }
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let tokens = shared.tokens.lock().unwrap_or_else(|p| p.into_inner());
    json_reply(StatusCode::CREATED, &tokenreview::review(&tokens, &request))
}

fn get_value(shared: &Shared, target: &Target, name: &str) -> Option<Value> {
    shared
        .lock()
        .list(target.kind, target.namespace.as_deref())
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch_stream(shared: Arc<Shared>, target: Target, q: &HashMap<String, String>) -> Response<Body> {
    let filter = match Filter::new(&target, q) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .filter(|v| *v != 0)
        .unwrap_or_else(|| shared.lock().resource_version());
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(feed(shared, target.kind, filter, since, bookmarks, timeout, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Sends the changes after `since`, then follows new ones until `timeout`; bookmarks
/// every `bookmark_every` when asked for; an `ERROR` 410 event when `since` is compacted.
async fn feed(
    shared: Arc<Shared>,
    kind: &'static Kind,
    filter: Filter,
    mut since: u64,
    bookmarks: bool,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let mut version = shared.version.subscribe();
    let end = tokio::time::Instant::now() + timeout;
    let mut next_bookmark = tokio::time::Instant::now() + shared.bookmark_every;
    loop {
        let (changes, seen): (Result<Vec<Change>, _>, u64) = {
            let store = shared.lock();
            (store.changes_since(kind, since), store.resource_version())
        };
        let Ok(changes) = changes else {
            let gone = status_object(
                StatusCode::GONE,
                "Expired",
                &format!("too old resource version: {since}"),
            );
            let _ = tx.send(event_line("ERROR", &gone)).await;
            return;
        };
        for c in changes {
            if filter.matches(&c.object) && tx.send(event_line(c.event.as_str(), &c.object)).await.is_err() {
                return;
            }
        }
        // Every change of this kind up to `seen` has been sent.
        since = seen;
        let now = tokio::time::Instant::now();
        if bookmarks && now >= next_bookmark {
            let mark = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                              "metadata": {"resourceVersion": since.to_string()}});
            if tx.send(event_line("BOOKMARK", &mark)).await.is_err() {
                return;
            }
            next_bookmark = now + shared.bookmark_every;
        }
        let wake = next_bookmark.min(end);
        tokio::select! {
            changed = version.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(wake) => if tokio::time::Instant::now() >= end { return },
            () = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kinds_namespaces_and_objects() {
        let t = Target::parse(&["api", "v1", "namespaces", "bookinfo", "pods"]).unwrap();
        assert_eq!(
            (t.kind.kind, t.namespace.as_deref(), t.name.as_deref()),
            ("Pod", Some("bookinfo"), None)
        );
        let t = Target::parse(&["api", "v1", "namespaces", "bookinfo"]).unwrap();
        assert_eq!((t.kind.kind, t.name.as_deref()), ("Namespace", Some("bookinfo")));
        let t = Target::parse(&["apis", "networking.istio.io", "v1", "virtualservices"]).unwrap();
        assert_eq!(t.kind.kind, "VirtualService");
        assert!(Target::parse(&["apis", "nope", "v1", "things"]).is_none());
        assert_eq!(decode("spec.nodeName%3Dn1"), "spec.nodeName=n1");
        assert_eq!(decode("a+in+%28x%2Cy%29"), "a in (x,y)");
    }
}
