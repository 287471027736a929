//! `corsPolicy`: answer matching preflights here, decorate actual responses.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};

use super::string_match::StrMatch;

#[derive(Clone, Debug)]
pub struct Cors {
    pub allow_origins: Vec<StrMatch>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: bool,
    /// `unmatchedPreflights: IGNORE` answers unmatched preflights here without CORS headers.
    pub ignore_unmatched_preflights: bool,
}

pub enum CorsDecision {
    /// Not a CORS request, or origin not allowed: forward unchanged.
    Forward,
    /// Allowed actual request: forward, then add these headers to the response.
    ForwardAndDecorate(HeaderMap),
    /// Answer 200 here with these headers (preflight).
    Respond(HeaderMap),
}

impl Cors {
    pub fn decide(&self, method: &Method, headers: &HeaderMap) -> CorsDecision {
        let Some(origin) = headers.get(http::header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return CorsDecision::Forward;
        };
        let preflight = method == Method::OPTIONS && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = self
            .allow_origins
            .iter()
            .any(|m| matches!(m, StrMatch::Exact(e) if e == "*") || m.matches(origin));
        match (preflight, allowed) {
            (true, true) => CorsDecision::Respond(self.preflight_headers(origin)),
            (true, false) if self.ignore_unmatched_preflights => CorsDecision::Respond(HeaderMap::new()),
            (false, true) => CorsDecision::ForwardAndDecorate(self.actual_headers(origin)),
            _ => CorsDecision::Forward,
        }
    }

    fn preflight_headers(&self, origin: &str) -> HeaderMap {
        let mut h = self.actual_headers(origin);
        put(&mut h, "access-control-allow-methods", &self.allow_methods.join(","));
        put(&mut h, "access-control-allow-headers", &self.allow_headers.join(","));
        if let Some(age) = self.max_age {
            put(&mut h, "access-control-max-age", &age.as_secs().to_string());
        }
        h
    }

    fn actual_headers(&self, origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        put(&mut h, "access-control-allow-origin", origin);
        put(&mut h, "access-control-expose-headers", &self.expose_headers.join(","));
        if self.allow_credentials {
            put(&mut h, "access-control-allow-credentials", "true");
        }
        h
    }
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let (false, Ok(v)) = (value.is_empty(), HeaderValue::from_str(value)) {
        h.insert(name, v);
    }
}
