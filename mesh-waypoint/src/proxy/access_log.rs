//! One structured line per request: route, backend, endpoint, attempts, flags, timing.
//! `text` goes through the log (key=value); `json` writes one JSON object per line on
//! stdout with Envoy's usual access-log fields, for log pipelines; `off` writes nothing.

use std::time::{Duration, Instant, SystemTime};

use super::local_reply::Flag;

pub use mesh_common::telemetry::access_log::AccessLogFormat;
use mesh_common::telemetry::access_log::{rfc3339, write_json};

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
    /// The request's span, when tracing is on.
    pub span: Option<crate::trace::RequestSpan>,
}

/// What the line says about the request and its answer besides [`AccessLog`]'s fields.
pub struct Exchange<'a> {
    pub method: &'a http::Method,
    pub authority: &'a str,
    pub path: &'a str,
    pub version: http::Version,
    pub request_id: Option<&'a str>,
    /// The client's SPIFFE id (HBONE peer), when mutual TLS proved it.
    pub peer_principal: Option<&'a str>,
    pub status: u16,
    pub response_bytes: u64,
    pub started: Instant,
    pub start_time: SystemTime,
}

impl AccessLog {
    pub fn flag(&mut self, f: Flag) {
        if !self.flags.contains(&f) {
            self.flags.push(f);
        }
    }

    /// Envoy's response flags, comma-separated, `-` when none.
    pub fn flags_text(&self) -> String {
        mesh_common::telemetry::flags_text(&self.flags)
    }

    pub fn emit(&self, format: AccessLogFormat, x: &Exchange<'_>) {
        match format {
            AccessLogFormat::Text => self.emit_text(x),
            AccessLogFormat::Json => write_json(&self.json_line(x)),
            AccessLogFormat::Off => {}
        }
    }

    fn emit_text(&self, x: &Exchange<'_>) {
        tracing::info!(
            target: "mesh_waypoint::access",
            method = %x.method,
            authority = x.authority,
            path = x.path,
            status = x.status,
            route = self.route.as_deref().unwrap_or("-"),
            backend = self.backend.as_deref().unwrap_or("-"),
            endpoint = self.endpoint.as_deref().unwrap_or("-"),
            attempts = self.attempts,
            flags = %self.flags_text(),
            jwt = %self.jwt.unwrap_or("-"),
            policy = %self.policy.as_deref().unwrap_or("-"),
            duration_ms = x.started.elapsed().as_secs_f64() * 1000.0,
        );
    }

    /// Envoy's default access-log fields, by their usual JSON names.
    pub fn json_line<'a>(&'a self, x: &'a Exchange<'a>) -> JsonLine<'a> {
        JsonLine {
            start_time: start_time(x.start_time),
            method: x.method.as_str(),
            path: x.path,
            protocol: protocol(x.version),
            authority: x.authority,
            response_code: x.status,
            response_flags: self.flags_text(),
            bytes_received: self.request_bytes,
            bytes_sent: x.response_bytes,
            duration: x.started.elapsed().as_millis() as u64,
            upstream_host: self.endpoint.as_deref(),
            upstream_cluster: self.backend.as_deref(),
            route_name: self.route.as_deref(),
            x_request_id: x.request_id,
            downstream_peer_principal: x.peer_principal.map(|p| format!("spiffe://{p}")),
            upstream_attempts: self.attempts,
            authorization_policy: self.policy.as_deref(),
            jwt_refusal: self.jwt,
        }
    }
}

/// One JSON access-log line, serialized straight from borrowed fields (no
/// intermediate JSON tree per request); absent values are `null`.
#[derive(serde::Serialize)]
pub struct JsonLine<'a> {
    start_time: String,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    authority: &'a str,
    response_code: u16,
    response_flags: String,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    upstream_host: Option<&'a str>,
    upstream_cluster: Option<&'a str>,
    route_name: Option<&'a str>,
    x_request_id: Option<&'a str>,
    downstream_peer_principal: Option<String>,
    upstream_attempts: u32,
    authorization_policy: Option<&'a str>,
    jwt_refusal: Option<&'static str>,
}

thread_local! {
    /// The last whole second formatted ([`rfc3339`] without its fraction and `Z`).
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// [`rfc3339`] of `t`, the same text, with the date and time of day formatted once a
/// second per thread: requests of the same second only append the fraction. The
/// calendar formatting was the JSON line's most expensive field.
fn start_time(t: SystemTime) -> String {
    let Ok(since_epoch) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return rfc3339(t);
    };
    let (secs, nanos) = (since_epoch.as_secs(), since_epoch.subsec_nanos());
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs {
            let whole = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            *prefix = whole.trim_end_matches('Z').to_owned();
            *second = secs;
        }
        let mut out = String::with_capacity(prefix.len() + 11);
        out.push_str(prefix);
        if nanos != 0 {
            // As `time` writes it: nine digits without their trailing zeros.
            let mut digits = [b'0'; 9];
            let mut n = nanos;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            let end = 9 - digits.iter().rev().take_while(|&&d| d == b'0').count();
            out.push('.');
            out.extend(digits[..end].iter().map(|&d| char::from(d)));
        }
        out.push('Z');
        out
    })
}

/// Envoy's `%PROTOCOL%`, as `http::Version`'s `Debug` spells it, without formatting.
pub fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-second cache writes what `rfc3339` writes, fraction and all.
    #[test]
    fn start_time_is_rfc3339() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        for nanos in [0, 1, 10, 120, 5_000_000, 123_456_789, 999_999_999, 100_000_000] {
            for secs in [0, 1, 86_399] {
                let t = base + Duration::from_secs(secs) + Duration::from_nanos(nanos);
                assert_eq!(start_time(t), rfc3339(t), "{secs} s + {nanos} ns");
            }
        }
        assert_eq!(start_time(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn json_line_has_envoys_fields() {
        let mut log = AccessLog {
            route: Some("VirtualService bookinfo/reviews http[0]".into()),
            backend: Some("reviews.bookinfo.svc.cluster.local:9080/v2".into()),
            endpoint: Some("198.18.2.2:9080".into()),
            attempts: 2,
            request_bytes: 12,
            ..AccessLog::default()
        };
        log.flag(Flag::NoHealthy);
        let x = Exchange {
            method: &http::Method::GET,
            authority: "reviews:9080",
            path: "/reviews/0",
            version: http::Version::HTTP_11,
            request_id: Some("abc"),
            peer_principal: Some("cluster.local/ns/bookinfo/sa/bookinfo-productpage"),
            status: 503,
            response_bytes: 19,
            started: Instant::now(),
            start_time: SystemTime::UNIX_EPOCH,
        };
        let v = serde_json::to_value(log.json_line(&x)).expect("serializes");
        assert_eq!(v["start_time"], "1970-01-01T00:00:00Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["response_code"], 503);
        assert_eq!(v["response_flags"], "UH");
        assert_eq!(
            (v["bytes_received"].as_u64(), v["bytes_sent"].as_u64()),
            (Some(12), Some(19))
        );
        assert_eq!(v["upstream_host"], "198.18.2.2:9080");
        assert_eq!(v["x_request_id"], "abc");
        assert_eq!(
            v["downstream_peer_principal"],
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage"
        );
        assert_eq!(v["upstream_attempts"], 2);
        assert_eq!(v["jwt_refusal"], serde_json::Value::Null);
        for version in [http::Version::HTTP_10, http::Version::HTTP_11, http::Version::HTTP_2] {
            assert_eq!(protocol(version), format!("{version:?}"));
        }
    }
}
