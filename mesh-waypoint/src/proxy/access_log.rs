//! One structured line per request: route, backend, endpoint, attempts, flags, timing.

use std::time::Instant;

use super::local_reply::Flag;

#[derive(Default)]
pub struct AccessLog {
    pub route: Option<String>,
    pub backend: Option<String>,
    pub endpoint: Option<String>,
    pub attempts: u32,
    pub flags: Vec<Flag>,
    /// Why a JWT was refused (401).
    pub jwt: Option<&'static str>,
    /// The AuthorizationPolicy that decided a denial (403), `kind ns/name`.
    pub policy: Option<String>,
    /// The last endpoint tried (its pod is the metrics' destination workload).
    pub endpoint_ip: Option<std::net::IpAddr>,
    /// The routed destination Service's host (the backend's, not the request's Host).
    pub service_host: Option<String>,
    /// Size of the buffered request body.
    pub request_bytes: u64,
}

impl AccessLog {
    pub fn flag(&mut self, f: Flag) {
        if !self.flags.contains(&f) {
            self.flags.push(f);
        }
    }

    /// Envoy's response flags, comma-separated, `-` when none.
    pub fn flags_text(&self) -> String {
        let flags: Vec<&str> = self.flags.iter().map(|f| f.code()).collect();
        if flags.is_empty() {
            "-".to_owned()
        } else {
            flags.join(",")
        }
    }

    pub fn emit(&self, method: &http::Method, authority: &str, path: &str, status: u16, started: Instant) {
        tracing::info!(
            target: "mesh_waypoint::access",
            %method,
            authority,
            path,
            status,
            route = self.route.as_deref().unwrap_or("-"),
            backend = self.backend.as_deref().unwrap_or("-"),
            endpoint = self.endpoint.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            flags = %self.flags_text(),
            jwt = %self.jwt.unwrap_or("-"),
            policy = %self.policy.as_deref().unwrap_or("-"),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}
