//! The HBONE client and server against each other on loopback: real certificates from
//! the mesh CA, real TLS 1.3 and HTTP/2, a real TCP application behind the server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client::{Dial, HboneClient, HboneError, Tunnel, TunnelTarget};
use super::relay::{Copied, relay};
use super::server::{self, Inbound, InboundRequest, Refused, ServerSettings, Upstream};
use crate::identity::SpiffeId;
use crate::identity::manager::CertResolver;
use crate::identity::manager::WorkloadCert;
use crate::tls;
use mesh_ca::authority::Authority;

const TD: &str = "cluster.local";

struct Pki {
    _dir: tempfile::TempDir,
    ca: Authority,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        mesh_ca::authority::create_root(dir.path(), TD).unwrap();
        let ca = Authority::load(dir.path()).unwrap();
        Self { _dir: dir, ca }
    }

    fn cert(&self, id: &SpiffeId, valid_from: SystemTime, valid_to: SystemTime) -> Arc<WorkloadCert> {
        let key = KeyPair::generate_for(mesh_hbone::ca::csr::KEY_ALG).unwrap();
        let leaf = self.ca.issue(id, &key, valid_from, valid_to).unwrap();
        let chain = [leaf, self.ca.root_pem().to_owned()];
        // assemble() checks validity now; expired test certificates are built by hand.
        let der = rustls_pki_types::CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
        let pkcs8 = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&pkcs8).unwrap();
        let current = mesh_hbone::cert::Current {
            certified: Arc::new(rustls::sign::CertifiedKey::new(vec![der], signing)),
            not_before: valid_from,
            not_after: valid_to,
            issued: SystemTime::now(),
            generation: 1,
        };
        Arc::new(WorkloadCert {
            workload: id.service_account.clone(),
            identity: id.clone(),
            resolver: Arc::new(CertResolver::new(current)),
        })
    }

    fn valid(&self, id: &SpiffeId) -> Arc<WorkloadCert> {
        let now = SystemTime::now();
        self.cert(id, now - Duration::from_secs(60), now + Duration::from_secs(3600))
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        mesh_hbone::ca::client::root_store_pem(self.ca.root_pem()).unwrap()
    }
}

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new(TD, "default", sa)
}

/// Connects to the app on loopback; records refusals and peers for assertions.
#[derive(Default)]
struct TestInbound {
    /// A watch so tests wait for a refusal instead of polling for it.
    refusals: tokio::sync::watch::Sender<Vec<&'static str>>,
    peers: Mutex<Vec<rustls_pki_types::CertificateDer<'static>>>,
    closed: Arc<Mutex<Vec<Copied>>>,
    /// The `traceparent` of each CONNECT carried.
    traceparents: Mutex<Vec<Option<mesh_hbone::TraceParent>>>,
    /// The `baggage` of each CONNECT carried.
    baggage: Mutex<Vec<Option<String>>>,
}

impl Inbound for TestInbound {
    fn authorize(&self, req: &InboundRequest) -> Result<(), Refused> {
        if !req.target.ip().is_loopback() {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                mesh_hbone::RefusalReason::NotLocalWorkload,
                format!("{} is not a workload here", req.target),
            ));
        }
        Ok(())
    }
    fn connect(&self, req: &InboundRequest) -> crate::capture::handler::BoxFuture<'static, io::Result<Upstream>> {
        let target = req.target;
        self.peers.lock().unwrap().push(req.conn.peer_cert.clone());
        self.traceparents.lock().unwrap().push(req.traceparent);
        self.baggage.lock().unwrap().push(req.baggage.clone());
        Box::pin(async move { TcpStream::connect(target).await.map(Upstream::Tcp) })
    }
    fn refused(&self, reason: mesh_hbone::RefusalReason, _: Option<&InboundRequest>) {
        self.refusals.send_modify(|r| r.push(reason.as_str()));
    }
    fn opened(&self, _: &InboundRequest) -> mesh_hbone::server::Closed {
        let closed = self.closed.clone();
        Box::new(move |copied| closed.lock().unwrap().push(copied))
    }
}

impl TestInbound {
    async fn wait_refusal(&self, reason: &str) {
        self.wait_refusals(reason, |r| r.contains(&reason)).await;
    }

    async fn wait_refusals(&self, what: &str, enough: impl FnMut(&Vec<&'static str>) -> bool) {
        let mut rx = self.refusals.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(enough)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "no refusal {what}: {:?}",
            *self.refusals.borrow()
        );
    }
}

