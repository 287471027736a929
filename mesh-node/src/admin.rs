//! Admin endpoint (loopback only): `/config_dump` (workloads, services, namespaces,
//! rejected configuration, authorization policies, readiness, and whatever sections subsystems add, such as
//! certificates), `/workloads` and `/summary` (generation and sizes of the view).

use std::sync::{Arc, Mutex};

use http::StatusCode;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::config::StateRx;
use crate::http_server::{self, Body};
use crate::readiness::Readiness;

type Section = Arc<dyn Fn() -> Value + Send + Sync>;

/// Extra `/config_dump` sections registered by subsystems at start-up.
#[derive(Clone, Default)]
pub struct Sections(Arc<Mutex<Vec<(&'static str, Section)>>>);

impl Sections {
    pub fn add(&self, name: &'static str, f: impl Fn() -> Value + Send + Sync + 'static) {
        if let Ok(mut v) = self.0.lock() {
            v.push((name, Arc::new(f)));
        }
    }

    fn render(&self) -> Vec<(&'static str, Value)> {
        let sections: Vec<_> = self.0.lock().map(|v| v.clone()).unwrap_or_default();
        sections.into_iter().map(|(n, f)| (n, f())).collect()
    }
}

#[derive(Clone)]
pub struct Admin {
    pub state: StateRx,
    pub readiness: Readiness,
    pub sections: Sections,
}

impl Admin {
    pub async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        match req.uri().path() {
            "/config_dump" => http_server::json(&self.config_dump()),
            "/workloads" => http_server::json(&self.workloads()),
            "/summary" => http_server::json(&self.summary()),
            _ => http_server::text(StatusCode::NOT_FOUND, "endpoints: /config_dump /workloads /summary\n"),
        }
    }

    /// Sizes and generation of the view in force: cheap at any cluster size.
    fn summary(&self) -> Value {
        let state = self.state.borrow().clone();
        json!({
            "node": state.node,
            "generation": state.generation,
            "workloads": state.view.workload_count(),
            "services": state.view.service_count(),
            "namespaces": state.view.namespaces().count(),
        })
    }

    fn workloads(&self) -> Value {
        let state = self.state.borrow().clone();
        let mut list: Vec<_> = state.view.workloads().cloned().collect();
        list.sort_by_key(|w| w.key());
        let rows: Vec<Value> = list
            .iter()
            .map(|w| {
                json!({
                    "workload": w.key(), "ip": w.ip, "node": w.node, "identity": w.identity(),
                    "enrolled": w.enrolled, "local": w.node == state.node, "ready": w.ready,
                })
            })
            .collect();
        Value::Array(rows)
    }

    fn config_dump(&self) -> Value {
        let state = self.state.borrow().clone();
        let readiness: serde_json::Map<String, Value> = self
            .readiness
            .snapshot()
            .into_iter()
            .map(|(k, c)| (k.to_owned(), json!(format!("{c:?}"))))
            .collect();
        let mut dump = json!({
            "node": state.node,
            "generation": state.generation,
            "readiness": readiness,
            "workloads": self.workloads(),
            "services": state.view.services().collect::<Vec<_>>(),
            "namespaces": state.view.namespaces().map(|(_, n)| n).collect::<Vec<_>>(),
            "config_errors": state.config_errors,
            "authorization": crate::policy::authz::dump(&state),
        });
        for (name, value) in self.sections.render() {
            dump[name] = value;
        }
        dump
    }
}
