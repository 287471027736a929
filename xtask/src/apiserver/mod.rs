//! A test Kubernetes API server: it stands in for a real one, which cannot be
//! installed on these machines. It speaks the real HTTP protocol kube-rs uses — the
//! discovery endpoints (`/api`, `/apis`, `/apis/<group>[/<version>]`, `/version`), list
//! and watch with resourceVersions, label and field selectors, bookmarks, `410 Gone`
//! for versions older than its bounded history, get, and create/patch for Events — so
//! `mesh-node --kubernetes`, `mesh-waypoint --kubernetes` and `mesh-ca --kubernetes`
//! run against it unchanged with a kubeconfig that points at it. TokenReviews are
//! answered for the tokens a test registers ([`ApiServer::add_token`]). Objects are
//! applied from YAML (like `kubectl apply`). It is for tests only: no authentication of
//! its own clients, no admission, no validation beyond what a client needs, plain HTTP.
//!
//! [`ApiServer::restart`] drops every connection and serves again on the same address
//! with the same objects and a compacted history, so clients resuming their watches
//! get `410 Gone` and relist, like after a real API server restart.

mod http;
mod kinds;
mod selector;
mod store;
mod tokenreview;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::sync::watch;

pub use kinds::{KINDS, Kind};
pub use selector::{FieldSelector, LabelSelector, SelectorError};
use store::Store;
pub use tokenreview::TokenSubject;

/// How long [`ApiServer::stop`] waits for the listener to close.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often watches that asked for bookmarks get one.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error("cannot start the test API server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen for the test API server: {0}")]
    Listen(std::io::Error),
    #[error("{source_name}: document {index}: {message}")]
    Yaml {
        source_name: String,
        index: usize,
        message: String,
    },
    #[error("{source_name}: document {index}: the test API server does not serve {api_version} {kind}")]
    UnknownKind {
        source_name: String,
        index: usize,
        api_version: String,
        kind: String,
    },
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: std::io::Error },
}

type Bind = Box<dyn Fn() -> std::io::Result<std::net::TcpListener> + Send + Sync>;

