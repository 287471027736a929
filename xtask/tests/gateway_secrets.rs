//! The ingress gateway in Kubernetes mode reads its `credentialName` Secrets from the
//! API server (issue 15): `mesh-waypoint run --mode gateway --kubernetes` against the
//! workspace's test API server (`xtask::apiserver`, real list/watch over HTTP) on
//! loopback serves HTTPS with the Secret's certificate; replacing the Secret gives new
//! connections the new certificate; a Secret of the same name in another namespace is
//! never read (Secrets are listed in the gateway's namespace only). Real TLS client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use xtask::apiserver::ApiServer;
use xtask::harness::{ProcessGuard, bin_path, wait_for};

const GW_NS: &str = "istio-system";
const HOST: &str = "shop.example.com";
const WAIT: Duration = Duration::from_secs(30);

/// Certificates for [`HOST`] signed by a fresh root (the mesh CA's own authority code,
/// as it makes its serving certificate): `(chain PEM, key PEM, leaf DER)`.
struct Pki {
    ca_der: CertificateDer<'static>,
    authority: mesh_ca::authority::Authority,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let cacerts = dir.join("cacerts");
        mesh_ca::authority::create_root(&cacerts, "cluster.local").expect("root");
        let authority = mesh_ca::authority::Authority::load(&cacerts).expect("authority");
        let ca_der = first_der(authority.root_pem());
        Pki { ca_der, authority }
    }

    fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let (chain, key) = self.authority.serving_cert(&[HOST.to_owned()]).expect("leaf");
        let der = first_der(&chain);
        (chain, key, der)
    }
}

fn first_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a PEM certificate")
        .expect("PEM parses")
}

fn tls_secret(namespace: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-cert, namespace: {namespace}}}\ntype: kubernetes.io/tls\n\
         data:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(cert),
        b64(key)
    )
}

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {GW_NS}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: shop, namespace: {GW_NS}}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n\
         \x20 - port: {{number: {port}, name: https, protocol: HTTPS}}\n    hosts: [{HOST}]\n\
         \x20   tls: {{mode: SIMPLE, credentialName: shop-cert}}\n"
    )
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind probe");
    l.local_addr().expect("probe addr").port()
}

/// One HTTPS request on a fresh connection verified against `ca`: the certificate the
/// gateway presented, and the status line of its answer.
fn https_get(addr: SocketAddr, ca: &CertificateDer<'static>) -> Result<(CertificateDer<'static>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(HOST).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).map_err(|e| format!("TLS: {e}"))?;
    let mut answer = Vec::new();
    // The gateway may close without close_notify once the answer is sent.
    let _ = tls.read_to_end(&mut answer);
    let presented = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate presented")?;
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((presented, status))
}

/// Polls until a fresh connection is served with `want`.
fn wait_presented(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    want: &CertificateDer<'static>,
    log: &Path,
) -> String {
    let mut last = String::new();
    wait_for("the gateway presents the Secret's certificate", WAIT, || {
        match https_get(addr, ca) {
            Ok((presented, status)) if presented == *want => return Some(status),
            Ok((_, status)) => last = format!("another certificate ({status})"),
            Err(e) => last = e,
        }
        None
    })
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{e}; last: {last}\ngateway log:\n{log}")
    })
}

#[test]
fn gateway_serves_https_from_secrets_on_the_api_server_and_follows_their_replacement() {
    let api = ApiServer::start(|| TcpListener::bind("127.0.0.1:0")).expect("test API server");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let pki = Pki::new(dir.path());
    let (cert1, key1, der1) = pki.leaf();
    let (decoy_cert, decoy_key, decoy_der) = pki.leaf();
    let port = free_port();
    api.apply_yaml("secret.yaml", &tls_secret(GW_NS, &cert1, &key1))
        .expect("apply Secret");
    // The same name in another namespace: not the gateway's, never read.
    api.apply_yaml(
        "decoy.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{}",
            tls_secret("shop", &decoy_cert, &decoy_key)
        ),
    )
    .expect("apply decoy");
    api.apply_yaml("gateway.yaml", &gateway(port)).expect("apply Gateway");

    let log = dir.path().join("gateway.log");
    let _gateway = ProcessGuard::adopt(
        Command::new(bin_path("mesh-waypoint").expect("mesh-waypoint is built"))
            .args([
                "run",
                "--mode",
                "gateway",
                "--kubernetes",
                "--pod-labels",
                "istio=ingressgateway",
            ])
            .args(["--namespace", GW_NS, "--bind-ip", "127.0.0.1"])
            .args(["--admin", "127.0.0.1:0", "--readiness-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("mesh-waypoint starts"),
        "mesh-waypoint (gateway)",
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let status = wait_presented(addr, &pki.ca_der, &der1, &log);
    // No VirtualService is bound: the gateway answers (over TLS) with Istio's 404 NR.
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");

    // Replace the Secret: new connections get the new certificate, without a restart.
    let (cert2, key2, der2) = pki.leaf();
    api.apply_yaml("secret.yaml", &tls_secret(GW_NS, &cert2, &key2))
        .expect("replace Secret");
    wait_presented(addr, &pki.ca_der, &der2, &log);
    let (presented, _) = https_get(addr, &pki.ca_der).expect("HTTPS after the replacement");
    assert_ne!(presented, der1, "the replaced certificate is no longer presented");
    assert_ne!(presented, decoy_der);

    // Secrets were listed in the gateway's namespace only, never cluster-wide.
    let lists = api.lists_by_namespace("Secret");
    assert_eq!(
        lists.keys().cloned().collect::<Vec<_>>(),
        vec![Some(GW_NS.to_owned())],
        "{lists:?}"
    );
}