/// The HBONE server on 127.0.0.1, presenting `cert`.
async fn start_server(pki: &Pki, cert: &WorkloadCert, inbound: Arc<TestInbound>, timeout: Duration) -> SocketAddr {
    // Never draining: the sender is gone.
    let drain = tokio::sync::watch::channel(false).1;
    start_server_with(pki, cert, inbound, timeout, drain, Arc::default()).await
}

/// Like [`start_server`], draining when `drain` flips, counting accepted connections.
async fn start_server_with(
    pki: &Pki,
    cert: &WorkloadCert,
    inbound: Arc<TestInbound>,
    timeout: Duration,
    drain: tokio::sync::watch::Receiver<bool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
) -> SocketAddr {
    let cfg = tls::server_config(cert.resolver.clone(), pki.roots(), TD).unwrap();
    let settings = ServerSettings {
        tls: cfg,
        handshake_timeout: timeout,
        limits: Default::default(),
        handshakes: Default::default(),
        drain,
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, peer)) = l.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(server::serve(settings.clone(), s, peer, inbound.clone()));
        }
    });
    addr
}

/// Echo app with half-close: copies back until EOF, then shuts down its write side.
async fn start_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

fn dial() -> Dial {
    Box::new(|addr| Box::pin(TcpStream::connect(addr)))
}

fn target(hbone: SocketAddr, identity: SpiffeId, app: SocketAddr) -> TunnelTarget {
    TunnelTarget {
        hbone_addr: hbone,
        identity,
        authority: app,
        forwarded_for: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
        traceparent: None,
        baggage: None,
    }
}

/// A local TCP pair whose far end is relayed through a tunnel: what capture gives the client.
async fn tunneled_socket(client: &HboneClient, src: &WorkloadCert, t: &TunnelTarget) -> Result<TcpStream, HboneError> {
    let tunnel = client.open(src, t, dial()).await?;
    Ok(relayed(tunnel).await)
}

/// The app's side of a local TCP pair whose other end is relayed through `tunnel`.
async fn relayed(tunnel: Tunnel) -> TcpStream {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_side = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (captured, _) = l.accept().await.unwrap();
    tokio::spawn(relay(captured, tunnel.send, tunnel.recv));
    app_side
}

/// Sends `len` pseudo-random bytes, half-closes, and checks the echo's hash.
async fn echo_roundtrip(mut s: TcpStream, len: usize) {
    let (mut r, mut w) = s.split();
    let writer = async {
        let mut h = Sha256::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; 64 << 10];
        let mut left = len;
        while left > 0 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let n = left.min(buf.len());
            w.write_all(&buf[..n]).await.unwrap();
            h.update(&buf[..n]);
            left -= n;
        }
        w.shutdown().await.unwrap();
        h.finalize()
    };
    let reader = async {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            total += n;
        }
        (h.finalize(), total)
    };
    let (sent, (got, total)) = tokio::join!(writer, reader);
    assert_eq!(total, len);
    assert_eq!(sent, got, "echo differs from what was sent");
}

fn client(pki: &Pki) -> HboneClient {
    HboneClient::new(pki.roots(), Duration::from_secs(5), Duration::from_secs(30))
}

#[tokio::test]
async fn large_transfer_is_intact_and_streams_share_one_connection() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let app = start_echo().await;
    let c = client(&pki);
    let t = target(srv, id("b"), app);
    let s1 = tunneled_socket(&c, &a, &t).await.unwrap();
    let s2 = tunneled_socket(&c, &a, &t).await.unwrap();
    tokio::join!(echo_roundtrip(s1, 32 << 20), echo_roundtrip(s2, 1 << 20));
    assert_eq!(c.pooled(), 1);
    assert!(inbound.refusals.borrow().is_empty());
}

/// A draining server (its daemon handed over) sends GOAWAY: its open tunnel finishes
/// intact, and new tunnels of the same client go on a new connection without an error.
#[tokio::test]
async fn a_draining_server_moves_new_tunnels_to_a_new_connection_and_finishes_open_ones() {
    use std::sync::atomic::Ordering;
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let (drain, drain_rx) = tokio::sync::watch::channel(false);
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let srv = start_server_with(
        &pki,
        &b,
        inbound.clone(),
        Duration::from_secs(5),
        drain_rx,
        accepted.clone(),
    )
    .await;
    let app = start_echo().await;
    let c = client(&pki);
    let t = target(srv, id("b"), app);
    let open = tunneled_socket(&c, &a, &t).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    drain.send_replace(true);
    // Bounded: until a tunnel went over a second connection.
    let mut tunnels = 0;
    while accepted.load(Ordering::SeqCst) < 2 {
        assert!(tunnels < 1000, "no new connection after GOAWAY");
        let s = tunneled_socket(&c, &a, &t).await.expect("a tunnel during the drain");
        echo_roundtrip(s, 1024).await;
        tunnels += 1;
    }
    echo_roundtrip(open, 8 << 20).await;
    assert!(inbound.refusals.borrow().is_empty(), "{:?}", inbound.refusals.borrow());
}

