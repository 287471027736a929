//! Kubernetes mode (`mesh-waypoint run --kubernetes`): the same Kubernetes source as
//! the node daemon (mesh-common's [`KubeSource`]) feeds the waypoint's [`Config`],
//! with the waypoint's own validation (routes and subsets that do not compile are
//! rejected alone and reported as Events). Pods of every node are read: a waypoint
//! routes to endpoints anywhere. `/healthz/ready` (15021 in the rendered Deployment)
//! answers 200 once everything has been listed, and stays 200 through an API server
//! outage with detail saying so.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_common::source::kube::{KubeSource, KubeSourceConfig, KubeSourceError, Retry, SharedStore, SourceStatus};
use mesh_common::source::runner::Feed;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{self, Body};
use crate::config::Config;

/// Connects with the pod's service account and follows the API server into `config`
/// (mesh-common's source runner: a snapshot per change, once every kind is listed).
/// `instance` (the pod name) is the reporting instance of our Events. The ingress
/// gateway passes its namespace as `secrets_namespace`: its `credentialName` Secrets are
/// watched there (and only there); a waypoint passes `None` and reads no Secret. The
/// returned feed runs as long as it is held.
pub async fn start(
    config: Arc<Config>,
    instance: Option<String>,
    secrets_namespace: Option<String>,
) -> Result<Arc<Feed<Arc<Config>>>, KubeSourceError> {
    let store = SharedStore::default();
    let source_config = KubeSourceConfig {
        controller: "mesh.io/mesh-waypoint".into(),
        instance,
        record_events: true,
        retry: Retry::Default,
        secrets_namespace,
    };
    let source = KubeSource::connect(source_config, store.clone(), Arc::new(crate::config::validate)).await?;
    Ok(Feed::start(source, store, config))
}

/// `GET /healthz/ready`: 200 once the configuration is complete, 503 before.
pub async fn serve_readiness(listener: TcpListener, status: watch::Receiver<SourceStatus>) {
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

fn readiness(path: &str, s: &SourceStatus) -> Response<Body> {
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
        let mut s = SourceStatus {
            last_error: Some("Pod: connection refused".into()),
            ..SourceStatus::default()
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
