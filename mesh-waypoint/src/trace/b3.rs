//! Zipkin's B3 propagation as an opentelemetry `TextMapPropagator`: the single `b3`
//! header (`{trace}-{span}[-{sampled}[-{parent}]]`) and the multi `x-b3-*` headers.
//! Our own because the one maintained crate that had it (opentelemetry-zipkin) is
//! deprecated as a whole. Trace ids of 16 hex digits (64-bit) are widened to 128 bits
//! with leading zeros, as B3 specifies; a missing sampling decision counts as sampled
//! (the proxy samples every new trace).

use opentelemetry::Context;
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

pub const SINGLE: &str = "b3";
pub const TRACE_ID: &str = "x-b3-traceid";
pub const SPAN_ID: &str = "x-b3-spanid";
pub const PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const SAMPLED: &str = "x-b3-sampled";
pub const FLAGS: &str = "x-b3-flags";

/// Reads either form (single first); writes both.
#[derive(Debug)]
pub struct B3Propagator {
    fields: [String; 4],
}

impl Default for B3Propagator {
    fn default() -> Self {
        Self {
            fields: [SINGLE, TRACE_ID, SPAN_ID, SAMPLED].map(str::to_owned),
        }
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let sampled = if sc.is_sampled() { "1" } else { "0" };
        injector.set(SINGLE, format!("{}-{}-{sampled}", sc.trace_id(), sc.span_id()));
        injector.set(TRACE_ID, sc.trace_id().to_string());
        injector.set(SPAN_ID, sc.span_id().to_string());
        injector.set(SAMPLED, sampled.to_owned());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match single(extractor).or_else(|| multi(extractor)) {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

fn single(ex: &dyn Extractor) -> Option<SpanContext> {
    let value = ex.get(SINGLE)?.trim();
    let mut parts = value.split('-');
    let (trace, span) = (parts.next()?, parts.next()?);
    let sampled = parts.next().map(sampled_flag).unwrap_or(Some(true))?;
    context(trace, span, sampled)
}

fn multi(ex: &dyn Extractor) -> Option<SpanContext> {
    let (trace, span) = (ex.get(TRACE_ID)?.trim(), ex.get(SPAN_ID)?.trim());
    let debug = ex.get(FLAGS).is_some_and(|f| f.trim() == "1");
    let sampled = match ex.get(SAMPLED) {
        Some(s) => sampled_flag(s.trim())?,
        None => true,
    };
    context(trace, span, sampled || debug)
}

/// `1`/`d` (debug)/`true` sample, `0`/`false` do not; anything else is malformed.
fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn context(trace: &str, span: &str, sampled: bool) -> Option<SpanContext> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(trace.len() == 16 || trace.len() == 32) || span.len() != 16 || !hex(trace) || !hex(span) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn extract(pairs: &[(&str, &str)]) -> SpanContext {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        B3Propagator::default().extract(&map).span().span_context().clone()
    }

    #[test]
    fn single_header_forms() {
        let sc = extract(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]);
        assert_eq!(sc.trace_id().to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(sc.span_id().to_string(), "e457b5a2e4d86bd1");
        assert!(sc.is_sampled() && sc.is_remote());
        let short = extract(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
        assert_eq!(short.trace_id().to_string(), "000000000000000064fe8b2a57d3eff7");
        assert!(!short.is_sampled());
        assert!(
            !extract(&[("b3", "0")]).is_valid(),
            "a bare sampling decision carries no ids"
        );
        assert!(!extract(&[("b3", "xyz-e457b5a2e4d86bd1")]).is_valid());
        assert!(!extract(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-x")]).is_valid());
    }

    #[test]
    fn multi_headers_and_debug_flag() {
        let sc = extract(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ]);
        assert_eq!(sc.trace_id().to_string(), "463ac35c9f6413ad48485a3953bb6124");
        assert!(sc.is_sampled(), "debug implies sampled");
        assert!(!extract(&[("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")]).is_valid());
    }

    #[test]
    fn injects_both_forms() {
        let sc = extract(&[("b3", "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1")]);
        let cx = Context::new().with_remote_span_context(sc);
        let mut out: HashMap<String, String> = HashMap::new();
        B3Propagator::default().inject_context(&cx, &mut out);
        assert_eq!(out["b3"], "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1");
        assert_eq!(out["x-b3-traceid"], "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(out["x-b3-spanid"], "a2fb4a1d1a96d312");
        assert_eq!(out["x-b3-sampled"], "1");
    }
}