/// The peer's first connection answers one CONNECT, then goes away under the next one
/// (as a crashed peer daemon's would) without answering it; every later connection is
/// served by the real server.
async fn start_server_dying_on_second_stream(pki: &Pki, cert: &WorkloadCert, inbound: Arc<TestInbound>) -> SocketAddr {
    let cfg = tls::server_config(cert.resolver.clone(), pki.roots(), TD).unwrap();
    let settings = ServerSettings {
        tls: cfg.clone(),
        handshake_timeout: Duration::from_secs(5),
        limits: Default::default(),
        handshakes: Default::default(),
        drain: tokio::sync::watch::channel(false).1,
    };
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((first, _)) = l.accept().await else { return };
        tokio::spawn(async move {
            let tls = tokio_rustls::TlsAcceptor::from(cfg).accept(first).await.unwrap();
            let mut conn = h2::server::handshake(tls).await.unwrap();
            let (_, mut respond) = conn.accept().await.unwrap().unwrap();
            let _open = respond.send_response(http::Response::new(()), false).unwrap();
            // The second CONNECT arrives; the connection is dropped before any answer.
            let _unanswered = conn.accept().await;
        });
        while let Ok((s, peer)) = l.accept().await {
            tokio::spawn(server::serve(settings.clone(), s, peer, inbound.clone()));
        }
    });
    addr
}

/// A pooled connection that dies under a new CONNECT: the caller still gets its tunnel,
/// sent once more on a new connection (mesh-hbone's retry), and the pool keeps one entry.
#[tokio::test]
async fn a_pooled_connection_dying_under_a_new_stream_is_retried_on_a_new_one() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server_dying_on_second_stream(&pki, &b, inbound.clone()).await;
    let app = start_echo().await;
    let c = client(&pki);
    let t = target(srv, id("b"), app);
    let _first = c
        .open(&a, &t, dial())
        .await
        .expect("first tunnel on the first connection");
    let dials = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = dials.clone();
    let dial: Dial = Box::new(move |addr| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(TcpStream::connect(addr))
    });
    let tunnel = c.open(&a, &t, dial).await.expect("retried on a new connection");
    assert_eq!(
        dials.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "exactly one new connection dialled"
    );
    echo_roundtrip(relayed(tunnel).await, 256 << 10).await;
    assert_eq!(c.pooled(), 1);
    assert!(inbound.refusals.borrow().is_empty(), "{:?}", inbound.refusals.borrow());
}

#[tokio::test]
async fn connect_carries_the_connections_traceparent_and_baggage_as_ztunnel_does() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let app = start_echo().await;
    let c = client(&pki);
    let tp = mesh_hbone::TraceParent::random();
    let baggage = "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=a,service.name=a,service.version=v1";
    let with = TunnelTarget {
        traceparent: Some(tp),
        baggage: Some(baggage.into()),
        ..target(srv, id("b"), app)
    };
    echo_roundtrip(tunneled_socket(&c, &a, &with).await.unwrap(), 1024).await;
    echo_roundtrip(tunneled_socket(&c, &a, &target(srv, id("b"), app)).await.unwrap(), 1024).await;
    assert_eq!(*inbound.traceparents.lock().unwrap(), vec![Some(tp), None]);
    assert_eq!(*inbound.baggage.lock().unwrap(), vec![Some(baggage.to_owned()), None]);
}

#[tokio::test]
async fn server_with_another_spiffe_id_is_refused_by_the_client() {
    let pki = Pki::new();
    let a = pki.valid(&id("a"));
    let impostor = pki.valid(&id("mallory"));
    let srv = start_server(
        &pki,
        &impostor,
        Arc::new(TestInbound::default()),
        Duration::from_secs(5),
    )
    .await;
    let err = client(&pki)
        .open(&a, &target(srv, id("b"), start_echo().await), dial())
        .await
        .err()
        .unwrap();
    assert_eq!(err.reason().as_str(), "cert_invalid", "{err}");
    assert!(
        err.to_string()
            .contains("expected spiffe://cluster.local/ns/default/sa/b"),
        "{err}"
    );
}

