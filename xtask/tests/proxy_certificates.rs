//! e2e (issue 15): the waypoint's and the gateway's own certificates, obtained from the
//! mesh CA by CSR, rotate with the CA up while Bookinfo keeps answering: a keep-alive
//! connection through the gateway and fresh connections see no failed request, and each
//! proxy's readiness names its current certificate. With the CA killed the proxies stay
//! ready on the certificate in hand, their readiness says renewals fail, and traffic
//! keeps flowing; once the certificate expires they are not ready (peers refuse it);
//! the CA back, they recover. Needs root; RAII teardown, also on failure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use xtask::bookinfo::{self, CLIENT, GATEWAY_POD, Lab, LabOptions, NAMESPACE, WAYPOINT_ADMIN, WAYPOINT_POD};
use xtask::harness::{Cluster, wait_for};
use xtask::mesh::http_get_from_pod;

/// The proxies' certificates live 10 s and are replaced at half-life (every 5 s); the
/// node daemons keep the default (their rotation has its own e2e in mesh-node).
const LIFETIME_SECS: u64 = 10;
/// How many rotations each proxy must go through under traffic.
const ROTATIONS: u64 = 3;
/// Bounds of the request loop.
const MAX_REQUESTS: usize = 10_000;
const MAX_TIME: Duration = Duration::from_secs(60);

/// One HTTP/1.1 connection to the gateway from the `outside` pod, kept open.
struct KeepAlive {
    rt: tokio::runtime::Runtime,
    sender: SendRequest<Empty<Bytes>>,
}

impl KeepAlive {
    fn open(c: &Cluster, entry: SocketAddr) -> Self {
        let stream = c
            .connect_from_pod(CLIENT.0, CLIENT.1, entry, Duration::from_secs(10))
            .expect("connect to the gateway");
        stream.set_nonblocking(true).expect("non-blocking");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let sender = rt.block_on(async {
            let io = TokioIo::new(tokio::net::TcpStream::from_std(stream).expect("tokio stream"));
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("HTTP/1.1");
            tokio::spawn(conn);
            sender
        });
        Self { rt, sender }
    }

    /// GET /productpage on this connection: the reviews version, or why not.
    fn page(&mut self, entry: SocketAddr) -> Result<String, String> {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            let exchange = async {
                sender.ready().await.map_err(|e| format!("connection closed: {e}"))?;
                let req = http::Request::get("/productpage")
                    .header(http::header::HOST, entry.to_string())
                    .body(Empty::new())
                    .map_err(|e| e.to_string())?;
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                let body = String::from_utf8_lossy(&body);
                match (status.as_u16(), bookinfo::reviews_version(&body)) {
                    (200, Some(v)) => Ok(v),
                    (s, v) => Err(format!("status {s}, reviews {v:?}")),
                }
            };
            tokio::time::timeout(Duration::from_secs(30), exchange)
                .await
                .unwrap_or_else(|_| Err("no answer within 30 s".into()))
        })
    }
}

/// The proxy's readiness answer from its admin port: (status, body).
fn ready(c: &Cluster, pod: (&str, &str)) -> (u16, String) {
    let admin = SocketAddr::from(([127, 0, 0, 1], WAYPOINT_ADMIN));
    let r = http_get_from_pod(c, pod, admin, "/ready", &[], Duration::from_secs(5)).expect("readiness");
    (r.status, r.body)
}

fn generations(c: &Cluster) -> (u64, u64) {
    let g = |d: serde_json::Value| d["certificate"]["generation"].as_u64().unwrap_or(0);
    (
        g(bookinfo::waypoint_dump(c).expect("waypoint dump")),
        g(bookinfo::gateway_dump(c).expect("gateway dump")),
    )
}

