//! e2e: abusive peers against a real node daemon's HBONE server (a pod's 15008), each
//! bounded in time and count: half-sent handshakes (slowloris), garbage and truncated
//! TLS, a client certificate from another CA, an oversized CONNECT header block, HTTP/2
//! rapid reset, a PING / SETTINGS flood from a peer that never reads, and a tunnel whose
//! client stops reading. After each, the daemon is still running, a well-behaved client
//! in another pod still gets through, and the daemon's RSS stays within a bound.
//! Needs root; RAII teardown also on failure.

#[path = "capture_support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use mesh_hbone::SpiffeId;
use mesh_hbone::cert::{CertResolver, Current};
use rustls_pki_types::pem::PemObject;
use support::*;
use xtask::harness::{Cluster, ProcessGuard, metric_sum};

/// Entry point for the in-pod clients (does nothing in a normal test run).
#[test]
#[ignore = "not a test: the in-pod client entry point that the e2e tests start with --ignored"]
fn helper() {
    helper_main();
}

/// Added to the shared two-node topology: `mallory`, a pod outside the mesh.
const MALLORY: &str = "---
apiVersion: v1
kind: Pod
metadata: {name: mallory, namespace: plain}
spec: {nodeName: n2}
";

/// What the daemon under attack runs with: short set-up so stalled peers go quickly,
/// and a per-peer cap the slowloris exceeds.
const HANDSHAKE_TIMEOUT_MS: &str = "1000";
const HANDSHAKES_PER_PEER: usize = 16;
/// Growth of the daemon's RSS over the whole attack that still counts as bounded.
const RSS_BOUND_KIB: u64 = 96 << 10;

struct Lab {
    c: Cluster,
    victim: ProcessGuard,
    _source: ProcessGuard,
    _app: Server,
    /// b's 15008 and its application port.
    hbone: SocketAddr,
    app: SocketAddr,
    rt: tokio::runtime::Runtime,
}

fn lab() -> Lab {
    let c = Cluster::from_yaml(&format!("{TWO_NODES}{MALLORY}")).expect("cluster");
    c.write_config(&config_dir(&c)).expect("config");
    let source = start_daemon(&c, "n1", &[]);
    let per_peer = HANDSHAKES_PER_PEER.to_string();
    let victim = start_daemon(
        &c,
        "n2",
        &[
            "--hbone-handshake-timeout-ms",
            HANDSHAKE_TIMEOUT_MS,
            "--hbone-max-handshakes-per-peer",
            &per_peer,
        ],
    );
    for node in ["n1", "n2"] {
        poll("workload certificates", Duration::from_secs(30), || {
            (config_dump(&c, node)["certificates"].as_array().map_or(0, Vec::len) >= 1).then_some(())
        });
    }
    let app = serve(c.listen_in_pod("shop", "b", 8080).expect("listen in b"));
    let b = c.pod("shop", "b").expect("pod b").ip;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Lab {
        hbone: SocketAddr::from((b, 15008)),
        app: SocketAddr::from((b, 8080)),
        c,
        victim,
        _source: source,
        _app: app,
        rt,
    }
}

