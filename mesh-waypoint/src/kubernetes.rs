//! Kubernetes mode (`mesh-waypoint run --kubernetes`): the same Kubernetes source as
//! the node daemon (mesh-common's [`KubeSource`]) feeds the waypoint's [`Config`],
//! with the waypoint's own validation (routes and subsets that do not compile are
//! rejected alone and reported as Events). Pods of every node are read: a waypoint
//! routes to endpoints anywhere. `/healthz/ready` (15021 in the rendered Deployment)
//! answers 200 once everything has been listed, and stays 200 through an API server
//! outage with detail saying so.

use std::convert::Infallible;
use std::sync::{Arc, PoisonError};

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_common::source::kube::{KubeSource, KubeSourceConfig, KubeSourceError, KubeStatus, Retry, SharedStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::config::Config;

/// Connects with the pod's service account and follows the API server into `config`.
/// `instance` (the pod name) is the reporting instance of our Events. The ingress
/// gateway passes its namespace as `secrets_namespace`: its `credentialName` Secrets are
/// watched there (and only there); a waypoint passes `None` and reads no Secret.
pub async fn start(
    config: Arc<Config>,
    instance: Option<String>,
    secrets_namespace: Option<String>,
) -> Result<watch::Receiver<KubeStatus>, KubeSourceError> {
    let store = SharedStore::default();
    let source_config = KubeSourceConfig {
        controller: "mesh.io/mesh-waypoint".into(),
        instance,
        record_events: true,
        retry: Retry::Default,
        secrets_namespace,
    };
    let source = KubeSource::connect(source_config, store.clone(), Arc::new(crate::config::validate)).await?;
    Ok(follow(source, store, config))
}

/// Runs `source` (which writes `store`) and publishes a new snapshot on every change,
/// starting once every kind has been listed.
pub fn follow(source: KubeSource, store: SharedStore, config: Arc<Config>) -> watch::Receiver<KubeStatus> {
    let status = source.status();
    let (mut generation, mut changes) = (source.generation(), status.clone());
    tokio::spawn(source.run());
    tokio::spawn(async move {
        let mut published = None;
        loop {
            tokio::select! {
                c = generation.changed() => if c.is_err() { return },
                c = changes.changed() => if c.is_err() { return },
            }
            if !changes.borrow_and_update().synced {
                continue;
            }
            let store = store.lock().unwrap_or_else(PoisonError::into_inner);
            if published != Some(store.generation()) {
                config.publish(&store);
                published = Some(store.generation());
            }
        }
    });
    status
}

/// `GET /healthz/ready`: 200 once the configuration is complete, 503 before.
pub async fn serve_readiness(listener: TcpListener, status: watch::Receiver<KubeStatus>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let response = readiness(req.uri().path(), &status.borrow());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn readiness(path: &str, s: &KubeStatus) -> Response<Body> {
    let (code, text) = match path {
        "/healthz/ready" => {
            let error = s
                .last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            match (s.synced, s.connected) {
                (false, _) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "config: pending (waiting for the first complete list from the Kubernetes API server{error})\n"
                    ),
                ),
                (true, true) => (
                    StatusCode::OK,
                    "config: ok (Kubernetes API server, connected)\n".to_owned(),
                ),
                (true, false) => (
                    StatusCode::OK,
                    format!(
                        "config: ok (Kubernetes API server unreachable (failing watches: {}): serving the last known state{error})\n",
                        s.failing.join(", ")
                    ),
                ),
            }
        }
        _ => (StatusCode::NOT_FOUND, "try /healthz/ready\n".to_owned()),
    };
    let mut r = Response::new(body::full(text));
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_synced_and_through_an_outage() {
        let mut s = KubeStatus {
            last_error: Some("Pod: connection refused".into()),
            ..KubeStatus::default()
        };
        assert_eq!(
            readiness("/healthz/ready", &s).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        s.synced = true;
        s.failing = vec!["Pod".into()];
        assert_eq!(readiness("/healthz/ready", &s).status(), StatusCode::OK);
        s.connected = true;
        assert_eq!(readiness("/healthz/ready", &s).status(), StatusCode::OK);
        assert_eq!(readiness("/other", &s).status(), StatusCode::NOT_FOUND);
    }
}
