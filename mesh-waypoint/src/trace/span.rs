//! One request's span: started when the request arrives, parent of the upstream
//! request, a `retry` event per extra attempt, Envoy's tags when the answer is known.

use std::time::SystemTime;

use http::HeaderMap;
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, Span, Tracer};

use super::propagation::{self, Incoming};
use crate::route::retry::AttemptResult;

pub struct RequestSpan {
    /// Its span context (this span's id, the caller's trace) is what goes upstream.
    span: Sampled,
    b3: bool,
}

/// A recorded span is the SDK's. A request sampled out (99 in 100 at the default 1%)
/// gets no SDK span at all, only the context the SDK would have given it — a new span
/// id in the caller's trace (or a new trace), the not-sampled flag, the caller's
/// `tracestate` — so the upstream request carries the decision: the SDK's span, even
/// unrecorded, cost a tracer clone, its limits and a drop per request.
enum Sampled {
    /// Boxed: the SDK's span is ~290 bytes, and the common case is the small one.
    Recorded(Box<Span>),
    Out(SpanContext),
}

/// What the span records once the response is known (Envoy's tag names).
pub struct Finished<'a> {
    pub method: &'a str,
    /// `scheme://authority/path` as received.
    pub url: String,
    pub protocol: http::Version,
    pub status: u16,
    pub route: Option<&'a str>,
    pub upstream_cluster: Option<&'a str>,
    pub upstream_address: Option<&'a str>,
    /// Envoy's response flags, `-` when none.
    pub flags: String,
    pub request_id: Option<&'a str>,
    pub request_size: u64,
    pub response_size: u64,
    /// `spiffe://...` when mutual TLS proved the caller.
    pub source_principal: Option<String>,
    /// The answering pod's identity, when it is a known pod.
    pub destination_principal: Option<String>,
}

thread_local! {
    /// The trace id [`RequestSpan::start`] decided to record, for the span it starts next.
    static DECIDED: std::cell::Cell<Option<TraceId>> = const { std::cell::Cell::new(None) };
}

/// The SDK's random ids, except that a new trace started by [`RequestSpan::start`]
/// gets the trace id its sampling decision was taken on: the trace-id ratio sampler
/// then decides the same for that trace id anywhere (what W3C asks of it).
#[derive(Debug)]
pub(super) struct DecidedIds;

impl IdGenerator for DecidedIds {
    fn new_trace_id(&self) -> TraceId {
        DECIDED
            .take()
            .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        RandomIdGenerator::default().new_span_id()
    }
}

impl RequestSpan {
    /// `name` is called only when the span is recorded: a request sampled out builds
    /// no name, tag or event (at the default 1% that is 99 requests in 100).
    ///
    /// `sampler` decides first, as the SDK's tracer would (same parent, same kind, a
    /// trace id from the SDK's generator, no name or attributes: ours reads neither);
    /// only a span it records is started in the SDK, whose own sampler must record
    /// everything, and whose id generator ([`DecidedIds`]) gives a new trace the trace
    /// id decided on.
    pub(super) fn start(
        tracer: &Tracer,
        sampler: &Sampler,
        incoming: Incoming,
        name: impl FnOnce() -> String,
        start: SystemTime,
    ) -> Self {
        let ids = RandomIdGenerator::default();
        let parent = incoming.parent.span();
        let parent = parent.span_context();
        let trace_id = if parent.is_valid() {
            parent.trace_id()
        } else {
            ids.new_trace_id()
        };
        let decision = sampler.should_sample(Some(&incoming.parent), trace_id, "", &SpanKind::Server, &[], &[]);
        let span = match decision.decision {
            SamplingDecision::Drop => Sampled::Out(SpanContext::new(
                trace_id,
                ids.new_span_id(),
                TraceFlags::default(),
                false,
                decision.trace_state,
            )),
            SamplingDecision::RecordOnly | SamplingDecision::RecordAndSample => {
                DECIDED.set(Some(trace_id));
                let span = tracer
                    .span_builder(name())
                    .with_kind(SpanKind::Server)
                    .with_start_time(start)
                    .start_with_context(tracer, &incoming.parent);
                // Unused when the span has a parent (or the provider is shut down).
                DECIDED.set(None);
                Sampled::Recorded(Box::new(span))
            }
        };
        Self { span, b3: incoming.b3 }
    }

    fn context(&self) -> &SpanContext {
        match &self.span {
            Sampled::Recorded(span) => span.span_context(),
            Sampled::Out(sc) => sc,
        }
    }

