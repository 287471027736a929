//! e2e: request tracing (issue 16) in the Bookinfo lab. The ingress gateway and the
//! waypoint export a span per request over OTLP/gRPC to a real receiver (tonic server
//! with opentelemetry-proto's `TraceService`) bound in the lab's `outside/prometheus`
//! pod; one request through gateway → productpage → waypoint → reviews v3 → waypoint →
//! ratings must come back as one trace rooted at the gateway, with the parent/child
//! links that productpage's and reviews' header forwarding make. Needs root; RAII
//! teardown, also on failure.

use std::collections::BTreeMap;
use std::time::Duration;

use xtask::bookinfo::{self, Lab, LabOptions, collector};
use xtask::harness::wait_for;
use xtask::otlp::{ReceivedSpan, Receiver};

const GATEWAY_SERVICE: &str = "ingressgateway";
const WAYPOINT_SERVICE: &str = "waypoint.bookinfo";

/// The spans carrying `x-request-id: id`, once the gateway's span (the last to end) and
/// the waypoint's spans for reviews and ratings have all arrived.
fn spans_of(receiver: &Receiver, id: &str) -> Vec<ReceivedSpan> {
    let waited = wait_for(&format!("the spans of request {id}"), Duration::from_secs(30), || {
        let spans: Vec<ReceivedSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.attr("guid:x-request-id") == Some(id))
            .collect();
        let has = |upstream: &str| spans.iter().any(|s| upstream_is(s, upstream));
        let root = spans.iter().any(|s| s.service.starts_with(GATEWAY_SERVICE));
        (root && has("reviews") && has("ratings")).then_some(spans)
    });
    waited.unwrap_or_else(|e| panic!("{e}; received: {:#?}", receiver.spans()))
}

fn upstream_is(s: &ReceivedSpan, service: &str) -> bool {
    s.attr("upstream_cluster")
        .is_some_and(|c| c.starts_with(&format!("{service}.bookinfo.svc.cluster.local:")))
}

fn one<'a>(spans: &'a [ReceivedSpan], what: &str, f: impl Fn(&ReceivedSpan) -> bool) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "exactly one {what} span: {spans:#?}");
    found[0]
}

fn print_tree(spans: &[ReceivedSpan]) {
    let by_parent: BTreeMap<&str, Vec<&ReceivedSpan>> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.parent_span_id.as_str()).or_default().push(s);
        m
    });
    fn walk(by_parent: &BTreeMap<&str, Vec<&ReceivedSpan>>, parent: &str, depth: usize) {
        for s in by_parent.get(parent).into_iter().flatten() {
            eprintln!(
                "FIGURE span {}{} [{}] {} status={} route={:?} upstream={:?}",
                "  ".repeat(depth),
                s.span_id,
                s.service,
                s.name,
                s.attr("http.status_code").unwrap_or("-"),
                s.attr("route_name").unwrap_or("-"),
                s.attr("upstream_cluster").unwrap_or("-"),
            );
            walk(by_parent, &s.span_id, depth + 1);
        }
    }
    walk(&by_parent, "", 0);
}

#[test]
fn one_request_through_gateway_and_waypoint_is_one_trace_with_the_right_links() {
    let c = bookinfo::cluster().expect("bookinfo cluster");
    let (receiver, endpoint) = collector::start(&c).expect("OTLP receiver in the lab");
    let opts = LabOptions {
        otlp_endpoint: Some(endpoint),
        ..LabOptions::default()
    };
    let lab = Lab::start(&c, opts).expect("bookinfo lab");
    for f in ["destination-rule-all.yaml", "virtual-service-reviews-v3.yaml"] {
        lab.apply_sample(&c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }

    // No trace context: the gateway starts the trace.
    let id = "tracing-e2e-w3c";
    let page = bookinfo::productpage(&c, &[("x-request-id", id)]).expect("product page");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(bookinfo::reviews_version(&page.body).as_deref(), Some("reviews-v3"));
    let spans = spans_of(&receiver, id);
    print_tree(&spans);
    let traces: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    eprintln!("FIGURE spans of the request: {}, trace ids: {traces:?}", spans.len());
    assert_eq!(traces.len(), 1, "one trace id covers the request: {spans:#?}");

    let root = one(&spans, "root", |s| s.parent_span_id.is_empty());
    assert!(
        root.service.starts_with(GATEWAY_SERVICE),
        "the gateway's span is the root: {root:#?}"
    );
    assert!(upstream_is(root, "productpage"), "{root:#?}");
    let ids: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in &spans {
        assert!(
            s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_str()),
            "every parent is a span of the trace: {s:#?}"
        );
        assert_eq!(s.attr("http.status_code"), Some("200"), "{s:#?}");
        assert!(s.attr("route_name").is_some_and(|r| !r.is_empty()), "{s:#?}");
        assert_eq!(s.attr("response_flags"), Some("-"), "{s:#?}");
        assert_eq!(s.status_code, 0, "{s:#?}");
    }
    let by_id = |sid: &str| spans.iter().find(|s| s.span_id == sid);
    let reviews = one(&spans, "reviews", |s| upstream_is(s, "reviews"));
    let ratings = one(&spans, "ratings", |s| upstream_is(s, "ratings"));
    assert_eq!(reviews.service, WAYPOINT_SERVICE);
    assert_eq!(ratings.service, WAYPOINT_SERVICE);
    // productpage forwards the context it received: reviews' parent served productpage.
    let caller = by_id(&reviews.parent_span_id).expect("reviews' parent");
    assert!(upstream_is(caller, "productpage"), "reviews' parent: {caller:#?}");
    // reviews forwards the waypoint's context: ratings is the reviews span's child.
    assert_eq!(
        ratings.parent_span_id, reviews.span_id,
        "ratings' parent is the reviews span"
    );
    assert!(
        reviews
            .attr("route_name")
            .is_some_and(|r| r.starts_with("VirtualService bookinfo/reviews")),
        "{reviews:#?}"
    );
    assert!(
        reviews.attr("upstream_cluster").is_some_and(|c| c.ends_with("/v3")),
        "{reviews:#?}"
    );
    assert_eq!(
        reviews.attr("source.principal"),
        Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage")
    );
    assert_eq!(
        ratings.attr("destination.principal"),
        Some("spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings")
    );

    // B3 only (a Zipkin-instrumented client): the gateway joins that trace and the
    // waypoint spans hang under it.
    let (trace, parent) = ("463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312");
    let id = "tracing-e2e-b3";
    let headers = [
        ("x-request-id", id),
        ("x-b3-traceid", trace),
        ("x-b3-spanid", parent),
        ("x-b3-sampled", "1"),
    ];
    let page = bookinfo::productpage(&c, &headers).expect("product page (B3)");
    assert_eq!(page.status, 200, "{}", page.body);
    let spans = spans_of(&receiver, id);
    print_tree(&spans);
    assert!(
        spans.iter().all(|s| s.trace_id == trace),
        "B3 trace id kept: {spans:#?}"
    );
    let root = one(&spans, "gateway", |s| s.service.starts_with(GATEWAY_SERVICE));
    assert_eq!(
        root.parent_span_id, parent,
        "the gateway's span is the B3 caller's child"
    );
    let reviews = one(&spans, "reviews", |s| upstream_is(s, "reviews"));
    let ratings = one(&spans, "ratings", |s| upstream_is(s, "ratings"));
    assert_eq!(ratings.parent_span_id, reviews.span_id);
}
