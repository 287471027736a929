//! e2e: abusive peers against the waypoint and the ingress gateway of the Bookinfo lab
//! (real mesh-waypoint processes in their pods, real daemons, HBONE on every hop), each
//! bounded in time and count: half-sent HTTP request heads and TLS handshakes on the
//! gateway's ports, oversized request heads to the gateway and (inside an HBONE stream)
//! to the waypoint, a CONNECT to an address the waypoint does not serve (answered and
//! counted), HTTP/2 rapid
//! reset and a PING / SETTINGS flood against the waypoint's HBONE server. Meanwhile a
//! user outside the mesh keeps loading /productpage (gateway → waypoint → apps); every
//! one of those requests must succeed, both proxies must still run, and their RSS must
//! stay within a bound. Needs root; RAII teardown also on failure.

#[path = "abuse_support.rs"]
mod abuse;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use abuse::*;
use bytes::Bytes;
use mesh_hbone::SpiffeId;
use xtask::bookinfo::supervise::Unit;
use xtask::bookinfo::{self, CLIENT, GATEWAY_POD, GATEWAY_PORT, Lab, LabOptions, NAMESPACE, WAYPOINT_POD};
use xtask::harness::Cluster;

/// Header read, TLS handshake and HBONE set-up timeouts the proxies run with.
const TIMEOUT_MS: u64 = 1000;
/// The HTTPS server this test adds to the gateway.
const HTTPS_PORT: u16 = 8443;
/// Service productpage (samples/bookinfo/platform/services.yaml): the waypoint serves it.
const PRODUCTPAGE: &str = "198.19.0.10:9080";
/// Half-sent connections per attack.
const STALLED: usize = 64;
/// Growth of a proxy's RSS over every attack that still counts as bounded.
const RSS_BOUND_KIB: u64 = 64 << 10;

fn https_gateway() -> String {
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_owned()]).expect("rcgen");
    let indent = |pem: String| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: abuse-cert, namespace: istio-system}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: abuse-https, namespace: {NAMESPACE}}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20 - port: {{number: {HTTPS_PORT}, name: https, protocol: HTTPS}}\n    hosts: [shop.example.com]\n\
         \x20   tls: {{mode: SIMPLE, credentialName: abuse-cert}}\n",
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    )
}

struct Proxies<'a> {
    cluster: &'a Cluster,
    waypoint: u32,
    gateway: u32,
}

impl Proxies<'_> {
    fn rss(&self) -> (u64, u64) {
        (rss_kib(self.waypoint), rss_kib(self.gateway))
    }

    /// Both proxies run and a fresh /productpage through both succeeds.
    fn still_serving(&self, after: &str) {
        assert!(alive(self.waypoint), "the waypoint died after {after}");
        assert!(alive(self.gateway), "the gateway died after {after}");
        let page = bookinfo::productpage(self.cluster, &[]);
        assert!(
            page.as_ref()
                .is_ok_and(|r| r.status == 200 && bookinfo::reviews_version(&r.body).is_some()),
            "after {after} /productpage failed: {:?}",
            page.map(|r| r.status)
        );
    }

    /// A TCP connection from the user's pod (outside the mesh).
    fn connect(&self, to: SocketAddr) -> TcpStream {
        self.cluster
            .connect_from_pod(CLIENT.0, CLIENT.1, to, Duration::from_secs(5))
            .expect("connect from the client pod")
    }
}

fn pod(namespace: &str, name: &str) -> Unit {
    Unit::Pod(namespace.to_owned(), name.to_owned())
}

