//! Readiness: named conditions (eBPF loaded, configuration read, ...) that must all
//! hold. `GET /healthz/ready` answers 200 or 503 with one line per condition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use hyper::body::Incoming;

use crate::http_server::{self, Body};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    Pending(String),
    Ok(String),
}

#[derive(Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<BTreeMap<&'static str, Condition>>>,
}

impl Readiness {
    pub fn set(&self, name: &'static str, c: Condition) {
        if let Ok(mut m) = self.conditions.lock() {
            m.insert(name, c);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.snapshot().values().all(|c| matches!(c, Condition::Ok(_)))
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, Condition> {
        self.conditions.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn report(&self) -> String {
        self.snapshot()
            .iter()
            .map(|(name, c)| match c {
                Condition::Ok(d) => format!("{name}: ok ({d})\n"),
                Condition::Pending(d) => format!("{name}: pending ({d})\n"),
            })
            .collect()
    }

    pub async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        if req.uri().path() != "/healthz/ready" {
            return http_server::text(StatusCode::NOT_FOUND, "try /healthz/ready\n");
        }
        let status = if self.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        http_server::text(status, self.report())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_ok() {
        let r = Readiness::default();
        r.set("config", Condition::Pending("not read yet".into()));
        assert!(!r.is_ready());
        r.set("config", Condition::Ok("3 objects".into()));
        r.set("ebpf", Condition::Ok("loaded".into()));
        assert!(r.is_ready());
        r.set("ebpf", Condition::Pending("verifier".into()));
        assert!(!r.is_ready());
        assert!(r.report().contains("ebpf: pending (verifier)"));
    }
}