    /// Sets the upstream request's trace headers: W3C always, B3 when the caller used it.
    pub fn inject(&self, headers: &mut HeaderMap) {
        propagation::inject(self.context(), self.b3, headers);
    }

    /// Attempt `attempt` (1-based) failed with `result` at `endpoint` and is retried.
    pub fn retry(&mut self, attempt: u32, result: AttemptResult, endpoint: Option<&str>) {
        let Sampled::Recorded(span) = &mut self.span else {
            return;
        };
        span.add_event(
            "retry",
            vec![
                KeyValue::new("attempt", i64::from(attempt)),
                KeyValue::new("result", format!("{result:?}")),
                KeyValue::new("upstream_address", endpoint.unwrap_or("-").to_owned()),
            ],
        );
    }

    pub fn trace_id(&self) -> String {
        self.context().trace_id().to_string()
    }

    /// Ends the span with the tags `finished` gives, called only when it is recorded.
    pub fn finish<'a>(self, finished: impl FnOnce() -> Finished<'a>) {
        let Sampled::Recorded(mut span) = self.span else {
            return;
        };
        let f = finished();
        let mut tags = vec![
            KeyValue::new("component", "proxy"),
            KeyValue::new("http.method", f.method.to_owned()),
            KeyValue::new("http.url", f.url),
            KeyValue::new("http.protocol", format!("{:?}", f.protocol)),
            KeyValue::new("http.status_code", i64::from(f.status)),
            KeyValue::new("response_flags", f.flags.clone()),
            KeyValue::new("request_size", f.request_size as i64),
            KeyValue::new("response_size", f.response_size as i64),
        ];
        let optional = [
            ("route_name", f.route.map(str::to_owned)),
            ("upstream_cluster", f.upstream_cluster.map(str::to_owned)),
            ("upstream_address", f.upstream_address.map(str::to_owned)),
            ("guid:x-request-id", f.request_id.map(str::to_owned)),
            ("source.principal", f.source_principal),
            ("destination.principal", f.destination_principal),
        ];
        tags.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| KeyValue::new(k, v))));
        span.set_attributes(tags);
        // As Envoy: a 5xx or a local failure (response flag) marks the span an error.
        if f.status >= 500 || f.flags != "-" {
            span.set_status(Status::error(format!("{} {}", f.status, f.flags)));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    use super::*;
    use crate::trace::RequestTracer;

    /// Keeps what it is given (the SDK's in-memory exporter needs its `testing` feature).
    #[derive(Clone, Debug, Default)]
    struct Kept(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().expect("lock").extend(batch);
            Ok(())
        }
    }

    impl Kept {
        fn get_finished_spans(&self) -> Option<Vec<SpanData>> {
            Some(self.0.lock().ok()?.clone())
        }
    }

    /// Records every span (the default, 1%, would record almost none).
    fn tracer() -> (RequestTracer, Kept) {
        sampling_tracer(1.0)
    }

    fn sampling_tracer(ratio: f64) -> (RequestTracer, Kept) {
        let exporter = Kept::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone());
        (RequestTracer::with_provider(provider, ratio), exporter)
    }

    /// `--trace-sampling` decides new traces only; a caller's sampled flag wins.
    #[test]
    fn sampling_ratio_applies_to_new_traces_and_the_parent_decides_otherwise() {
        let count = |ratio: f64, traceparent: Option<&'static str>| {
            let (t, exported) = sampling_tracer(ratio);
            let mut h = HeaderMap::new();
            if let Some(tp) = traceparent {
                h.insert("traceparent", http::HeaderValue::from_static(tp));
            }
            for _ in 0..20 {
                t.begin(&h, || "reviews:9080/*".into(), SystemTime::now())
                    .finish(|| finished(200, "-"));
            }
            exported.get_finished_spans().map_or(0, |s| s.len())
        };
        const SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        const NOT_SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert_eq!(count(1.0, None), 20);
        assert_eq!(count(0.0, None), 0);
        assert_eq!(count(0.0, Some(SAMPLED)), 20, "the caller sampled it");
        assert_eq!(count(1.0, Some(NOT_SAMPLED)), 0, "the caller did not");
        assert!(crate::trace::parse_sampling("0.01").is_ok());
        assert_eq!(crate::trace::DEFAULT_SAMPLING, 0.01, "Istio's mesh default");
    }

    /// A new trace is recorded under the trace id it was sampled on: the SDK's
    /// trace-id ratio sampler, asked again about each recorded trace id, records it.
    #[test]
    fn a_recorded_new_trace_keeps_the_trace_id_it_was_sampled_on() {
        let (t, exported) = sampling_tracer(0.5);
        for _ in 0..200 {
            t.begin(&HeaderMap::new(), || "reviews:9080/*".into(), SystemTime::now())
                .finish(|| finished(200, "-"));
        }
        let spans = exported.get_finished_spans().unwrap_or_default();
        assert!((50..150).contains(&spans.len()), "about half recorded: {}", spans.len());
        let ratio = Sampler::TraceIdRatioBased(0.5);
        for s in &spans {
            let again = ratio.should_sample(None, s.span_context.trace_id(), "", &SpanKind::Server, &[], &[]);
            assert_eq!(
                again.decision,
                SamplingDecision::RecordAndSample,
                "{:?}",
                s.span_context
            );
        }
    }

    /// A request sampled out builds no name, tags or events: its closures are not called.
    #[test]
    fn a_span_sampled_out_costs_no_name_or_tags() {
        let (t, exported) = sampling_tracer(0.0);
        let called = std::cell::Cell::new(0);
        let mut span = t.begin(
            &HeaderMap::new(),
            || {
                called.set(called.get() + 1);
                "reviews:9080/*".into()
            },
            SystemTime::now(),
        );
        let mut up = HeaderMap::new();
        span.inject(&mut up);
        span.retry(1, AttemptResult::Status(503), Some("198.18.2.2:9080"));
        span.finish(|| {
            called.set(called.get() + 1);
            finished(200, "-")
        });
        assert_eq!(called.get(), 0);
        assert_eq!(exported.get_finished_spans().map_or(0, |s| s.len()), 0);
        let tp = up
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("traceparent");
        assert!(tp.ends_with("-00"), "the decision goes upstream: {tp}");
        assert!(crate::trace::parse_sampling("1.5").is_err());
        assert!(crate::trace::parse_sampling("-0.1").is_err());
    }

    fn finished(status: u16, flags: &str) -> Finished<'static> {
        Finished {
            method: "GET",
            url: "http://reviews:9080/reviews/0".into(),
            protocol: http::Version::HTTP_11,
            status,
            route: Some("VirtualService bookinfo/reviews http[0]"),
            upstream_cluster: Some("reviews.bookinfo.svc.cluster.local:9080/v2"),
            upstream_address: Some("198.18.2.2:9080"),
            flags: flags.into(),
            request_id: Some("abc"),
            request_size: 0,
            response_size: 10,
            source_principal: Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage".into()),
            destination_principal: None,
        }
    }

    #[test]
    fn child_of_the_callers_span_and_parent_of_the_upstream_request() {
        let (t, exported) = tracer();
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let mut span = t.begin(&h, || "reviews:9080/*".into(), SystemTime::now());
        let mut up = h.clone();
        span.inject(&mut up);
        span.retry(1, AttemptResult::Status(503), Some("198.18.2.2:9080"));
        span.finish(|| finished(200, "-"));
        let spans = exported.get_finished_spans().expect("spans");
        let s = &spans[0];
        assert_eq!(s.name, "reviews:9080/*");
        assert_eq!(
            s.span_context.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(s.parent_span_id.to_string(), "b7ad6b7169203331");
        let tp = up
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .expect("traceparent upstream");
        assert_eq!(
            tp,
            format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", s.span_context.span_id())
        );
        assert!(up.get("b3").is_none(), "no B3 unless the caller used it");
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "retry");
        let tag = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(tag("http.status_code").as_deref(), Some("200"));
        assert_eq!(
            tag("route_name").as_deref(),
            Some("VirtualService bookinfo/reviews http[0]")
        );
        assert_eq!(tag("upstream_address").as_deref(), Some("198.18.2.2:9080"));
        assert_eq!(tag("destination.principal"), None);
        assert_eq!(s.status, Status::Unset);
    }

    #[test]
    fn a_request_without_context_starts_a_trace_and_errors_are_marked() {
        let (t, exported) = tracer();
        let span = t.begin(&HeaderMap::new(), || "productpage:9080/*".into(), SystemTime::now());
        let mut up = HeaderMap::new();
        span.inject(&mut up);
        span.finish(|| finished(503, "UH"));
        let spans = exported.get_finished_spans().expect("spans");
        assert_eq!(spans[0].parent_span_id, opentelemetry::trace::SpanId::INVALID);
        assert!(up.contains_key("traceparent"));
        assert!(matches!(spans[0].status, Status::Error { .. }));
    }
}