#[test]
fn abusive_peers_leave_the_waypoint_and_the_gateway_serving_with_bounded_memory() {
    let cluster = bookinfo::cluster().expect("cluster");
    let ms = TIMEOUT_MS.to_string();
    let opts = LabOptions {
        proxy_args: [
            "--header-read-timeout-ms",
            &ms,
            "--tls-handshake-timeout-ms",
            &ms,
            "--hbone-handshake-timeout-ms",
            &ms,
        ]
        .map(str::to_owned)
        .to_vec(),
        ..LabOptions::default()
    };
    let lab = Lab::start(&cluster, opts).expect("Bookinfo lab");
    lab.mesh
        .apply("abuse-https", &https_gateway())
        .expect("apply HTTPS gateway");
    let gw = cluster.pod(GATEWAY_POD.0, GATEWAY_POD.1).expect("gateway pod").ip;
    cluster
        .wait_tcp_in_pod(
            GATEWAY_POD.0,
            GATEWAY_POD.1,
            SocketAddr::from((gw, HTTPS_PORT)),
            Duration::from_secs(30),
        )
        .expect("the gateway's HTTPS port");
    let proxies = Proxies {
        cluster: &cluster,
        waypoint: lab.pid(&pod(NAMESPACE, WAYPOINT_POD)).expect("waypoint pid"),
        gateway: lab.pid(&pod(GATEWAY_POD.0, GATEWAY_POD.1)).expect("gateway pid"),
    };
    proxies.still_serving("start-up");
    let rss_start = proxies.rss();

    // A user keeps loading /productpage through both proxies during every attack.
    let (stop, ok, failed) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let page = bookinfo::productpage(&cluster, &[]);
                let counter = match page {
                    Ok(r) if r.status == 200 => &ok,
                    _ => &failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let attacked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attacks(&proxies, gw)));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = attacked {
            std::panic::resume_unwind(p);
        }
    });
    let rss_end = proxies.rss();
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!(
        "FIGURE abuse proxies: {ok} /productpage requests served during the attacks, {failed} failed; \
         waypoint RSS {} -> {} KiB, gateway RSS {} -> {} KiB (bound: +{} MiB)",
        rss_start.0,
        rss_end.0,
        rss_start.1,
        rss_end.1,
        RSS_BOUND_KIB >> 10
    );
    assert!(
        ok > 0 && failed == 0,
        "the user's requests during the attacks: {ok} ok, {failed} failed"
    );
    assert!(
        rss_end.0 < rss_start.0 + RSS_BOUND_KIB && rss_end.1 < rss_start.1 + RSS_BOUND_KIB,
        "RSS grew: waypoint {} -> {} KiB, gateway {} -> {} KiB",
        rss_start.0,
        rss_end.0,
        rss_start.1,
        rss_end.1
    );
}