#[test]
fn proxy_certificates_rotate_under_traffic_and_outlive_a_ca_outage() {
    let c = bookinfo::cluster().expect("bookinfo cluster");
    let opts = LabOptions {
        proxy_args: vec!["--cert-lifetime-secs".into(), LIFETIME_SECS.to_string()],
        ..LabOptions::default()
    };
    let mut lab = Lab::start(&c, opts).expect("bookinfo lab");
    let entry = bookinfo::entry(&c).expect("entry");
    let waypoint = (NAMESPACE, WAYPOINT_POD);

    // Rotations under traffic: one held connection, one fresh connection per round.
    let start = generations(&c);
    let mut held = KeepAlive::open(&c, entry);
    let (mut rounds, mut failures, began) = (0, Vec::new(), Instant::now());
    let mut now = start;
    while rounds < MAX_REQUESTS && began.elapsed() < MAX_TIME {
        rounds += 1;
        if let Err(e) = held.page(entry) {
            failures.push(format!("held connection, round {rounds}: {e}"));
            break;
        }
        let fresh = bookinfo::pages(&c, 1, 1, &[]);
        if let Some(p) = fresh.iter().find(|p| !p.ok()) {
            failures.push(format!("fresh connection, round {rounds}: {} {}", p.status, p.body));
        }
        now = generations(&c);
        if now.0 >= start.0 + ROTATIONS && now.1 >= start.1 + ROTATIONS {
            break;
        }
    }
    eprintln!(
        "FIGURE proxy rotation: generations (waypoint, gateway) {start:?} -> {now:?} in {:.1} s, {rounds} rounds (held + fresh), failures: {failures:?}",
        began.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        now.0 >= start.0 + ROTATIONS && now.1 >= start.1 + ROTATIONS,
        "{ROTATIONS} rotations of each proxy within {MAX_TIME:?}: {start:?} -> {now:?}"
    );
    for pod in [waypoint, GATEWAY_POD] {
        let (status, body) = ready(&c, pod);
        assert_eq!(status, 200, "{pod:?}: {body}");
        assert!(
            body.contains("certificate: ok (spiffe://cluster.local/ns/") && body.contains("generation"),
            "{pod:?}: {body}"
        );
    }

    // The CA goes away right after the waypoint's next rotation (its certificate has
    // LIFETIME_SECS left): renewals fail, the proxies stay ready and say why, traffic flows.
    let rotated = now.0;
    wait_for(
        "the waypoint's next rotation",
        Duration::from_secs(LIFETIME_SECS),
        || (generations(&c).0 > rotated).then_some(()),
    )
    .expect("rotation");
    lab.mesh.ca.kill().expect("kill the CA");
    let killed = Instant::now();
    let pages = bookinfo::pages(&c, 20, 2, &[]);
    let bad: Vec<_> = pages.iter().filter(|p| !p.ok()).map(|p| (p.status, &p.body)).collect();
    assert!(bad.is_empty(), "with the CA down: {bad:?}");
    held.page(entry).expect("the held connection with the CA down");
    eprintln!("FIGURE 20 pages + 1 held-connection request with the CA down: all ok");
    let body = wait_for(
        "failed renewals in the waypoint's readiness",
        Duration::from_secs(LIFETIME_SECS),
        || {
            let (status, body) = ready(&c, waypoint);
            (status == 200 && body.contains("renewal failing since")).then_some(body)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", ready(&c, waypoint)));
    eprintln!("FIGURE waypoint readiness with the CA down: {}", body.trim());

    // Past expiry the waypoint is not ready: peers refuse an expired certificate.
    let body = wait_for(
        "the waypoint unready on an expired certificate",
        Duration::from_secs(2 * LIFETIME_SECS),
        || {
            let (status, body) = ready(&c, waypoint);
            (status == 503 && body.contains("certificate expired at")).then_some(body)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", ready(&c, waypoint)));
    eprintln!(
        "FIGURE waypoint readiness {:.1} s after the CA went down: {}",
        killed.elapsed().as_secs_f64(),
        body.trim()
    );

    // The CA returns: a new certificate (after the renewal backoff), ready again.
    lab.mesh.ca.start(&c).expect("restart the CA");
    for pod in [waypoint, GATEWAY_POD] {
        wait_for("readiness without failed renewals", Duration::from_secs(60), || {
            let (status, body) = ready(&c, pod);
            (status == 200 && !body.contains("renewal failing")).then_some(())
        })
        .unwrap_or_else(|e| panic!("{pod:?}: {e}: {:?}", ready(&c, pod)));
    }
    let pages = bookinfo::pages(&c, 10, 2, &[]);
    assert!(
        pages.iter().all(|p| p.ok()),
        "after the CA returned: {:?}",
        bookinfo::tally(&pages)
    );
}