impl Lab {
    /// A TCP connection from the non-enrolled pod `plain/mallory` (not captured).
    fn connect_as_mallory(&self, to: SocketAddr) -> TcpStream {
        self.c
            .connect_from_pod("plain", "mallory", to, Duration::from_secs(5))
            .expect("connect from mallory")
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.victim.pid())).expect("daemon status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The daemon runs, and a tunneled connection from pod a reaches b and back.
    fn still_serving(&mut self, after: &str) {
        assert!(self.victim.is_running(), "the daemon died after {after}");
        let r = kv(&run_helper(&self.c, "shop", "a", "hello", &[self.app.to_string()])[0]);
        assert!(
            r.get("app_peer").is_some_and(|p| !p.is_empty()),
            "after {after} the well-behaved client did not get through: {r:?}\n{}",
            daemon_log(&self.c, "n2")
        );
    }

    /// Refusals counted with `reason` (every refusal for `""`).
    fn refused(&self, reason: &str) -> u64 {
        let filter = if reason.is_empty() {
            String::new()
        } else {
            format!("reason=\"{reason}\"")
        };
        metric_sum(
            &metrics(&self.c, "n2"),
            "mesh_connections_refused_total",
            &[filter.as_str()],
        )
    }

    /// A certificate for `id` signed by the CA in `cacerts` (for the authenticated
    /// attacker: the test plays a workload whose key leaked).
    fn client_config(&self, cacerts: &std::path::Path, id: &SpiffeId) -> Arc<rustls::ClientConfig> {
        let ca = mesh_ca::authority::Authority::load(cacerts).expect("CA files");
        let key = rcgen::KeyPair::generate_for(mesh_hbone::ca::csr::KEY_ALG).expect("key");
        let now = SystemTime::now();
        let leaf = ca
            .issue(id, &key, now - Duration::from_secs(60), now + Duration::from_secs(3600))
            .expect("issue");
        let der = rustls_pki_types::CertificateDer::from_pem_slice(leaf.as_bytes()).expect("leaf PEM");
        let pkcs8 = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&pkcs8).expect("signing key");
        let resolver = Arc::new(CertResolver::new(Current {
            certified: Arc::new(rustls::sign::CertifiedKey::new(vec![der], signing)),
            not_before: now,
            not_after: now + Duration::from_secs(3600),
            issued: now,
            generation: 1,
        }));
        let mesh_root = std::fs::read_to_string(self.c.state_dir().join("mesh-ca/cacerts/root-cert.pem"))
            .or_else(|_| std::fs::read_to_string(self.c.state_dir().join("mesh-ca/cacerts/ca-cert.pem")))
            .expect("mesh root");
        let roots = mesh_hbone::ca::client::root_store_pem(&mesh_root).expect("roots");
        mesh_hbone::tls::client_config(resolver, roots, SpiffeId::new("cluster.local", "shop", "web")).expect("client")
    }

    /// A mutual-TLS connection from mallory to b's 15008 as `id`, signed by `cacerts`.
    async fn tls(
        &self,
        cacerts: &std::path::Path,
        id: &SpiffeId,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = self.connect_as_mallory(self.hbone);
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpStream::from_std(tcp)?;
        let name = rustls_pki_types::ServerName::try_from("web.shop").expect("name");
        tokio_rustls::TlsConnector::from(self.client_config(cacerts, id))
            .connect(name, tcp)
            .await
    }
}

fn mesh_cacerts(c: &Cluster) -> std::path::PathBuf {
    c.state_dir().join("mesh-ca/cacerts")
}

fn client_id() -> SpiffeId {
    SpiffeId::new("cluster.local", "shop", "client")
}

/// Reads until the server closes the connection (EOF or reset) or `within` passes.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The first bytes of a TLS ClientHello record (type 22, TLS 1.0 record version, length).
const HELLO_HEAD: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

