//! Admin endpoint (loopback): `/config_dump` shows what is in force, what was
//! rejected and which references dangle; `/ready` is [`crate::readiness::check`];
//! `/stats/prometheus` and `/metrics` serve Istio's request metrics, which
//! [`serve_stats`] also serves alone on the pod's stats port (15020) for Prometheus
//! (with `--ca-address` also this proxy's CA metrics, and its certificate under
//! `certificate` of `/config_dump`).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::config::Config;
use crate::hbone::identity::ProxyIdentity;
use crate::metrics::RequestMetrics;

pub fn config_dump(config: &Config) -> serde_json::Value {
    let snap = config.load();
    let backends: Vec<_> = {
        let mut keys: Vec<_> = snap.backends.values().collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        keys.into_iter()
            .map(|b| json!({
                "backend": b.key.to_string(),
                "endpoints": b.endpoints.iter().map(|e| e.addr.to_string()).collect::<Vec<_>>(),
                "healthy": b.healthy(std::time::Instant::now()).iter().map(|e| e.addr.to_string()).collect::<Vec<_>>(),
                "loadBalancer": format!("{:?}", b.policy.lb),
                "pendingRequests": b.pool.pending(),
            }))
            .collect()
    };
    let gateway = match (&snap.gateway, config.gateway_state()) {
        (Some(plan), Some(state)) => {
            let mut g = plan.summary();
            g["listeners"] = crate::gateway::listener_summary(state);
            g
        }
        _ => serde_json::Value::Null,
    };
    json!({
        "generation": snap.generation,
        "gateway": gateway,
        "namespace": snap.namespace,
        "virtualServices": snap.tables.iter().filter(|t| t.object.kind == "VirtualService").map(|t| t.object.to_string()).collect::<Vec<_>>(),
        "httpRoutes": snap.http_routes,
        "httpRouteStatus": snap.http_route_status,
        "routeTables": route_tables(&snap),
        "destinationRules": snap.rules.values().map(|r| r.object.to_string()).collect::<Vec<_>>(),
        "services": snap.discovery.services.values().collect::<Vec<_>>(),
        "backends": backends,
        "rejected": snap.rejected,
        "warnings": snap.warnings,
        "requestAuthentications": snap.authn.objects(),
        "authorizationPolicies": snap.authz.policies().iter().map(|p| p.object.to_string()).collect::<Vec<_>>(),
        "requestAuthentication": {
            "rules": snap.authn.summary(),
            "jwks": config.jwks().summary(),
        },
    })
}

/// Which object's rules route each host the waypoint has HTTP routes for (HTTPRoutes
/// win over a VirtualService naming the same Service).
fn route_tables(snap: &crate::config::Snapshot) -> serde_json::Value {
    snap.tables
        .iter()
        .filter(|t| t.object.kind == "HTTPRoute")
        .map(|t| {
            json!({
                "hosts": t.hosts,
                "kind": t.object.kind,
                "routes": t.http.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Binds the admin listener and serves it until `stop` changes.
pub async fn spawn(
    addr: std::net::SocketAddr,
    config: Arc<Config>,
    metrics: Arc<RequestMetrics>,
    identity: Option<Arc<ProxyIdentity>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<std::net::SocketAddr, crate::StartError> {
    let (l, bound) = bind(addr).await?;
    tokio::spawn(async move {
        tokio::select! { _ = serve(l, config, metrics, identity) => {}, _ = stop.changed() => {} }
    });
    Ok(bound)
}

/// Binds the stats listener and serves it until `stop` changes.
pub async fn spawn_stats(
    addr: std::net::SocketAddr,
    metrics: Arc<RequestMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<std::net::SocketAddr, crate::StartError> {
    let (l, bound) = bind(addr).await?;
    tokio::spawn(async move {
        tokio::select! { _ = serve_stats(l, metrics) => {}, _ = stop.changed() => {} }
    });
    Ok(bound)
}

async fn bind(addr: std::net::SocketAddr) -> Result<(TcpListener, std::net::SocketAddr), crate::StartError> {
    let listen = |source| crate::StartError::Listen { addr, source };
    let l = TcpListener::bind(addr).await.map_err(listen)?;
    let bound = l.local_addr().map_err(listen)?;
    Ok((l, bound))
}

pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    metrics: Arc<RequestMetrics>,
    identity: Option<Arc<ProxyIdentity>>,
) {
    serve_with(listener, move |path| {
        route(path, &config, &metrics, identity.as_deref())
    })
    .await
}

/// The stats port: metrics only (it listens on the pod's address, unlike the admin port).
pub async fn serve_stats(listener: TcpListener, metrics: Arc<RequestMetrics>) {
    serve_with(listener, move |path| match stats(path, &metrics) {
        Some(r) => r,
        None => not_found("endpoints: /stats/prometheus /metrics\n"),
    })
    .await
}

pub(crate) async fn serve_with(
    listener: TcpListener,
    route: impl Fn(&str) -> Response<Body> + Clone + Send + Sync + 'static,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let r = route(req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn stats(path: &str, metrics: &RequestMetrics) -> Option<Response<Body>> {
    matches!(path, "/stats/prometheus" | "/metrics").then(|| {
        let mut r = Response::new(body::full(metrics.encode()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    })
}

pub(crate) fn not_found(text: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

fn route(path: &str, config: &Config, metrics: &RequestMetrics, identity: Option<&ProxyIdentity>) -> Response<Body> {
    if let Some(r) = stats(path, metrics) {
        return r;
    }
    match path {
        "/config_dump" => {
            let mut dump = config_dump(config);
            // This proxy's mesh certificate (null without --ca-address).
            dump["certificate"] = identity.map_or(serde_json::Value::Null, ProxyIdentity::dump);
            let text = serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            let mut r = Response::new(body::full(text));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/ready" | "/healthz/ready" => crate::readiness::check(config, identity),
        _ => not_found("endpoints: /config_dump /ready /stats/prometheus /metrics\n"),
    }
}
