use super::*;
use prometheus_client::registry::Registry;
use xtask::harness::metric_sum as value;

fn peer(workload: &str, ns: &str) -> Peer {
    Peer {
        workload: workload.into(),
        namespace: ns.into(),
        principal: format!("spiffe://cluster.local/ns/{ns}/sa/{workload}"),
        app: workload.into(),
        version: "v1".into(),
        canonical_service: workload.into(),
        canonical_revision: "v1".into(),
    }
}

fn conn(security: Security) -> Conn {
    Conn {
        reporter: Reporter::destination,
        security,
        source: peer("client", "shop"),
        destination: peer("web", "shop"),
        service: ServiceLabels {
            host: "web.shop.svc.cluster.local".into(),
            name: "web".into(),
            namespace: "shop".into(),
        },
        downstream: "198.18.1.2:40000".parse().unwrap(),
        requested: "198.18.1.3:8080".parse().unwrap(),
        upstream: "198.18.1.3:8080".parse().unwrap(),
    }
}

fn encode(m: &TcpMetrics) -> String {
    let mut reg = Registry::default();
    m.register(&mut reg);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
    out
}

#[test]
fn each_connection_counts_once_with_istios_labels_and_client_side_bytes() {
    let t = Telemetry {
        metrics: TcpMetrics::default(),
        access_log: AccessLogFormat::Off,
    };
    for _ in 0..3 {
        t.open(conn(Security::mutual_tls)).close(10, 250);
    }
    t.open(conn(Security::none)).close(1, 2);
    // A failure is logged, never counted as a connection.
    t.failed(conn(Security::mutual_tls), RefusalReason::ConnectFailed);
    let text = encode(&t.metrics);
    let mtls = ["connection_security_policy=\"mutual_tls\""];
    assert_eq!(value(&text, "istio_tcp_connections_opened_total", &mtls), 3, "{text}");
    assert_eq!(value(&text, "istio_tcp_connections_closed_total", &mtls), 3);
    assert_eq!(value(&text, "istio_tcp_sent_bytes_total", &mtls), 30);
    assert_eq!(value(&text, "istio_tcp_received_bytes_total", &mtls), 750);
    let plain = ["connection_security_policy=\"none\""];
    assert_eq!(value(&text, "istio_tcp_connections_opened_total", &plain), 1);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{") && l.contains("mutual_tls"))
        .unwrap();
    for label in [
        "reporter=\"destination\"",
        "source_workload=\"client\"",
        "source_workload_namespace=\"shop\"",
        "source_principal=\"spiffe://cluster.local/ns/shop/sa/client\"",
        "source_app=\"client\"",
        "source_version=\"v1\"",
        "source_canonical_service=\"client\"",
        "source_canonical_revision=\"v1\"",
        "destination_workload=\"web\"",
        "destination_app=\"web\"",
        "destination_canonical_service=\"web\"",
        "destination_service=\"web.shop.svc.cluster.local\"",
        "destination_service_name=\"web\"",
        "destination_service_namespace=\"shop\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }
}

#[test]
fn the_json_line_has_envoys_l4_fields() {
    let (labels, addrs) = split(conn(Security::mutual_tls));
    let outcome = Outcome {
        flags: &[Flag::ConnectFailure],
        client_sent: 5,
        client_received: 7,
    };
    let v = json_line(&labels, &addrs, &outcome);
    assert!(v["start_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    assert!(v["duration"].as_u64().is_some());
    assert_eq!(
        (v["bytes_received"].as_u64(), v["bytes_sent"].as_u64()),
        (Some(5), Some(7))
    );
    assert_eq!(v["upstream_host"], "198.18.1.3:8080");
    assert_eq!(v["downstream_remote_address"], "198.18.1.2:40000");
    assert_eq!(v["downstream_local_address"], "198.18.1.3:8080");
    assert_eq!(v["response_flags"], "UF");
    assert_eq!(v["connection_security_policy"], "mutual_tls");
    assert_eq!(v["reporter"], "destination");
    assert_eq!(v["source_workload"], "client");
    assert_eq!(v["source_principal"], "spiffe://cluster.local/ns/shop/sa/client");
    assert_eq!(v["destination_workload"], "web");
    assert_eq!(v["destination_principal"], "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(v["destination_service"], "web.shop.svc.cluster.local");
}

#[test]
fn refusals_map_to_envoys_flags() {
    assert_eq!(flag_of(RefusalReason::Authorization), Flag::Rbac);
    assert_eq!(flag_of(RefusalReason::StrictMtls), Flag::Rbac);
    assert_eq!(flag_of(RefusalReason::NoHealthyUpstream), Flag::NoHealthy);
    assert_eq!(flag_of(RefusalReason::ServicePortUnknown), Flag::NoRoute);
    assert_eq!(flag_of(RefusalReason::UpstreamRefused), Flag::ConnectFailure);
    assert_eq!(flag_of(RefusalReason::ConnectFailed), Flag::ConnectFailure);
}
