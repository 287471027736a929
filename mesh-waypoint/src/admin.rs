//! Admin endpoint (loopback): `/config_dump` shows what is in force, what was
//! rejected and which references dangle; `/ready` answers 200 once config is loaded.

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
        "virtualServices": snap.tables.iter().map(|t| t.object.to_string()).collect::<Vec<_>>(),
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

pub async fn serve(listener: TcpListener, config: Arc<Config>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let config = config.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let config = config.clone();
                async move { Ok::<_, Infallible>(route(req.uri().path(), &config)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(path: &str, config: &Config) -> Response<Body> {
    match path {
        "/config_dump" => {
            let text = serde_json::to_string_pretty(&config_dump(config))
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            let mut r = Response::new(body::full(text));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/ready" | "/healthz/ready" => Response::new(body::full("ready\n")),
        _ => {
            let mut r = Response::new(body::full("endpoints: /config_dump /ready\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    }
}
