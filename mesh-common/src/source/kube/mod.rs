//! Kubernetes mode: kube-rs watchers feeding the same [`ConfigStore`] as the local
//! directory source.
//!
//! Every kind in [`kinds::WATCHED`] is watched cluster-wide (and, for the ingress
//! gateway, Secrets in its own namespace: [`KubeSourceConfig::secrets_namespace`]), with kube-runtime's `watcher` (list, then
//! watch from the list's resourceVersion; relist on `410 Gone`; re-watch when a stream
//! drops) behind an exponential backoff. Objects are read as `DynamicObject`, turned
//! back into the YAML a user would write, and decoded by [`Resource::from_value`], so
//! both sources share one decoder and one set of validation errors.
//!
//! Store sources are per object (`kube:<Kind>/<ns>/<name>`, see [`apply`]). While the
//! API server is unreachable the store keeps what it had; [`KubeSource::status`] says
//! so. An object that fails decoding or validation is logged (kind/namespace/name and
//! field) and reported on the object as an `events.k8s.io/v1` Warning Event, and keeps
//! its last good version; every other object keeps working.

pub mod apply;
pub mod kinds;
pub mod observe;
pub mod status;
pub mod trim;

#[cfg(any(test, feature = "kube-replay"))]
pub mod replay;
#[cfg(test)]
mod tests;

use std::sync::PoisonError;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroup;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::client::{Body, ClientBuilder};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use apply::{KindSync, Rejection};
use kinds::{Watch, WatchedKind};
pub use status::SourceStatus;
use status::StatusTracker;

pub use crate::source::{SharedStore, SharedValidator};

#[derive(Clone, Debug)]
pub struct KubeSourceConfig {
    /// `reportingController` of the Events we create.
    pub controller: String,
    /// `reportingInstance` (the pod or node name).
    pub instance: Option<String>,
    /// Create a Kubernetes Event on each rejected object.
    pub record_events: bool,
    pub retry: Retry,
    /// The ingress gateway's namespace: also watch the Secrets there (its
    /// `credentialName`s), namespace-scoped. `None` (node daemon, waypoint): no Secret.
    pub secrets_namespace: Option<String>,
}

impl KubeSourceConfig {
    pub fn node(node_name: &str) -> Self {
        Self {
            controller: "mesh.io/mesh-node".into(),
            instance: Some(node_name.to_owned()),
            record_events: true,
            retry: Retry::Default,
            secrets_namespace: None,
        }
    }
}

/// Delay between failed attempts.
#[derive(Clone, Copy, Debug)]
pub enum Retry {
    /// kube-runtime's: 0.8 s doubling to 30 s, jittered, reset after 2 min of success.
    Default,
    /// A constant delay (tests).
    Fixed(Duration),
}

enum RetryBackoff {
    Default(Box<DefaultBackoff>),
    Fixed(Duration),
}

impl Retry {
    fn backoff(self) -> RetryBackoff {
        match self {
            Retry::Default => RetryBackoff::Default(Box::default()),
            Retry::Fixed(d) => RetryBackoff::Fixed(d),
        }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        match self {
            RetryBackoff::Default(b) => b.next(),
            RetryBackoff::Fixed(d) => Some(*d),
        }
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        if let RetryBackoff::Default(b) = self {
            b.reset();
        }
    }
}

/// What a per-kind watch task tells the reconcile loop.
enum Update {
    Resolved(usize, ApiResource),
    Failed(usize, String),
    Watched(usize, Box<watcher::Event<DynamicObject>>),
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("cannot find Kubernetes API credentials (in-cluster service account or kubeconfig): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct KubeSource {
    client: Client,
    config: KubeSourceConfig,
    /// What is watched: [`kinds::watches`] of the config.
    watches: Vec<Watch>,
    store: SharedStore,
    validator: SharedValidator,
    status: StatusTracker,
    status_rx: watch::Receiver<SourceStatus>,
    generation: watch::Sender<u64>,
    opened: mpsc::UnboundedReceiver<String>,
}

impl crate::source::runner::Source for KubeSource {
    fn generation(&self) -> watch::Receiver<u64> {
        KubeSource::generation(self)
    }

    fn status(&self) -> watch::Receiver<SourceStatus> {
        KubeSource::status(self)
    }

    fn run(self) -> impl std::future::Future<Output = ()> + Send + 'static {
        KubeSource::run(self)
    }
}

impl KubeSource {
    /// Connects with the in-cluster service account (or the local kubeconfig).
    pub async fn connect(
        config: KubeSourceConfig,
        store: SharedStore,
        validator: SharedValidator,
    ) -> Result<Self, KubeSourceError> {
        let kube_config = kube::Config::infer().await?;
        let http = ClientBuilder::try_from(kube_config)?;
        Ok(Self::new(http, config, store, validator))
    }

