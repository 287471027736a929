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
}

impl AccessLog {
    pub fn flag(&mut self, f: Flag) {
        if !self.flags.contains(&f) {
            self.flags.push(f);
        }
    }

    pub fn emit(&self, method: &http::Method, authority: &str, path: &str, status: u16, started: Instant) {
        let flags: Vec<&str> = self.flags.iter().map(|f| f.code()).collect();
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
            flags = %if flags.is_empty() { "-".to_owned() } else { flags.join(",") },
            jwt = %self.jwt.unwrap_or("-"),
            policy = %self.policy.as_deref().unwrap_or("-"),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}
