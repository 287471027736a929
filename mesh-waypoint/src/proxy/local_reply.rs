//! Responses the waypoint makes itself. Each says why, in `x-mesh-reason`
//! (a sentence) and `x-mesh-flags` (short codes, also in the access log).

use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

pub const REASON_HEADER: &str = "x-mesh-reason";
pub const FLAGS_HEADER: &str = "x-mesh-flags";

/// Envoy-style response flags, so operators' habits carry over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// No route matched (or the host is unknown).
    NoRoute,
    /// Fault injection: delay.
    DelayInjected,
    /// Fault injection: abort.
    FaultInjected,
    /// Circuit breaker overflow.
    Overflow,
    /// No healthy upstream endpoint.
    NoHealthy,
    /// Upstream connect failure.
    ConnectFailure,
    /// Upstream reset.
    Reset,
    /// Per-try or route timeout.
    Timeout,
    /// A retry was wanted but `maxRetries` was reached.
    RetryOverflow,
    /// Refused by an AuthorizationPolicy (Envoy's RBAC filter code).
    Rbac,
    /// A JWT that RequestAuthentication could not verify (401).
    JwtInvalid,
}

impl Flag {
    pub fn code(self) -> &'static str {
        match self {
            Flag::NoRoute => "NR",
            Flag::DelayInjected => "DI",
            Flag::FaultInjected => "FI",
            Flag::Overflow => "UO",
            Flag::NoHealthy => "UH",
            Flag::ConnectFailure => "UF",
            Flag::Reset => "UR",
            Flag::Timeout => "UT",
            Flag::RetryOverflow => "URX",
            Flag::Rbac => "RBAC",
            Flag::JwtInvalid => "JWT",
        }
    }
}

pub fn reply(status: StatusCode, flag: Flag, reason: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(format!("{reason}\n")));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Ok(v) = HeaderValue::from_str(&sanitize(reason)) {
        h.insert(REASON_HEADER, v);
    }
    h.insert(FLAGS_HEADER, HeaderValue::from_static(flag.code()));
    resp
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect()
}

pub fn add_flags(resp: &mut Response<Body>, flags: &[Flag]) {
    if flags.is_empty() {
        return;
    }
    let mut codes: Vec<&str> = flags.iter().map(|f| f.code()).collect();
    codes.dedup();
    if let Ok(v) = HeaderValue::from_str(&codes.join(",")) {
        resp.headers_mut().insert(FLAGS_HEADER, v);
    }
}
