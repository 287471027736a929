//! The attacks the abusive-peer e2e tests share (included with `#[path]`; as its own
//! test target it holds no tests): a mesh client with a leaked certificate, HTTP/2
//! rapid reset, a PING / SETTINGS flood, half-sent requests, and the daemon's RSS.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mesh_hbone::SpiffeId;
use mesh_hbone::cert::{CertResolver, Current};
use rustls_pki_types::pem::PemObject;
use xtask::harness::Cluster;

pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The first bytes of a TLS ClientHello record (type 22, TLS 1.0 record version, length).
pub const HELLO_HEAD: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// An HTTP/1.1 request head that never ends (no blank line).
pub const HALF_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: web\r\nUser-Agent: slowloris\r\nX-a: ";

/// A request line that never ends (the test app reads line by line).
pub const HALF_LINE: &[u8] = b"GET /a-request-line-that-never-ends";

/// RSS of `pid` in KiB (the process must exist).
pub fn rss_kib(pid: u32) -> u64 {
    let s = xtask::bench::procstat::sample(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
    (s.rss_mib * 1024.0) as u64
}

/// Is `pid` running (not gone, not a zombie)?
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("State:") && !l.contains("zombie")))
}

/// The mesh CA's files of a cluster whose CA the harness started.
pub fn mesh_cacerts(c: &Cluster) -> std::path::PathBuf {
    c.state_dir().join("mesh-ca/cacerts")
}

/// Reads until the server closes the connection (EOF or reset) or `within` passes.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
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

/// `n` connections from `connect`, each sent `head` and left there.
pub fn stalled(n: usize, head: &[u8], mut connect: impl FnMut() -> TcpStream) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect();
            let _ = s.write_all(head);
            s
        })
        .collect()
}

/// How many of `conns` the server closes within `within` (all waited for together).
pub fn count_closed(conns: &mut [TcpStream], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    conns
        .iter_mut()
        .filter_map(|s| closed_within(s, deadline.saturating_duration_since(Instant::now())).then_some(()))
        .count()
}

/// A mesh workload whose key leaked: mutual TLS to one HBONE server, from a pod
/// outside the mesh (not captured), with a certificate the cluster's CA signed.
pub struct MeshPeer<'a> {
    pub cluster: &'a Cluster,
    /// The pod the TCP connections come from.
    pub from: (&'a str, &'a str),
    pub to: SocketAddr,
    pub config: Arc<rustls::ClientConfig>,
}

impl<'a> MeshPeer<'a> {
    /// `id`'s certificate signed by the CA in `cacerts`, checking the server is `server`.
    pub fn new(
        cluster: &'a Cluster,
        from: (&'a str, &'a str),
        to: SocketAddr,
        cacerts: &std::path::Path,
        id: &SpiffeId,
        server: SpiffeId,
    ) -> Self {
        let config = client_config(cluster, cacerts, id, server);
        Self {
            cluster,
            from,
            to,
            config,
        }
    }

    pub fn tcp(&self) -> TcpStream {
        self.cluster
            .connect_from_pod(self.from.0, self.from.1, self.to, Duration::from_secs(5))
            .expect("connect from the attacker's pod")
    }

    pub async fn tls(&self) -> std::io::Result<Tls> {
        let tcp = self.tcp();
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpStream::from_std(tcp)?;
        let name = rustls_pki_types::ServerName::try_from("mesh").expect("name");
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }

    /// An HTTP/2 connection over mutual TLS (its driver runs on the current runtime).
    pub async fn h2(&self) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<()>) {
        let tls = self.tls().await.expect("mesh TLS");
        let (send, conn) = h2::client::handshake(tls).await.expect("h2");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, driver)
    }
}

/// A client certificate for `id` signed by the CA in `cacerts`, trusting the
/// cluster's mesh root and expecting the server to be `server`.
pub fn client_config(
    c: &Cluster,
    cacerts: &std::path::Path,
    id: &SpiffeId,
    server: SpiffeId,
) -> Arc<rustls::ClientConfig> {
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
    let mesh = mesh_cacerts(c);
    let mesh_root = std::fs::read_to_string(mesh.join("root-cert.pem"))
        .or_else(|_| std::fs::read_to_string(mesh.join("ca-cert.pem")))
        .expect("mesh root");
    let roots = mesh_hbone::ca::client::root_store_pem(&mesh_root).expect("roots");
    mesh_hbone::tls::client_config(resolver, roots, server).expect("client")
}

/// A CONNECT to `authority` with `headers`; the status, or how it was refused.
pub async fn connect_status(
    send: h2::client::SendRequest<bytes::Bytes>,
    authority: &str,
    headers: &[(&str, String)],
) -> String {
    let mut req = http::Request::builder().method("CONNECT").uri(authority);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(()).expect("request");
    let mut send = match send.ready().await {
        Ok(s) => s,
        Err(e) => return format!("connection refused: {e}"),
    };
    match send.send_request(req, false) {
        Ok((resp, _)) => match tokio::time::timeout(Duration::from_secs(5), resp).await {
            Ok(Ok(r)) => format!("status {}", r.status().as_u16()),
            Ok(Err(e)) => format!("refused: {e}"),
            Err(_) => "no answer".into(),
        },
        Err(e) => format!("refused locally: {e}"),
    }
}

/// Opens CONNECT streams to `authority` and cancels each at once, `n` times on one connection.
pub async fn rapid_reset(peer: &MeshPeer<'_>, authority: SocketAddr, n: usize) -> String {
    let (mut send, driver) = peer.h2().await;
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
            .uri(authority.to_string())
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
pub async fn control_flood(peer: &MeshPeer<'_>, frames: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let mut tls = peer.tls().await.expect("mesh TLS");
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
