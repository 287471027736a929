//! One structured line per request: route, backend, endpoint, attempts, flags, timing.
//! `text` goes through the log (key=value); `json` writes one JSON object per line on
//! stdout with Envoy's usual access-log fields, for log pipelines; `off` writes nothing.

use std::time::{Duration, Instant, SystemTime};

use super::local_reply::Flag;

pub use mesh_common::telemetry::access_log::AccessLogFormat;
use mesh_common::telemetry::access_log::{rfc3339, write_object};
use mesh_common::telemetry::{flags_parts, json};

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
            AccessLogFormat::Json => write_object(|o| self.json_fields(x, o)),
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

    /// Envoy's default access-log fields, by their usual JSON names; absent values
    /// are `null`. Written straight into the line's buffer: no JSON tree, no serde,
    /// no `String` per field.
    pub fn json_fields(&self, x: &Exchange<'_>, o: &mut json::Object<'_>) {
        with_start_time(x.start_time, |t| o.str("start_time", t));
        o.str("method", x.method.as_str())
            .str("path", x.path)
            .str("protocol", protocol(x.version))
            .str("authority", x.authority)
            .u64("response_code", u64::from(x.status))
            .concat("response_flags", flags_parts(&self.flags))
            .u64("bytes_received", self.request_bytes)
            .u64("bytes_sent", x.response_bytes)
            .u64("duration", x.started.elapsed().as_millis() as u64)
            .opt_str("upstream_host", self.endpoint.as_deref())
            .opt_str("upstream_cluster", self.backend.as_deref())
            .opt_str("route_name", self.route.as_deref())
            .opt_str("x_request_id", x.request_id);
        match x.peer_principal {
            Some(p) => o.concat("downstream_peer_principal", ["spiffe://", p]),
            None => o.opt_str("downstream_peer_principal", None),
        };
        o.u64("upstream_attempts", u64::from(self.attempts))
            .opt_str("authorization_policy", self.policy.as_deref())
            .opt_str("jwt_refusal", self.jwt);
    }
}

thread_local! {
    /// The last whole second formatted ([`rfc3339`] without its fraction and `Z`), its
    /// length, and after it the fraction of the last time written.
    static SECOND: std::cell::RefCell<(u64, usize, String)> = const { std::cell::RefCell::new((u64::MAX, 0, String::new())) };
}

/// Calls `f` with [`rfc3339`] of `t`, the same text, the date and time of day
/// formatted once a second per thread: requests of the same second only write the
/// fraction, into the same buffer. The calendar formatting was the JSON line's most
/// expensive field.
fn with_start_time<R>(t: SystemTime, f: impl FnOnce(&str) -> R) -> R {
    let Ok(since_epoch) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return f(&rfc3339(t));
    };
    let (secs, nanos) = (since_epoch.as_secs(), since_epoch.subsec_nanos());
    SECOND.with_borrow_mut(|(second, prefix, out)| {
        if *second != secs {
            *out = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            out.truncate(out.trim_end_matches('Z').len());
            *prefix = out.len();
            *second = secs;
        }
        out.truncate(*prefix);
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
        f(out)
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
                assert_eq!(with_start_time(t, str::to_owned), rfc3339(t), "{secs} s + {nanos} ns");
            }
        }
        assert_eq!(
            with_start_time(SystemTime::UNIX_EPOCH, str::to_owned),
            "1970-01-01T00:00:00Z"
        );
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
            path: "/reviews/0?q=\"caf\u{e9}\"\\\n\u{1}",
            version: http::Version::HTTP_11,
            request_id: Some("abc"),
            peer_principal: Some("cluster.local/ns/bookinfo/sa/bookinfo-productpage"),
            status: 503,
            response_bytes: 19,
            started: Instant::now(),
            start_time: SystemTime::UNIX_EPOCH,
        };
        let mut line = Vec::new();
        let mut o = json::Object::begin(&mut line);
        log.json_fields(&x, &mut o);
        o.end();
        let v: serde_json::Value = serde_json::from_slice(&line).expect("one JSON object");
        let mut keys: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut envoys = [
            "start_time",
            "method",
            "path",
            "protocol",
            "authority",
            "response_code",
            "response_flags",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_host",
            "upstream_cluster",
            "route_name",
            "x_request_id",
            "downstream_peer_principal",
            "upstream_attempts",
            "authorization_policy",
            "jwt_refusal",
        ];
        envoys.sort_unstable();
        assert_eq!(keys, envoys, "each of Envoy's fields, once");
        assert_eq!(v["path"], x.path, "escaped and parsed back");
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