#[test]
fn abusive_peers_on_15008_leave_the_daemon_serving_with_bounded_memory() {
    let mut lab = lab();
    lab.still_serving("start-up");
    let rss_start = lab.rss_kib();

    // Slowloris: 4x the per-peer cap of handshakes started and never finished. The
    // ones over the cap are closed at once; the rest when the set-up timeout passes.
    let n = 4 * HANDSHAKES_PER_PEER;
    let mut stalled: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = lab.connect_as_mallory(lab.hbone);
            let _ = s.write_all(HELLO_HEAD);
            s
        })
        .collect();
    lab.still_serving("slowloris (held)");
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS.parse().expect("ms")) * 5;
    let closed = stalled
        .iter_mut()
        .map(|s| closed_within(s, timeout))
        .filter(|c| *c)
        .count();
    assert_eq!(closed, n, "every stalled handshake is closed by the server");
    assert!(
        lab.refused("peer_handshake_limit") >= (n - HANDSHAKES_PER_PEER) as u64 / 2,
        "connections over the per-peer cap are refused at accept: {}",
        metrics(&lab.c, "n2")
    );
    assert!(lab.refused("handshake_timeout") >= 1, "stalled ones time out");
    eprintln!(
        "FIGURE abuse slowloris: {n} half-sent handshakes, {} refused at accept, all closed within {timeout:?}",
        lab.refused("peer_handshake_limit")
    );

    // Garbage and truncated TLS: closed, nothing else happens.
    let mut hello = lab.connect_as_mallory(lab.hbone);
    hello.write_all(&HELLO_HEAD[..7]).expect("write");
    hello.shutdown(std::net::Shutdown::Write).expect("half-close");
    assert!(closed_within(&mut hello, timeout), "truncated ClientHello closed");
    for i in 0..32u8 {
        let mut s = lab.connect_as_mallory(lab.hbone);
        let junk: Vec<u8> = (0..4096u32)
            .map(|k| (k as u8).wrapping_mul(31).wrapping_add(i))
            .collect();
        let _ = s.write_all(&junk);
        assert!(closed_within(&mut s, timeout), "garbage connection {i} closed");
    }
    lab.still_serving("garbage and truncated TLS");

    // A client certificate from another CA (same trust domain, same SPIFFE id).
    let other = tempfile::tempdir().expect("tempdir");
    mesh_ca::authority::create_root(other.path(), "cluster.local").expect("other CA");
    let refused_before = lab.refused("");
    let outcome = lab.rt.block_on(async {
        let tls = lab.tls(other.path(), &client_id()).await;
        match tls {
            // TLS 1.3: the client finishes first; the server's verdict comes as an alert.
            Ok(mut s) => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                let mut buf = [0u8; 64];
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .map(|r| format!("{r:?}"))
                    .unwrap_or_else(|_| "no answer".into())
            }
            Err(e) => format!("handshake failed: {e}"),
        }
    });
    assert!(
        !outcome.contains("Ok(") || outcome.contains("Ok(0)"),
        "another CA's client must get nowhere: {outcome}"
    );
    poll("refusal for the foreign certificate", Duration::from_secs(5), || {
        (lab.refused("") > refused_before).then_some(())
    });
    lab.still_serving("a client certificate from another CA");

    // Authenticated abuse (a mesh certificate whose key leaked): oversized headers,
    // rapid reset, control-frame floods, a tunnel whose client stops reading.
    let cacerts = mesh_cacerts(&lab.c);
    let app = lab.app;
    let oversized = lab.rt.block_on(async {
        let tls = lab.tls(&cacerts, &client_id()).await.expect("mesh TLS");
        let (mut send, conn) = h2::client::handshake(tls).await.expect("h2");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("CONNECT")
            .uri(app.to_string())
            .header("baggage", "x".repeat(64 << 10))
            .body(())
            .expect("request");
        send = send.ready().await.expect("ready");
        match send.send_request(req, false) {
            Ok((resp, _)) => match tokio::time::timeout(Duration::from_secs(5), resp).await {
                Ok(Ok(r)) => format!("status {}", r.status()),
                Ok(Err(e)) => format!("refused: {e}"),
                Err(_) => "no answer".into(),
            },
            Err(e) => format!("refused locally: {e}"),
        }
    });
    assert!(
        !oversized.contains("status 200"),
        "a 64 KiB header block is not carried: {oversized}"
    );
    lab.still_serving("an oversized CONNECT header block");

    let resets = lab.rt.block_on(rapid_reset(&lab, &cacerts, app, 2_000));
    eprintln!("FIGURE abuse rapid reset: {resets}");
    lab.still_serving("HTTP/2 rapid reset");

    let flood = lab.rt.block_on(control_flood(&lab, &cacerts, 200_000));
    eprintln!("FIGURE abuse PING/SETTINGS flood: {flood}");
    lab.still_serving("a PING / SETTINGS flood from a peer that never reads");

    let stuck = lab.rt.block_on(stop_reading(&lab, &cacerts, app));
    eprintln!("FIGURE abuse stopped reader: {stuck}");
    lab.still_serving("a tunnel whose client stopped reading");

    let rss_end = lab.rss_kib();
    eprintln!(
        "FIGURE abuse daemon RSS: {} MiB before, {} MiB after every attack (bound: +{} MiB)",
        rss_start >> 10,
        rss_end >> 10,
        RSS_BOUND_KIB >> 10
    );
    assert!(
        rss_end < rss_start + RSS_BOUND_KIB,
        "daemon RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}

/// Opens CONNECT streams and cancels each at once, `n` times on one connection.
async fn rapid_reset(lab: &Lab, cacerts: &std::path::Path, app: SocketAddr, n: usize) -> String {
    let tls = lab.tls(cacerts, &client_id()).await.expect("mesh TLS");
    let (mut send, conn) = h2::client::handshake(tls).await.expect("h2");
    let driver = tokio::spawn(conn);
    let mut sent = 0;
    let ended = loop {
        if sent == n {
            break "all sent".to_owned();
        }
        send = match send.ready().await {
            Ok(s) => s,
            Err(e) => break format!("connection ended by the server: {e}"),
        };
        let req = http::Request::builder()
            .method("CONNECT")
            .uri(app.to_string())
            .body(())
            .expect("request");
        match send.send_request(req, false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(e) => break format!("connection ended by the server: {e}"),
        }
        sent += 1;
    };
    driver.abort();
    format!("{sent} streams opened and reset ({ended})")
}

/// After the h2 preface, writes PING and SETTINGS frames as fast as TLS takes them
/// and never reads: the server must stop reading rather than queue its answers.
async fn control_flood(lab: &Lab, cacerts: &std::path::Path, frames: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let mut tls = lab.tls(cacerts, &client_id()).await.expect("mesh TLS");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let ping: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let settings: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    let started = Instant::now();
    let mut written = 0;
    let batch: Vec<u8> = (0..256)
        .flat_map(|i| if i % 2 == 0 { ping.to_vec() } else { settings.to_vec() })
        .collect();
    let _ = tls.write_all(&out).await;
    while written < frames && started.elapsed() < Duration::from_secs(20) {
        match tokio::time::timeout(Duration::from_secs(2), tls.write_all(&batch)).await {
            Ok(Ok(())) => written += 256,
            Ok(Err(e)) => return format!("{written} frames, then the server closed: {e}"),
            Err(_) => return format!("{written} frames, then the server stopped reading (backpressure)"),
        }
    }
    format!(
        "{written} frames in {:?} without the server pushing back",
        started.elapsed()
    )
}

/// A tunnel to the app's `xfer` (it sends 1 GiB) whose client never reads.
async fn stop_reading(lab: &Lab, cacerts: &std::path::Path, app: SocketAddr) -> String {
    let tls = lab.tls(cacerts, &client_id()).await.expect("mesh TLS");
    let (mut send, conn) = h2::client::handshake(tls).await.expect("h2");
    let driver = tokio::spawn(conn);
    send = send.ready().await.expect("ready");
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(app.to_string())
        .body(())
        .expect("request");
    let (resp, mut body) = send.send_request(req, false).expect("CONNECT");
    let resp = resp.await.expect("response");
    assert_eq!(resp.status(), http::StatusCode::OK, "the tunnel opens");
    body.send_data(Bytes::from(format!("xfer {}\n", 1u64 << 30)), false)
        .expect("request line");
    let before = lab.rss_kib();
    // The app writes as fast as the daemon takes it; flow control must stop it.
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut peak = before;
    for _ in 0..6 {
        ticker.tick().await;
        peak = peak.max(lab.rss_kib());
    }
    driver.abort();
    format!(
        "daemon RSS {} MiB -> peak {} MiB over 3 s of an unread 1 GiB download",
        before >> 10,
        peak >> 10
    )
}
