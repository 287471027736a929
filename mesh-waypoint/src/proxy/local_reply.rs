//! Responses the waypoint makes itself. Each says why, in `x-mesh-reason`
//! (a sentence) and `x-mesh-flags` (short codes, also in the access log).

use http::{HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

pub const REASON_HEADER: &str = "x-mesh-reason";
pub const FLAGS_HEADER: &str = "x-mesh-flags";

/// Envoy-style response flags (shared with the node daemon's access log).
pub use mesh_common::telemetry::Flag;

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
