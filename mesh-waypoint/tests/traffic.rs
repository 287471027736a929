//! Statistical and load behaviour through a real waypoint: weighted splits, fault
//! rates, fault + retry, outlier ejection and restoration, circuit breaking, and
//! hot reload under 200 concurrent requests. Every loop is bounded.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Lab, burst, eventually, reviews_vs};

fn share(replies: &[support::Reply], pred: impl Fn(&support::Reply) -> bool) -> f64 {
    100.0 * replies.iter().filter(|r| pred(r)).count() as f64 / replies.len() as f64
}

async fn split(lab: &Arc<Lab>, a: u32, b: u32) {
    lab.apply("vs.yaml", &reviews_vs(&format!("  - route:\n    - {{destination: {{host: reviews, subset: v1}}, weight: {a}}}\n    - {{destination: {{host: reviews, subset: v2}}, weight: {b}}}\n")));
    let l = lab.clone();
    let replies = burst(lab, 10_000, 32, move |_| l.request("reviews:9080", "/")).await;
    assert!(replies.iter().all(|r| r.status == 200), "every request served");
    let v1 = share(&replies, |r| r.version() == "v1");
    assert!((v1 - a as f64).abs() <= 1.5, "{a}/{b} split gave v1 {v1:.2}%");
    println!("split {a}/{b}: v1 {v1:.2}% over {} requests", replies.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_95_5_and_50_50_within_1_5_points() {
    let lab = Arc::new(Lab::bookinfo().await);
    split(&lab, 95, 5).await;
    split(&lab, 50, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_50_percent_within_3_points() {
    let lab = Arc::new(Lab::bookinfo().await);
    lab.apply("vs.yaml", &reviews_vs("  - fault: {abort: {httpStatus: 500, percentage: {value: 50}}}\n    route: [{destination: {host: reviews, subset: v1}}]\n"));
    let l = lab.clone();
    let replies = burst(&lab, 4000, 32, move |_| l.request("reviews:9080", "/")).await;
    let aborted = share(&replies, |r| r.status == 500 && r.header("x-mesh-flags").contains("FI"));
    let served = share(&replies, |r| r.status == 200);
    assert!((aborted - 50.0).abs() <= 3.0, "aborted {aborted:.2}%");
    assert!(
        (aborted + served - 100.0).abs() < 1e-9,
        "every reply is an abort or a success"
    );
    println!("abort 50%: {aborted:.2}% aborted over 4000");
}

/// Faults apply per attempt: with abort probability p = 0.5 and 3 retries (4
/// attempts), a request fails only if all 4 attempts abort: 0.5^4 = 6.25 %, so the
/// success rate is 1 - 0.5^4 = 93.75 %. Over 4000 requests the standard deviation is
/// sqrt(0.9375 × 0.0625 / 4000) ≈ 0.38 points; we allow ±2 (> 5σ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_with_retries_succeeds_at_one_minus_p_to_the_attempts() {
    let lab = Arc::new(Lab::bookinfo().await);
    lab.apply(
        "vs.yaml",
        &reviews_vs("  - fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n    retries: {attempts: 3, retryOn: 5xx, backoff: 1ms}\n    route: [{destination: {host: reviews, subset: v1}}]\n"),
    );
    let l = lab.clone();
    let replies = burst(&lab, 4000, 32, move |_| l.request("reviews:9080", "/")).await;
    let success = share(&replies, |r| r.status == 200);
    let expected = 100.0 * (1.0 - 0.5f64.powi(4));
    assert!(
        (success - expected).abs() <= 2.0,
        "success {success:.2}% vs expected {expected:.2}%"
    );
    println!("abort 50% + 3 retries: success {success:.2}% (expected {expected:.2}%)");
}

/// One endpoint answers 503 to everything: with `retryOn: 5xx` every request still
/// succeeds, from another endpoint, and the failing one was tried (so the success is
/// the retry's doing, not the balancer skipping it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_5xx_succeed_on_another_endpoint() {
    let lab = Lab::bookinfo().await;
    lab.reviews[0]
        .fixed_status
        .store(503, std::sync::atomic::Ordering::Relaxed);
    lab.apply(
        "vs.yaml",
        &reviews_vs("  - retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: reviews}}]\n"),
    );
    let mut versions = Vec::new();
    for _ in 0..30 {
        let r = lab.get("/").await;
        assert_eq!(r.status, 200, "retried onto a healthy endpoint: {r:?}");
        versions.push(r.version());
    }
    assert!(
        versions.iter().all(|v| v != "v1"),
        "the failing v1 never answered: {versions:?}"
    );
    assert!(
        lab.reviews[0].hits() > 0,
        "v1 was tried first at least once, so retries happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_7s_for_jason_only() {
    let lab = Arc::new(Lab::bookinfo().await);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../samples/bookinfo/virtual-service-ratings-test-delay.yaml"
    ))
    .expect("sample");
    // The Bookinfo sample, pointed at the lab's reviews service.
    lab.apply("vs.yaml", &text.replace("ratings", "reviews"));
    assert!(lab.waypoint.config.load().rejected.is_empty());
    let l = lab.clone();
    let jason = tokio::spawn(async move { l.send(l.request("reviews:9080", "/").header("end-user", "jason")).await });
    for _ in 0..20 {
        let r = lab
            .send(lab.request("reviews:9080", "/").header("end-user", "mary"))
            .await;
        assert_eq!(r.status, 200);
        assert!(!r.header("x-mesh-flags").contains("DI"), "others are not delayed");
        assert!(
            r.elapsed < Duration::from_secs(7),
            "others are not held for the 7 s delay: {:?}",
            r.elapsed
        );
    }
    let r = jason.await.expect("jason request");
    assert_eq!(r.status, 200);
    assert!(r.elapsed >= Duration::from_secs(7), "jason waited {:?}", r.elapsed);
    assert!(r.header("x-mesh-flags").contains("DI"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_5xx_endpoint_and_restores_it() {
    let lab = Lab::bookinfo().await;
    lab.apply(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews-od, namespace: bookinfo}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 100ms, baseEjectionTime: 1s, maxEjectionPercent: 100}\n",
    );
    // The bookinfo DestinationRule (same host, subsets) would win by name; drop it.
    let text = support::bookinfo_yaml(lab.block, lab.port);
    lab.apply(
        "bookinfo.yaml",
        text.split("---\napiVersion: networking.istio.io")
            .next()
            .unwrap_or_default(),
    );
    let bad = &lab.reviews[2];
    bad.fixed_status.store(500, Ordering::Relaxed);
    let snap = lab.waypoint.config.load();
    let key = mesh_waypoint::backend::BackendKey {
        host: "reviews.bookinfo.svc.cluster.local".into(),
        subset: None,
        port: 9080,
    };
    let backend = snap.backends.get(&key).expect("reviews backend").clone();
    let mut ejected_before = None;
    for _ in 0..30 {
        let before = Instant::now();
        lab.get("/").await;
        if backend.healthy(Instant::now()).iter().all(|e| e.addr != bad.addr) {
            ejected_before = Some(before);
            break;
        }
    }
    let ejected_before = ejected_before.expect("the 5xx endpoint was ejected within 30 requests");
    let hits = bad.hits();
    for _ in 0..30 {
        let r = lab.get("/").await;
        assert_eq!(r.status, 200, "only healthy endpoints serve while ejected");
    }
    assert_eq!(bad.hits(), hits, "no traffic to the ejected endpoint");
    let deadline = Duration::from_secs(10);
    let restored = eventually(deadline, || {
        std::future::ready(backend.healthy(Instant::now()).iter().any(|e| e.addr == bad.addr))
    })
    .await;
    assert!(restored, "restored within {deadline:?}");
    assert!(
        ejected_before.elapsed() >= Duration::from_secs(1),
        "ejected for at least baseEjectionTime"
    );
    let mut reached = false;
    for _ in 0..10 {
        reached |= lab.get("/").await.version() == "v3";
    }
    assert!(reached, "restored endpoint receives traffic again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_and_pending_requests_trip_at_their_limits() {
    let lab = Arc::new(Lab::bookinfo().await);
    lab.apply(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy: {connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}\n",
    );
    lab.apply(
        "vs.yaml",
        &reviews_vs("  - retries: {attempts: 0}\n    route: [{destination: {host: reviews, subset: v1}}]\n"),
    );
    let v1 = &lab.reviews[0];
    let snap = lab.waypoint.config.load();
    let key = mesh_waypoint::backend::BackendKey {
        host: "reviews.bookinfo.svc.cluster.local".into(),
        subset: Some("v1".into()),
        port: 9080,
    };
    let pool = snap.backends.get(&key).expect("subset backend").pool.clone();

    let l = lab.clone();
    let first = tokio::spawn(async move { l.get("/?hold=1").await });
    assert!(
        eventually(Duration::from_secs(5), || std::future::ready(
            v1.inflight.load(Ordering::Relaxed) == 1
        ))
        .await,
        "first request holds the only connection"
    );
    let l = lab.clone();
    let second = tokio::spawn(async move { l.get("/?hold=1").await });
    assert!(
        eventually(Duration::from_secs(5), || std::future::ready(pool.pending() == 1)).await,
        "second request waits as pending"
    );
    for _ in 0..3 {
        let r = lab.get("/").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.header("x-mesh-flags"), "UO");
        assert!(r.header("x-mesh-reason").contains("pending requests overflow"), "{r:?}");
    }
    assert_eq!(v1.hits(), 1, "overflowing requests never reached the backend");
    v1.gate.add_permits(2);
    assert_eq!(first.await.expect("first").status, 200);
    assert_eq!(second.await.expect("second").status, 200);
    assert_eq!(v1.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_trips_at_its_limit() {
    let lab = Arc::new(Lab::bookinfo().await);
    lab.apply(
        "dr.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {http: {http2MaxRequests: 2}}}}\n",
    );
    lab.apply(
        "vs.yaml",
        &reviews_vs("  - retries: {attempts: 0}\n    route: [{destination: {host: reviews, subset: v1}}]\n"),
    );
    let v1 = &lab.reviews[0];
    let mut held = Vec::new();
    for _ in 0..2 {
        let l = lab.clone();
        held.push(tokio::spawn(async move { l.get("/?hold=1").await }));
    }
    assert!(
        eventually(Duration::from_secs(5), || std::future::ready(
            v1.inflight.load(Ordering::Relaxed) == 2
        ))
        .await
    );
    let r = lab.get("/").await;
    assert_eq!(r.status, 503);
    assert!(r.header("x-mesh-reason").contains("http2MaxRequests"), "{r:?}");
    v1.gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.expect("held").status, 200);
    }
}

/// 200 requests always in flight (each held 20 ms by the backend) while the
/// VirtualService and the DestinationRule's connection pool are swapped 20 times:
/// in-flight requests finish on the snapshot they started with; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    let lab = Arc::new(Lab::bookinfo().await);
    lab.apply(
        "vs.yaml",
        &reviews_vs("  - route: [{destination: {host: reviews, subset: v1}}]\n"),
    );
    let l = lab.clone();
    let load = tokio::spawn(async move {
        let l2 = l.clone();
        burst(&l, 3000, 200, move |_| l2.request("reviews:9080", "/")).await
    });
    let dr = |n: u32| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: {n}}}}}}}\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n"
        )
    };
    let mut generations = 0;
    let served = || lab.reviews.iter().map(|b| b.hits()).sum::<usize>();
    for i in 0..20u32 {
        let before = served();
        let subset = if i % 2 == 0 { "v2" } else { "v1" };
        lab.apply(
            "vs.yaml",
            &reviews_vs(&format!(
                "  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
            )),
        );
        lab.apply("dr-pool.yaml", &dr(10_000 + i));
        generations += 1;
        // Let requests run on this snapshot before the next swap (3,000 spread over 20 swaps).
        eventually(Duration::from_secs(5), || {
            std::future::ready(served() >= (before + 50).min(3000))
        })
        .await;
    }
    let replies = load.await.expect("load");
    assert_eq!(replies.len(), 3000);
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 3000 failed across {generations} reloads, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let versions: std::collections::BTreeSet<String> = replies.iter().map(|r| r.version()).collect();
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "reloads took effect: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_rotates_upstream_connections() {
    let lab = Lab::bookinfo().await;
    let dr = |extra: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n  subsets:\n  - {{name: v1, labels: {{version: v1}}{extra}}}\n"
        )
    };
    lab.apply(
        "vs.yaml",
        &reviews_vs("  - route: [{destination: {host: reviews, subset: v1}}]\n"),
    );
    let peers = |n: usize| {
        let lab = &lab;
        async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..n {
                seen.insert(
                    lab.get("/").await.json()["peer"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            seen.len()
        }
    };
    lab.apply(
        "dr.yaml",
        &dr(", trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}"),
    );
    assert_eq!(peers(5).await, 5, "one request per upstream connection");
    lab.apply("dr.yaml", &dr(""));
    assert!(peers(20).await < 20, "connections are reused without the limit");
}
