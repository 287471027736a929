//! Trace context in and out of HTTP headers: W3C `traceparent` / `tracestate` (always
//! sent upstream, opentelemetry's `TraceContextPropagator`) and B3, single `b3` or multi
//! `x-b3-*` (sent in both forms when the request came with either, [`super::b3`]).

use std::sync::LazyLock;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::b3::{self, B3Propagator};

static W3C: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);
static B3: LazyLock<B3Propagator> = LazyLock::new(B3Propagator::default);

/// Every header B3 uses; stale ones are removed before the new context is written.
/// Names, not strings: a lookup by `&str` parses and checks the name every time, and
/// every request (traced or not) looks these up.
const B3_HEADERS: [HeaderName; 6] = [
    HeaderName::from_static(b3::SINGLE),
    HeaderName::from_static(b3::TRACE_ID),
    HeaderName::from_static(b3::SPAN_ID),
    HeaderName::from_static(b3::PARENT_SPAN_ID),
    HeaderName::from_static(b3::SAMPLED),
    HeaderName::from_static(b3::FLAGS),
];
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The caller's trace context, if any, and how it arrived.
pub struct Incoming {
    /// Empty (no span) when the request carried no valid context: the span starts a trace.
    pub parent: Context,
    /// The request used B3, so the upstream request gets B3 too.
    pub b3: bool,
}

/// W3C first (the mesh's own format); B3 when there is no valid `traceparent`.
pub fn extract(headers: &HeaderMap) -> Incoming {
    let b3 = B3_HEADERS.iter().any(|h| headers.contains_key(h));
    if headers.contains_key(TRACEPARENT) {
        let w3c = W3C.extract_with_context(&Context::new(), &Carrier(headers));
        if w3c.span().span_context().is_valid() {
            return Incoming { parent: w3c, b3 };
        }
    }
    if b3 {
        let cx = B3.extract(&Carrier(headers));
        if cx.span().span_context().is_valid() {
            return Incoming { parent: cx, b3 };
        }
    }
    Incoming {
        parent: Context::new(),
        b3: false,
    }
}

/// Writes `sc` (this proxy's span) as the upstream request's trace context: W3C's
/// `traceparent`, `tracestate` when the caller sent a non-empty one, and B3 too when
/// `b3`. The W3C header is written here rather than by the SDK's propagator, which
/// formats it through `format!` and sends an empty `tracestate` on every request,
/// sampled or not; the header is the same (version 00, only the sampled flag).
pub fn inject(sc: &SpanContext, b3: bool, headers: &mut HeaderMap) {
    if !sc.is_valid() {
        return;
    }
    if let Ok(v) = traceparent(sc) {
        headers.insert(TRACEPARENT, v);
    }
    let state = sc.trace_state();
    if *state != TraceState::NONE
        && let Ok(v) = HeaderValue::try_from(state.header())
        && !v.is_empty()
    {
        headers.insert(TRACESTATE, v);
    } else {
        headers.remove(TRACESTATE);
    }
    if b3 {
        for h in B3_HEADERS {
            headers.remove(h);
        }
        let cx = Context::new().with_remote_span_context(sc.clone());
        B3.inject_context(&cx, &mut CarrierMut(headers));
    }
}

/// `00-{trace id}-{span id}-{flags}`, lower-case hex, as the W3C propagator writes it.
fn traceparent(sc: &SpanContext) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 55];
    out[..3].copy_from_slice(b"00-");
    let sampled = (sc.trace_flags() & TraceFlags::SAMPLED).to_u8();
    let fields: [(&[u8], usize); 3] = [
        (&sc.trace_id().to_bytes(), 3),
        (&sc.span_id().to_bytes(), 36),
        (&[sampled], 53),
    ];
    for (bytes, at) in fields {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[usize::from(b >> 4)];
            out[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
    }
    out[35] = b'-';
    out[52] = b'-';
    HeaderValue::from_bytes(&out)
}

struct Carrier<'a>(&'a HeaderMap);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct CarrierMut<'a>(&'a mut HeaderMap);

impl Injector for CarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(v)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::try_from(*k).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn w3c_traceparent_is_understood() {
        let h = headers(&[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]);
        let inc = extract(&h);
        let sc = inc.parent.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_sampled());
        assert!(!inc.b3);
    }

    #[test]
    fn b3_multi_and_single_are_understood() {
        let multi = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let single = headers(&[("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1")]);
        for h in [multi, single] {
            let inc = extract(&h);
            let sc = inc.parent.span().span_context().clone();
            assert_eq!(sc.trace_id().to_string(), "463ac35c9f6413ad48485a3953bb6124");
            assert_eq!(sc.span_id().to_string(), "a2fb4a1d1a96d312");
            assert!(inc.b3);
        }
    }

    /// The same `traceparent` as opentelemetry's W3C propagator, sampled or not.
    #[test]
    fn traceparent_is_the_sdk_propagators() {
        use opentelemetry::trace::{SpanId, TraceId};
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let sc = SpanContext::new(
                TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
                SpanId::from(0x00f067aa0ba902b7_u64),
                flags,
                true,
                TraceState::NONE,
            );
            let mut sdk = HeaderMap::new();
            let cx = Context::new().with_remote_span_context(sc.clone());
            W3C.inject_context(&cx, &mut CarrierMut(&mut sdk));
            let mut ours = HeaderMap::new();
            inject(&sc, false, &mut ours);
            assert_eq!(ours.get("traceparent"), sdk.get("traceparent"));
        }
    }

    /// A caller's `tracestate` goes on; none (or an empty one) sends none.
    #[test]
    fn tracestate_goes_upstream_only_when_the_caller_sent_one() {
        const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let with = headers(&[("traceparent", TP), ("tracestate", "congo=t61rcWkgMzE")]);
        let without = headers(&[("traceparent", TP), ("tracestate", "")]);
        let upstream = |h: &HeaderMap| {
            let mut up = h.clone();
            inject(extract(h).parent.span().span_context(), false, &mut up);
            up
        };
        let up = upstream(&with);
        assert_eq!(up.get("traceparent").map(|v| v.as_bytes()), Some(TP.as_bytes()));
        assert_eq!(
            up.get("tracestate").map(|v| v.as_bytes()),
            Some(&b"congo=t61rcWkgMzE"[..])
        );
        assert_eq!(upstream(&without).get("tracestate"), None);
    }

    #[test]
    fn garbage_starts_a_new_trace() {
        let h = headers(&[("traceparent", "00-zz-yy-01"), ("x-b3-traceid", "nothex")]);
        let inc = extract(&h);
        assert!(!inc.parent.span().span_context().is_valid());
        assert!(!inc.b3);
    }

    #[test]
    fn b3_requests_get_both_forms_upstream_and_stale_b3_goes() {
        let h = headers(&[
            (
                "b3",
                "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1-0020000000000001",
            ),
            ("x-b3-parentspanid", "0020000000000001"),
        ]);
        let inc = extract(&h);
        let mut up = h.clone();
        inject(inc.parent.span().span_context(), inc.b3, &mut up);
        let tp = up
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("traceparent");
        assert_eq!(tp, "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01");
        assert_eq!(
            up.get("x-b3-traceid").expect("x-b3-traceid"),
            "463ac35c9f6413ad48485a3953bb6124"
        );
        assert!(up.get("b3").is_some());
        assert!(up.get("x-b3-parentspanid").is_none(), "stale parent id removed");
    }
}