fn attacks(p: &Proxies, gw: std::net::Ipv4Addr) {
    let within = Duration::from_millis(TIMEOUT_MS) * 5;
    for (what, port, head) in [
        ("HTTP request heads", GATEWAY_PORT, HALF_HEAD),
        ("TLS handshakes", HTTPS_PORT, HELLO_HEAD),
    ] {
        let mut held = stalled(STALLED, head, || p.connect(SocketAddr::from((gw, port))));
        p.still_serving(&format!("half-sent {what} on the gateway (held)"));
        let closed = count_closed(&mut held, within);
        eprintln!(
            "FIGURE abuse gateway slowloris: {STALLED} half-sent {what} on port {port}, {closed} closed within {within:?}"
        );
        assert_eq!(closed, STALLED, "the gateway closes every stalled {what}");
    }

    let entry = SocketAddr::from((gw, GATEWAY_PORT));
    let many: String = (0..200).map(|i| format!("X-Abuse-{i}: {i}\r\n")).collect();
    let big = format!("X-Abuse: {}\r\n", "x".repeat(512 << 10));
    for (what, headers) in [("200 header fields", &many), ("a 512 KiB header", &big)] {
        let answer = exchange_http1(p.connect(entry), headers);
        eprintln!("FIGURE abuse gateway oversized head: {what} -> {answer:?}");
        assert!(
            answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
            "the gateway refuses {what}: {answer:?}"
        );
    }
    p.still_serving("oversized request heads on the gateway");

    let waypoint_ip = p.cluster.pod(NAMESPACE, WAYPOINT_POD).expect("waypoint pod").ip;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let peer = MeshPeer::new(
        p.cluster,
        CLIENT,
        SocketAddr::from((waypoint_ip, 15008)),
        &mesh_cacerts(p.cluster),
        &SpiffeId::new("cluster.local", NAMESPACE, "bookinfo-productpage"),
        SpiffeId::new("cluster.local", NAMESPACE, "waypoint"),
    );
    let unknown = rt.block_on(async {
        let (send, _driver) = peer.h2().await;
        connect_status(send, "198.18.250.250:80", &[]).await
    });
    assert_eq!(
        unknown, "status 400",
        "CONNECT to an address the waypoint does not serve"
    );
    let stats = SocketAddr::from((waypoint_ip, bookinfo::STATS_PORT));
    let counted = xtask::harness::wait_for("the waypoint counts the refusal", Duration::from_secs(5), || {
        let body = xtask::mesh::http_get_from_pod(
            p.cluster,
            (NAMESPACE, WAYPOINT_POD),
            stats,
            "/metrics",
            &[],
            Duration::from_secs(5),
        )
        .ok()?
        .body;
        let n = xtask::harness::metric_sum(
            &body,
            "mesh_connections_refused_total",
            &["reason=\"unknown_destination\""],
        );
        (n >= 1).then_some(n)
    });
    assert!(
        counted.is_ok(),
        "mesh_connections_refused_total{{reason=\"unknown_destination\"}} on the waypoint: {counted:?}"
    );
    let oversized = rt.block_on(async {
        let (send, _driver) = peer.h2().await;
        request_in_tunnel(send, PRODUCTPAGE, &many).await
    });
    eprintln!(
        "FIGURE abuse waypoint: CONNECT to no workload -> {unknown}; 200 header fields in a tunnel -> {oversized:?}"
    );
    assert!(
        oversized.starts_with("HTTP/1.1 431"),
        "the waypoint refuses 200 header fields: {oversized:?}"
    );
    p.still_serving("oversized request heads and an unknown CONNECT on the waypoint");

    let authority: SocketAddr = PRODUCTPAGE.parse().expect("address");
    let resets = rt.block_on(rapid_reset(&peer, authority, 2_000));
    eprintln!("FIGURE abuse waypoint rapid reset: {resets}");
    p.still_serving("HTTP/2 rapid reset on the waypoint's HBONE server");
    let flood = rt.block_on(control_flood(&peer, 200_000));
    eprintln!("FIGURE abuse waypoint PING/SETTINGS flood: {flood}");
    p.still_serving("a PING / SETTINGS flood on the waypoint's HBONE server");
}

/// Sends GET /productpage with `headers` and returns the server's first line ("" when
/// it closed without answering).
fn exchange_http1(mut s: TcpStream, headers: &str) -> String {
    let head = format!("GET /productpage HTTP/1.1\r\nHost: bookinfo\r\n{headers}\r\n");
    // The server may answer and close before it read everything: a failed write is fine.
    let _ = s.write_all(head.as_bytes());
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.contains(&b'\n') {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    first_line(&buf)
}

/// The same request as [`exchange_http1`] inside an HBONE stream to `authority`.
async fn request_in_tunnel(send: h2::client::SendRequest<Bytes>, authority: &str, headers: &str) -> String {
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(authority)
        .body(())
        .expect("request");
    let mut send = send.ready().await.expect("ready");
    let (resp, mut body) = send.send_request(req, false).expect("CONNECT");
    let resp = resp.await.expect("CONNECT answered");
    assert_eq!(resp.status(), http::StatusCode::OK, "the waypoint opens the tunnel");
    let head = format!("GET /productpage HTTP/1.1\r\nHost: productpage\r\n{headers}\r\n");
    body.send_data(Bytes::from(head), false).expect("request head");
    let mut recv = resp.into_body();
    let mut buf = Vec::new();
    while !buf.contains(&b'\n') {
        match tokio::time::timeout(Duration::from_secs(10), recv.data()).await {
            Ok(Some(Ok(d))) => {
                let _ = recv.flow_control().release_capacity(d.len());
                buf.extend_from_slice(&d);
            }
            _ => break,
        }
    }
    first_line(&buf)
}

fn first_line(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf).lines().next().unwrap_or("").to_owned()
}