#[tokio::test]
async fn client_of_another_trust_domain_or_ca_is_refused() {
    let pki = Pki::new();
    let b = pki.valid(&id("b"));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let app = start_echo().await;
    let foreign = pki.valid(&SpiffeId::new("evil.local", "default", "a"));
    assert!(
        client(&pki)
            .open(&foreign, &target(srv, id("b"), app), dial())
            .await
            .is_err()
    );
    inbound.wait_refusal("cert_invalid").await;
    // Same names, different CA: the chain does not reach our root.
    let other = Pki::new();
    let stranger = other.valid(&id("a"));
    let c = HboneClient::new(pki.roots(), Duration::from_secs(5), Duration::from_secs(30));
    assert!(c.open(&stranger, &target(srv, id("b"), app), dial()).await.is_err());
    // Same issuer name, wrong signature: webpki reports a bad signature, not an unknown issuer.
    inbound.wait_refusals("second refusal", |r| r.len() >= 2).await;
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let b = pki.valid(&id("b"));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let now = SystemTime::now();
    let expired = pki.cert(
        &id("a"),
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    );
    assert!(
        client(&pki)
            .open(&expired, &target(srv, id("b"), start_echo().await), dial())
            .await
            .is_err()
    );
    inbound.wait_refusal("cert_expired").await;
}

#[tokio::test]
async fn garbage_and_stalled_peers_are_refused_without_disturbing_a_live_stream() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_millis(300)).await;
    let c = client(&pki);
    let good = tunneled_socket(&c, &a, &target(srv, id("b"), start_echo().await))
        .await
        .unwrap();
    let transfer = tokio::spawn(echo_roundtrip(good, 16 << 20));

    let mut http1 = TcpStream::connect(srv).await.unwrap();
    http1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    // The server answers with at most a TLS alert, then closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline.into(), http1.read(&mut buf))
            .await
            .expect("server kept the connection")
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    inbound.wait_refusal("not_tls").await;

    let stalled = TcpStream::connect(srv).await.unwrap();
    inbound.wait_refusal("handshake_timeout").await;
    drop(stalled);
    transfer.await.unwrap();
}

#[tokio::test]
async fn refused_app_gives_503_and_non_local_target_403() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let c = client(&pki);
    let err = c.open(&a, &target(srv, id("b"), closed), dial()).await.err().unwrap();
    assert!(
        matches!(err, HboneError::Status { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE),
        "{err}"
    );
    let far: SocketAddr = "198.18.9.9:80".parse().unwrap();
    let err = c.open(&a, &target(srv, id("b"), far), dial()).await.err().unwrap();
    assert!(
        matches!(err, HboneError::Status { status, .. } if status == StatusCode::FORBIDDEN),
        "{err}"
    );
    // The pooled connection survived both refusals.
    let s = tunneled_socket(&c, &a, &target(srv, id("b"), start_echo().await))
        .await
        .unwrap();
    echo_roundtrip(s, 1024).await;
    assert_eq!(c.pooled(), 1);
}

#[tokio::test]
async fn non_connect_request_gets_400() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let cfg = tls::client_config(a.resolver.clone(), pki.roots(), id("b")).unwrap();
    let tcp = TcpStream::connect(srv).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(rustls_pki_types::ServerName::IpAddress(srv.ip().into()), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::builder()
        .method("GET")
        .uri("http://127.0.0.1:1/")
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), StatusCode::BAD_REQUEST);
    inbound.wait_refusal("bad_request").await;
}

#[tokio::test]
async fn rotation_during_a_transfer_keeps_it_and_new_connections_use_the_new_certificate() {
    let pki = Pki::new();
    let (a, b) = (pki.valid(&id("a")), pki.valid(&id("b")));
    let inbound = Arc::new(TestInbound::default());
    let srv = start_server(&pki, &b, inbound.clone(), Duration::from_secs(5)).await;
    let app = start_echo().await;
    let t = target(srv, id("b"), app);
    let c1 = client(&pki);
    let first_cert = a.resolver.current().certified.cert[0].clone();
    let s = tunneled_socket(&c1, &a, &t).await.unwrap();
    let transfer = tokio::spawn(echo_roundtrip(s, 24 << 20));

    // Rotate both sides mid-transfer.
    let next = pki.valid(&id("a")).resolver.current();
    let new_cert = next.certified.cert[0].clone();
    a.resolver.replace(mesh_hbone::cert::Current {
        certified: next.certified.clone(),
        not_before: next.not_before,
        not_after: next.not_after,
        issued: next.issued,
        generation: 2,
    });
    assert_ne!(first_cert, new_cert);

    // The same client opens a new connection for new streams, presenting the new certificate.
    let s2 = tunneled_socket(&c1, &a, &t).await.unwrap();
    echo_roundtrip(s2, 1 << 20).await;
    transfer.await.unwrap();
    let peers = inbound.peers.lock().unwrap().clone();
    assert_eq!(peers, vec![first_cert, new_cert]);
}
