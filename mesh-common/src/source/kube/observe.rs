//! A tower layer under kube's client that notices when the API server accepts a
//! watch. kube-runtime's watcher emits nothing when it silently re-opens a watch after
//! an outage, so without this the status would stay "disconnected" until the next
//! object change.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tokio::sync::mpsc;

/// Sends the path of every watch request answered with a success status.
#[derive(Clone)]
pub struct WatchOpened {
    tx: mpsc::UnboundedSender<String>,
}

impl WatchOpened {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

impl<S> tower::Layer<S> for WatchOpened {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            tx: self.tx.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observed<S> {
    inner: S,
    tx: mpsc::UnboundedSender<String>,
}

impl<S, ReqBody, RespBody> tower::Service<Request<ReqBody>> for Observed<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<RespBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let watching = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        let path = watching.then(|| req.uri().path().to_owned());
        let tx = self.tx.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            if let Some(path) = path.filter(|_| response.status().is_success()) {
                let _ = tx.send(path); // the source has stopped: nobody to tell
            }
            Ok(response)
        })
    }
}

/// Whether `path` (`/api/v1/pods`, `/apis/<group>/<version>/<plural>`, possibly with
/// `namespaces/<ns>/`) addresses `plural` of `group`.
pub fn addresses(path: &str, group: &str, plural: &str) -> bool {
    let in_group = if group.is_empty() {
        path.starts_with("/api/")
    } else {
        path.starts_with(&format!("/apis/{group}/"))
    };
    in_group && path.rsplit('/').next() == Some(plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_watch_paths_to_kinds() {
        assert!(addresses("/api/v1/pods", "", "pods"));
        assert!(addresses(
            "/apis/networking.istio.io/v1/virtualservices",
            "networking.istio.io",
            "virtualservices"
        ));
        assert!(addresses(
            "/apis/networking.istio.io/v1/namespaces/a/gateways",
            "networking.istio.io",
            "gateways"
        ));
        assert!(!addresses(
            "/apis/gateway.networking.k8s.io/v1/gateways",
            "networking.istio.io",
            "gateways"
        ));
        assert!(!addresses("/api/v1/namespaces", "", "pods"));
    }
}
