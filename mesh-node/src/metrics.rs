//! Prometheus registry served on 15020. Each subsystem registers its own families
//! at start-up through [`Metrics::register`].

use std::sync::{Arc, Mutex};

use http::StatusCode;
use hyper::body::Incoming;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use crate::http_server::{self, Body};

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        mesh_common::telemetry::access_log::register_dropped(&mut registry);
        Self {
            registry: Arc::new(Mutex::new(registry)),
        }
    }
}

impl Metrics {
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        if let Ok(mut r) = self.registry.lock() {
            f(&mut r);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = encode(&mut out, &r);
        }
        out
    }

    pub async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        if req.uri().path() != "/metrics" {
            return http_server::text(StatusCode::NOT_FOUND, "try /metrics\n");
        }
        let mut r = http_server::text(StatusCode::OK, self.encode());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    }
}