    /// Over any HTTP stack (tests replay recorded API responses through this).
    pub fn new<S, B>(
        http: ClientBuilder<S>,
        config: KubeSourceConfig,
        store: SharedStore,
        validator: SharedValidator,
    ) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (observer, opened) = observe::WatchOpened::new();
        let client = http.with_layer(&observer).build();
        let watches = kinds::watches(config.secrets_namespace.as_deref());
        let (status, status_rx) = StatusTracker::new(watches.iter().map(|w| w.kind.kind.to_owned()));
        let (generation, _) = watch::channel(0);
        Self {
            client,
            config,
            watches,
            store,
            validator,
            status,
            status_rx,
            generation,
            opened,
        }
    }

    /// Connected / synced / last error / since: for readiness detail and metrics.
    pub fn status(&self) -> watch::Receiver<SourceStatus> {
        self.status_rx.clone()
    }

    /// The store's generation after each change this source made.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Watches until dropped. Never returns an error: failures are retried and shown
    /// in [`KubeSource::status`].
    pub async fn run(mut self) {
        let (tx, mut rx) = mpsc::channel(256);
        let mut tasks = tokio::task::JoinSet::new();
        for (index, watch) in self.watches.iter().enumerate() {
            tasks.spawn(watch_kind(
                self.client.clone(),
                index,
                watch.clone(),
                self.config.clone(),
                tx.clone(),
            ));
        }
        drop(tx);
        let mut syncs: Vec<Option<KindSync>> = self.watches.iter().map(|_| None).collect();
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: self.config.controller.clone(),
                instance: self.config.instance.clone(),
            },
        );
        loop {
            let update = tokio::select! {
                update = rx.recv() => match update {
                    Some(u) => u,
                    None => return,
                },
                Some(path) = self.opened.recv() => {
                    self.watch_opened(&path, &syncs);
                    continue;
                }
            };
            match update {
                Update::Resolved(i, resource) => {
                    info!(kind = %resource.kind, api_version = %resource.api_version, "watching");
                    syncs[i] = Some(KindSync::new(resource));
                }
                Update::Failed(i, error) => {
                    let kind = self.watches[i].kind.kind;
                    warn!(kind, %error, "Kubernetes watch failed; serving the last known state and retrying");
                    self.status.failed(kind, error);
                }
                Update::Watched(i, event) => {
                    let Some(sync) = syncs[i].as_mut() else { continue };
                    let rejected = self.handle(sync, *event);
                    self.status.ok(self.watches[i].kind.kind, sync.synced());
                    for r in rejected {
                        self.report(&recorder, r);
                    }
                }
            }
        }
    }

    /// A watch (re)opened: that kind is connected again, even if nothing changed.
    fn watch_opened(&mut self, path: &str, syncs: &[Option<KindSync>]) {
        for (watch, sync) in self.watches.iter().zip(syncs) {
            let kind = &watch.kind;
            if observe::addresses(path, kind.group, kind.plural) {
                self.status.ok(kind.kind, sync.as_ref().is_some_and(KindSync::synced));
            }
        }
    }

    fn handle(&self, sync: &mut KindSync, event: watcher::Event<DynamicObject>) -> Vec<Rejection> {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let validate = &*self.validator;
        let rejected = match event {
            watcher::Event::Init => {
                sync.relist_started();
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                sync.relisted(obj);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let r = sync.relist_done(&mut store, validate);
                debug!(kind = sync.kind(), "list complete");
                r
            }
            watcher::Event::Apply(obj) => sync.apply(&mut store, obj, validate).into_iter().collect(),
            watcher::Event::Delete(obj) => {
                sync.delete(&mut store, &obj);
                Vec::new()
            }
        };
        self.generation
            .send_if_modified(|g| std::mem::replace(g, store.generation()) != store.generation());
        rejected
    }

    fn report(&self, recorder: &Recorder, r: Rejection) {
        warn!(
            kind = r.object.kind.as_deref().unwrap_or_default(),
            namespace = r.object.namespace.as_deref().unwrap_or_default(),
            name = r.object.name.as_deref().unwrap_or_default(),
            error = %r.message,
            "rejected Kubernetes object; its last good version (if any) stays in force"
        );
        if !self.config.record_events {
            return;
        }
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidConfiguration".into(),
                // The Events API caps `note` at 1 kB.
                note: Some(r.message.chars().take(1000).collect()),
                action: "Validate".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &r.object).await {
                warn!(error = %e, object = ?r.object.name, "cannot create the Kubernetes Event for a rejected object");
            }
        });
    }
}

/// One kind: pick its API version, then watch it forever, forwarding events.
async fn watch_kind(
    client: Client,
    index: usize,
    Watch { kind, namespace }: Watch,
    config: KubeSourceConfig,
    tx: mpsc::Sender<Update>,
) {
    let mut backoff = config.retry.backoff();
    let resource = loop {
        match resolve(&client, &kind).await {
            Ok(r) => break r,
            Err(e) => {
                if tx.send(Update::Failed(index, e)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(30))).await;
            }
        }
    };
    if tx.send(Update::Resolved(index, resource.clone())).await.is_err() {
        return;
    }
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let wc = watcher::Config::default();
    let mut events = watcher::watcher(api, wc).backoff(config.retry.backoff()).boxed();
    while let Some(item) = events.next().await {
        let update = match item {
            // Trimmed before it is queued or buffered for a relist: at 100k pods the
            // fields the mesh does not read would dominate memory.
            Ok(event) => Update::Watched(index, Box::new(event.modify(|o| trim::trim(kind.kind, o)))),
            Err(e) => Update::Failed(index, error_chain(&e)),
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

/// The version to watch: fixed for core kinds, discovered for Istio's CRDs (clusters
/// run Istio releases with different served versions).
async fn resolve(client: &Client, kind: &WatchedKind) -> Result<ApiResource, String> {
    if !kind.needs_discovery() {
        return Ok(kind.api_resource(kind.versions[0]));
    }
    let request = http::Request::get(format!("/apis/{}", kind.group))
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let group: APIGroup = client.request(request).await.map_err(|e| {
        format!(
            "cannot discover API group {} (are the CRDs from deploy/crds installed?): {}",
            kind.group,
            error_chain(&e)
        )
    })?;
    let served: Vec<String> = group.versions.iter().map(|v| v.version.clone()).collect();
    let version = kind.pick_version(&served).ok_or_else(|| {
        format!(
            "API group {} serves {:?}, none of the supported versions {:?}",
            kind.group, served, kind.versions
        )
    })?;
    Ok(kind.api_resource(version))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