/// A running test API server; dropping it stops it.
pub struct ApiServer {
    runtime: tokio::runtime::Runtime,
    shared: Arc<http::Shared>,
    bind: Bind,
    addr: SocketAddr,
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl ApiServer {
    /// Serves on the listener `bind` returns (called again on [`ApiServer::restart`];
    /// e.g. a socket bound inside the cluster's fabric namespace).
    pub fn start(
        bind: impl Fn() -> std::io::Result<std::net::TcpListener> + Send + Sync + 'static,
    ) -> Result<Self, ApiServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-apiserver")
            .enable_all()
            .build()
            .map_err(ApiServerError::Runtime)?;
        let (version, _) = watch::channel(0);
        let shared = Arc::new(http::Shared {
            store: Mutex::new(Store::default()),
            version,
            bookmark_every: BOOKMARK_EVERY,
            lists: Mutex::default(),
            tokens: Mutex::default(),
        });
        let listener = bind().map_err(ApiServerError::Listen)?;
        let addr = listener.local_addr().map_err(ApiServerError::Listen)?;
        let server = Self {
            runtime,
            shared,
            bind: Box::new(bind),
            addr,
            serving: Mutex::new(None),
        };
        server.serve(listener)?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&self, listener: std::net::TcpListener) -> Result<(), ApiServerError> {
        listener.set_nonblocking(true).map_err(ApiServerError::Listen)?;
        let shared = self.shared.clone();
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ApiServerError::Listen)?;
        let task = self.runtime.spawn(accept(listener, shared));
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(())
    }

    /// Stops serving: the listener closes and every connection (and watch) is cut.
    /// Returns once the listener is closed (bounded by [`STOP_TIMEOUT`]), so the
    /// address can be bound again.
    pub fn stop(&self) {
        let Some(task) = self.serving.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        task.abort();
        // No block_on: stop() may run inside a caller's runtime.
        let started = std::time::Instant::now();
        while !task.is_finished() && started.elapsed() < STOP_TIMEOUT {
            std::thread::yield_now();
        }
    }

    /// Stops, compacts the history (resumed watches get `410 Gone`) and serves again.
    pub fn restart(&self) -> Result<(), ApiServerError> {
        self.stop();
        self.shared.lock().compact();
        let listener = (self.bind)().map_err(ApiServerError::Listen)?;
        self.serve(listener)
    }

    /// `kubectl apply`: every object of the multi-document `yaml` is created or
    /// replaced. Nothing is applied when a document is not an object of a served kind.
    pub fn apply_yaml(&self, source_name: &str, yaml: &str) -> Result<Vec<Value>, ApiServerError> {
        let objects = parse(source_name, yaml)?;
        let mut store = self.shared.lock();
        let stored = objects.into_iter().map(|(kind, o)| store.put(kind, o)).collect();
        self.shared.version.send_replace(store.resource_version());
        Ok(stored)
    }

    /// `kubectl delete -f`: removes the objects named in `yaml` (absent ones are skipped).
    pub fn delete_yaml(&self, source_name: &str, yaml: &str) -> Result<usize, ApiServerError> {
        let objects = parse(source_name, yaml)?;
        let mut store = self.shared.lock();
        let removed = objects.iter().filter_map(|(kind, o)| store.delete(kind, o)).count();
        self.shared.version.send_replace(store.resource_version());
        Ok(removed)
    }

    /// Every stored object of `kind` (`Pod`, `VirtualService`, ...).
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        let store = self.shared.lock();
        KINDS
            .iter()
            .filter(|k| k.kind == kind)
            .flat_map(|k| store.list(k, None))
            .collect()
    }

    /// How many lists of `kind` were served so far (every client's first list, and a
    /// relist after `410 Gone`).
    pub fn lists_served(&self, kind: &str) -> u64 {
        let lists = self.shared.lists.lock().unwrap_or_else(|p| p.into_inner());
        lists.iter().filter(|((k, _), _)| *k == kind).map(|(_, n)| n).sum()
    }

    /// Lists of `kind` served per namespace (`None`: cluster-wide lists), e.g. to
    /// prove that only one client reads Secrets, and only in its own namespace.
    pub fn lists_by_namespace(&self, kind: &str) -> std::collections::BTreeMap<Option<String>, u64> {
        let lists = self.shared.lists.lock().unwrap_or_else(|p| p.into_inner());
        lists
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, ns), n)| (ns.clone(), *n))
            .collect()
    }

    /// From now on a TokenReview of `token` authenticates it as `subject` (a projected
    /// ServiceAccount token bound to a pod); any other token is not authenticated.
    pub fn add_token(&self, token: &str, subject: TokenSubject) {
        let mut tokens = self.shared.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.insert(token.to_owned(), subject);
    }

    /// A kubeconfig for clients of this server, written to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), ApiServerError> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"http://{}\"}}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test, namespace: default}}\n\
             current-context: test\n",
            self.addr
        );
        std::fs::write(path, text).map_err(|source| ApiServerError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<http::Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or a reset before accept: let other tasks run first.
            tokio::task::yield_now().await;
            continue;
        };
        let shared = shared.clone();
        // Connections live in this task's JoinSet: aborting the task cuts them all.
        connections.spawn(async move {
            let svc = service_fn(move |req| http::handle(shared.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn parse(source_name: &str, yaml: &str) -> Result<Vec<(&'static Kind, Value)>, ApiServerError> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let yaml_err = |message: String| ApiServerError::Yaml {
            source_name: source_name.into(),
            index,
            message,
        };
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| yaml_err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let json: Value = serde_json::to_value(value).map_err(|e| yaml_err(e.to_string()))?;
        let (api_version, kind) = (
            json["apiVersion"].as_str().unwrap_or_default(),
            json["kind"].as_str().unwrap_or_default(),
        );
        let Some(k) = Kind::of(api_version, kind) else {
            return Err(ApiServerError::UnknownKind {
                source_name: source_name.into(),
                index,
                api_version: api_version.into(),
                kind: kind.into(),
            });
        };
        if json["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            return Err(yaml_err(format!("{kind} without metadata.name")));
        }
        out.push((k, json));
    }
    Ok(out)
}
