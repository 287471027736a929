//! Ingress gateway mode end to end on loopback: a real `IngressGateway` reading a
//! real config directory (Gateway, VirtualService, DestinationRule, Service, Pod and
//! Secret objects), real hyper backends, real HTTP and TLS clients. Each test has its
//! own 127.x.y.0/24 block; the gateway binds its Gateway ports on `.1` of it.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_waypoint::Options;
use mesh_waypoint::gateway::{GatewayOptions, IngressGateway};
use rustls_pki_types::{CertificateDer, ServerName};
use support::{Backend, NS, Reply, bookinfo_yaml, eventually, fresh_block, ip};

const GW_NS: &str = "istio-system";
const WAIT: Duration = Duration::from_secs(10);

/// Bookinfo-shaped backends (reviews v1..v3 behind Service `reviews`, productpage
/// behind Service `productpage`) and an ingress gateway labelled `istio=ingressgateway`
/// in `istio-system`.
struct GatewayLab {
    block: [u8; 3],
    dir: tempfile::TempDir,
    gateway: IngressGateway,
    client: Client<HttpConnector, Full<Bytes>>,
    /// reviews v1, v2, v3, productpage.
    backends: Vec<Backend>,
}

impl GatewayLab {
    async fn start() -> GatewayLab {
        let block = fresh_block();
        let v1 = Backend::start(SocketAddr::new(ip(block, 2), 0), "v1").await;
        let port = v1.addr.port();
        let v2 = Backend::start(SocketAddr::new(ip(block, 3), port), "v2").await;
        let v3 = Backend::start(SocketAddr::new(ip(block, 4), port), "v3").await;
        let productpage = Backend::start(SocketAddr::new(ip(block, 60), port), "productpage-v1").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let platform = format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: productpage, namespace: {NS}}}\nspec: {{selector: {{app: productpage-app}}, ports: [{{name: http, port: 9080, targetPort: {port}}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: productpage-v1, namespace: {NS}, labels: {{app: productpage-app}}}}\nstatus: {{podIP: {}}}\n",
            bookinfo_yaml(block, port),
            ip(block, 60)
        );
        std::fs::write(dir.path().join("platform.yaml"), platform).expect("write config");
        let mut opts = Options::new("127.0.0.1:0".parse().expect("addr"), GW_NS);
        opts.config_dir = Some(dir.path().to_path_buf());
        opts.poll_interval = Duration::from_secs(3600);
        opts.admin = Some("127.0.0.1:0".parse().expect("addr"));
        let mut gw = GatewayOptions::new(&[("istio", "ingressgateway"), ("app", "istio-ingressgateway")]);
        gw.bind_ip = ip(block, 1);
        let gateway = IngressGateway::start(opts, gw).await.expect("gateway starts");
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http();
        GatewayLab {
            block,
            dir,
            gateway,
            client,
            backends: vec![v1, v2, v3, productpage],
        }
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(ip(self.block, 1), port)
    }

    /// A port on the gateway's address nothing listens on now.
    fn free_port(&self) -> u16 {
        let l = std::net::TcpListener::bind(self.addr(0)).expect("bind probe");
        l.local_addr().expect("probe addr").port()
    }

    /// Writes `name` in the config directory and applies it now.
    fn apply(&self, name: &str, yaml: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write config");
        bump_mtime(&path);
        self.gateway.reload_config().expect("config dir readable");
    }

    fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(name));
        self.gateway.reload_config().expect("config dir readable");
    }

    async fn wait_listening(&self, port: u16) {
        let ok = eventually(WAIT, || async {
            self.gateway.listening().contains_key(&port)
                && tokio::net::TcpStream::connect(self.addr(port)).await.is_ok()
        })
        .await;
        assert!(
            ok,
            "port {port} listens; listeners: {:?}",
            self.dump()["gateway"]["listeners"]
        );
    }

    async fn wait_closed(&self, port: u16) {
        let ok = eventually(WAIT, || async {
            !self.gateway.listening().contains_key(&port)
                && tokio::net::TcpStream::connect(self.addr(port)).await.is_err()
        })
        .await;
        assert!(ok, "port {port} stops listening");
    }

    fn request(&self, port: u16, host: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .uri(format!("http://{}{path}", self.addr(port)))
            .header("host", host)
    }

    async fn get(&self, port: u16, host: &str, path: &str) -> Reply {
        let started = Instant::now();
        let req = self
            .request(port, host, path)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = self.client.request(req).await.expect("gateway answers");
        read(resp, started).await
    }

    fn dump(&self) -> serde_json::Value {
        mesh_waypoint::admin::config_dump(&self.gateway.config)
    }

    fn rejected(&self) -> Vec<String> {
        self.gateway.config.load().rejected.clone()
    }
}

fn bump_mtime(path: &std::path::Path) {
    static TICK: AtomicUsize = AtomicUsize::new(1);
    let t = std::time::SystemTime::now() + Duration::from_secs(TICK.fetch_add(1, Ordering::Relaxed) as u64);
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(t);
    }
}

async fn read<B: hyper::body::Body>(resp: http::Response<B>, started: Instant) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: started.elapsed(),
    }
}

fn gateway_yaml(name: &str, ns: &str, selector: &str, servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{{selector}}}\n  servers:\n{servers}"
    )
}

fn http_server(port: u16, hosts: &str) -> String {
    format!("  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: [{hosts}]\n")
}

fn vs_yaml(name: &str, ns: &str, hosts: &str, gateways: Option<&str>, subset: &str) -> String {
    let gateways = gateways.map(|g| format!("  gateways: [{g}]\n")).unwrap_or_default();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{hosts}]\n{gateways}  http:\n  - route: [{{destination: {{host: reviews.{NS}.svc.cluster.local, subset: {subset}, port: {{number: 9080}}}}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gateway_sample_serves_productpage_on_8080() {
    let lab = GatewayLab::start().await;
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/bookinfo/bookinfo-gateway.yaml");
    lab.apply(
        "bookinfo-gateway.yaml",
        &std::fs::read_to_string(sample).expect("sample readable"),
    );
    assert!(lab.rejected().is_empty(), "{:?}", lab.rejected());
    lab.wait_listening(8080).await;

    let r = lab.get(8080, "bookinfo.example.com", "/productpage").await;
    assert_eq!(
        (r.status, r.version().as_str()),
        (StatusCode::OK, "productpage-v1"),
        "{r:?}"
    );
    let r = lab.get(8080, "localhost:8080", "/api/v1/products/0").await;
    assert_eq!(r.version(), "productpage-v1", "{r:?}");
    // Edge headers, as Istio's gateway adds them.
    assert_eq!(r.echoed("x-forwarded-proto"), "http");
    assert!(r.echoed("x-forwarded-for").starts_with("127."), "{r:?}");
    assert_eq!(r.echoed("x-request-id").len(), 36, "{r:?}");
    // The VirtualService matches only the Bookinfo paths: others get Istio's 404.
    let r = lab.get(8080, "bookinfo.example.com", "/admin").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.header("x-mesh-flags"), "NR");

    let dump = lab.dump();
    assert_eq!(
        dump["gateway"]["gateways"],
        serde_json::json!(["Gateway bookinfo/bookinfo-gateway"]),
        "{dump}"
    );
    assert_eq!(dump["gateway"]["listeners"]["8080"]["state"], "listening", "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_mesh_virtual_services_stay_apart_and_hosts_filter() {
    let lab = GatewayLab::start().await;
    let port = lab.free_port();
    let other_port = lab.free_port();
    let servers = http_server(port, "shop.example.com, 'bookinfo/*.internal.example'");
    lab.apply(
        "gw.yaml",
        &gateway_yaml("shop-gateway", NS, "istio: ingressgateway", &servers),
    );
    // Another gateway workload's Gateway: its port must not open here.
    lab.apply(
        "egress.yaml",
        &gateway_yaml("egress", GW_NS, "istio: egressgateway", &http_server(other_port, "'*'")),
    );
    lab.apply(
        "vs.yaml",
        &[
            vs_yaml("shop", NS, "shop.example.com", Some("shop-gateway"), "v2"),
            vs_yaml("shop-mesh", NS, "shop.example.com", None, "v3"),
            vs_yaml(
                "internal",
                NS,
                "'*.internal.example'",
                Some("bookinfo/shop-gateway"),
                "v1",
            ),
            vs_yaml(
                "intruder",
                "other",
                "b.internal.example",
                Some("bookinfo/shop-gateway"),
                "v3",
            ),
        ]
        .join("---\n"),
    );
    assert!(lab.rejected().is_empty(), "{:?}", lab.rejected());
    lab.wait_listening(port).await;
    assert!(
        !lab.gateway.listening().contains_key(&other_port),
        "a Gateway selecting other pods opens nothing here"
    );

    // The gateway-bound VirtualService serves at the gateway, the mesh-bound one does not.
    for _ in 0..5 {
        assert_eq!(lab.get(port, "shop.example.com", "/").await.version(), "v2");
    }
    assert_eq!(
        lab.get(port, "Shop.Example.com:80", "/").await.version(),
        "v2",
        "host compared without port and case"
    );
    // Vice versa: a waypoint on the same configuration applies only the mesh-bound one.
    let mut opts = Options::new(SocketAddr::new(ip(lab.block, 1), 0), NS);
    opts.config_dir = Some(lab.dir.path().to_path_buf());
    opts.poll_interval = Duration::from_secs(3600);
    let waypoint = mesh_waypoint::Waypoint::start(opts).await.expect("waypoint starts");
    let req = Request::builder()
        .uri(format!("http://{}/", waypoint.addr))
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let r = read(lab.client.request(req).await.expect("waypoint answers"), Instant::now()).await;
    assert_eq!(r.version(), "v3", "{r:?}");

    // Server hosts: wildcard plus namespace restriction.
    assert_eq!(lab.get(port, "a.internal.example", "/").await.version(), "v1");
    let r = lab.get(port, "b.internal.example", "/").await;
    assert_eq!(
        r.version(),
        "v1",
        "VirtualService `other/intruder` is not admitted by `bookinfo/*.internal.example`: {r:?}"
    );
    let r = lab.get(port, "elsewhere.example.com", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert!(r.header("x-mesh-reason").contains("matches no server host"), "{r:?}");
    // A host the server accepts but no bound VirtualService names: 404 as well.
    lab.apply(
        "gw.yaml",
        &gateway_yaml("shop-gateway", NS, "istio: ingressgateway", &http_server(port, "'*'")),
    );
    let r = lab.get(port, "nobody.example.com", "/").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert!(
        r.header("x-mesh-reason")
            .contains("no VirtualService bound to bookinfo/shop-gateway"),
        "{r:?}"
    );
    // And the reviews Service itself is not reachable by naming it (no mesh fallback at the edge).
    assert_eq!(
        lab.get(port, "reviews.bookinfo.svc.cluster.local", "/").await.status,
        StatusCode::NOT_FOUND
    );
}

/// A CA and a server certificate it signed for `hosts`, in PEM.
struct Pki {
    ca_der: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "gateway test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = params.self_signed(&key).expect("CA");
        Pki {
            ca_der: ca.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn leaf(&self, hosts: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }
}

fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {GW_NS}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(cert),
        b64(key)
    )
}

fn https_server(port: u16, hosts: &str, credential: &str) -> String {
    format!(
        "  - port: {{number: {port}, name: https-{port}, protocol: HTTPS}}\n    hosts: [{hosts}]\n    tls: {{mode: SIMPLE, credentialName: {credential}}}\n"
    )
}

/// One HTTPS GET on a fresh connection, verifying the server with `ca`; returns the
/// reply and the certificate the server presented.
async fn https_get(
    addr: SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    path: &str,
) -> Result<(Reply, CertificateDer<'static>), String> {
    https_request(addr, sni, ca, path, false).await
}

/// Like [`https_get`], over HTTP/1.1 or (ALPN `h2`) HTTP/2.
async fn https_request(
    addr: SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    path: &str,
    h2: bool,
) -> Result<(Reply, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate")?;
    let started = Instant::now();
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(format!("https://{sni}{path}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::builder()
            .uri(path)
            .header("host", sni)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())?
    };
    Ok((read(resp, started).await, presented))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_simple_with_secret_certificate_reload_and_https_redirect() {
    let lab = GatewayLab::start().await;
    let (https, http) = (lab.free_port(), lab.free_port());
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["shop.example.com"]);
    lab.apply("secret.yaml", &tls_secret("shop-cert", &cert, &key));
    let servers = format!(
        "{}  - port: {{number: {http}, name: http, protocol: HTTP}}\n    hosts: [shop.example.com]\n    tls: {{httpsRedirect: true}}\n",
        https_server(https, "shop.example.com", "shop-cert")
    );
    lab.apply(
        "gw.yaml",
        &gateway_yaml("shop-gateway", GW_NS, "istio: ingressgateway", &servers),
    );
    // v2 only for requests the routes see as https.
    let vs = vs_yaml("shop", NS, "shop.example.com", Some("istio-system/shop-gateway"), "v1")
        .replace("  http:\n", &format!("  http:\n  - match: [{{scheme: {{exact: https}}}}]\n    route: [{{destination: {{host: reviews.{NS}.svc.cluster.local, subset: v2}}}}]\n"));
    lab.apply("vs.yaml", &vs);
    assert!(lab.rejected().is_empty(), "{:?}", lab.rejected());
    lab.wait_listening(https).await;
    lab.wait_listening(http).await;

    let (r, presented) = https_get(lab.addr(https), "shop.example.com", &pki.ca_der, "/reviews/1?x=1")
        .await
        .expect("HTTPS works");
    assert_eq!((r.status, r.version().as_str()), (StatusCode::OK, "v2"), "{r:?}");
    assert_eq!(r.json()["path"], "/reviews/1?x=1");
    let first_cert = presented;
    // h2 by ALPN.
    let (r, _) = https_request(lab.addr(https), "shop.example.com", &pki.ca_der, "/h2", true)
        .await
        .expect("HTTPS h2 works");
    assert_eq!((r.status, r.version().as_str()), (StatusCode::OK, "v2"), "{r:?}");
    // An SNI no server host matches gets no certificate.
    let refused = https_get(lab.addr(https), "other.example.com", &pki.ca_der, "/").await;
    assert!(refused.is_err(), "{refused:?}");

    // httpsRedirect: 301 to the same host and path over https.
    let r = lab.get(http, "shop.example.com", "/reviews?id=7").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY, "{r:?}");
    assert_eq!(r.header("location"), "https://shop.example.com/reviews?id=7");

    // Certificate rotation: the new Secret's certificate serves new connections.
    let (cert2, key2) = pki.leaf(&["shop.example.com"]);
    lab.apply("secret.yaml", &tls_secret("shop-cert", &cert2, &key2));
    let (r, presented) = https_get(lab.addr(https), "shop.example.com", &pki.ca_der, "/")
        .await
        .expect("rotated certificate verifies");
    assert_eq!(r.version(), "v2");
    assert_ne!(presented, first_cert, "the rotated certificate is presented");

    // A broken certificate update is rejected; the last good certificate keeps serving.
    lab.apply(
        "secret.yaml",
        &tls_secret(
            "shop-cert",
            "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
            &key2,
        ),
    );
    let rejected = lab.rejected();
    assert!(
        rejected
            .iter()
            .any(|e| e.starts_with("Secret istio-system/shop-cert: data.tls.crt: unparsable PEM certificate")),
        "{rejected:?}"
    );
    let (r, again) = https_get(lab.addr(https), "shop.example.com", &pki.ca_der, "/")
        .await
        .expect("last good certificate still serves");
    assert_eq!((r.version().as_str(), &again), ("v2", &presented));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_open_and_close_with_the_configuration() {
    let lab = GatewayLab::start().await;
    let (a, b) = (lab.free_port(), lab.free_port());
    lab.apply(
        "gw-a.yaml",
        &gateway_yaml("gw-a", NS, "istio: ingressgateway", &http_server(a, "'*'")),
    );
    lab.apply("vs.yaml", &vs_yaml("all", NS, "'*'", Some("gw-a, gw-b"), "v1"));
    lab.wait_listening(a).await;
    assert!(!lab.gateway.listening().contains_key(&b));

    lab.apply(
        "gw-b.yaml",
        &gateway_yaml("gw-b", NS, "app: istio-ingressgateway", &http_server(b, "'*'")),
    );
    lab.wait_listening(b).await;
    assert_eq!(lab.get(b, "x.example.com", "/").await.version(), "v1");
    assert_eq!(lab.get(a, "x.example.com", "/").await.version(), "v1");

    // A request in flight on a port that goes away still completes.
    let lab = Arc::new(lab);
    let held = tokio::spawn({
        let lab = lab.clone();
        async move { lab.get(b, "x.example.com", "/?hold=1").await }
    });
    let v1 = &lab.backends[0];
    assert!(
        eventually(WAIT, || async { v1.inflight.load(Ordering::Relaxed) == 1 }).await,
        "request reached the backend"
    );
    lab.remove("gw-b.yaml");
    lab.wait_closed(b).await;
    v1.gate.add_permits(1);
    let r = held.await.expect("held request task");
    assert_eq!(
        (r.status, r.version().as_str()),
        (StatusCode::OK, "v1"),
        "in-flight request survives its port's removal: {r:?}"
    );
    assert_eq!(
        lab.get(a, "x.example.com", "/").await.version(),
        "v1",
        "the other port keeps serving"
    );

    // Reopened after being closed (SO_REUSEADDR: no wait for TIME_WAIT).
    lab.apply(
        "gw-b.yaml",
        &gateway_yaml("gw-b", NS, "app: istio-ingressgateway", &http_server(b, "'*'")),
    );
    lab.wait_listening(b).await;
    assert_eq!(lab.get(b, "x.example.com", "/").await.version(), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_input_is_named_precisely_and_last_good_config_serves() {
    let lab = GatewayLab::start().await;
    let (http, https) = (lab.free_port(), lab.free_port());
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["shop.example.com"]);
    lab.apply("secret.yaml", &tls_secret("shop-cert", &cert, &key));
    let good = format!(
        "{}{}",
        http_server(http, "'*'"),
        https_server(https, "shop.example.com", "shop-cert")
    );
    lab.apply(
        "gw.yaml",
        &gateway_yaml("bookinfo-gateway", GW_NS, "istio: ingressgateway", &good),
    );
    lab.apply(
        "vs.yaml",
        &vs_yaml("shop", NS, "'*'", Some("istio-system/bookinfo-gateway"), "v3"),
    );
    assert!(lab.rejected().is_empty(), "{:?}", lab.rejected());
    lab.wait_listening(https).await;

    // Missing Secret: the server keeps its last good version (the old certificate).
    let missing = format!(
        "{}{}",
        http_server(http, "'*'"),
        https_server(https, "shop.example.com", "x")
    );
    lab.apply(
        "gw.yaml",
        &gateway_yaml("bookinfo-gateway", GW_NS, "istio: ingressgateway", &missing),
    );
    let want = "Gateway istio-system/bookinfo-gateway: spec.servers[1].tls.credentialName: secret \"x\" not found in namespace istio-system";
    assert!(
        lab.rejected().iter().any(|e| e.starts_with(want)),
        "{:?}",
        lab.rejected()
    );
    let (r, _) = https_get(lab.addr(https), "shop.example.com", &pki.ca_der, "/")
        .await
        .expect("last good HTTPS server serves");
    assert_eq!(r.version(), "v3");
    assert_eq!(lab.get(http, "any.example.com", "/").await.version(), "v3");

    // More bad input, each named with object and field path; nothing crashes.
    let conflict_port = lab.free_port();
    lab.apply("secret-bad.yaml", &tls_secret("bad-cert", "not a certificate", &key));
    let bad = [
        (
            "no-cred",
            format!(
                "  - port: {{number: {conflict_port}, name: https, protocol: HTTPS}}\n    hosts: ['*']\n    tls: {{mode: SIMPLE}}\n"
            ),
        ),
        ("conflict", https_server(http, "'*'", "shop-cert")),
        ("bad-pem", https_server(conflict_port, "'*'", "bad-cert")),
        (
            "tcp",
            format!("  - port: {{number: {conflict_port}, name: tcp, protocol: TCP}}\n    hosts: ['*']\n"),
        ),
    ];
    for (name, servers) in &bad {
        lab.apply(
            &format!("gw-{name}.yaml"),
            &gateway_yaml(name, GW_NS, "istio: ingressgateway", servers),
        );
    }
    let wants = [
        "Secret istio-system/bad-cert: data.tls.crt: no PEM certificate found".to_owned(),
        "Gateway istio-system/no-cred: spec.servers[0].tls.credentialName: tls mode SIMPLE needs credentialName".to_owned(),
        format!("Gateway istio-system/conflict: spec.servers[0].port.protocol: port {http} is already served as HTTP by Gateway istio-system/bookinfo-gateway spec.servers[0]; HTTPS on the same port conflicts"),
        "Gateway istio-system/bad-pem: spec.servers[0].tls.credentialName: secret \"bad-cert\" in namespace istio-system was rejected: data.tls.crt: no PEM certificate found".to_owned(),
        "Gateway istio-system/tcp: spec.servers[0].port.protocol: protocol `TCP` is not supported".to_owned(),
    ];
    let rejected = lab.rejected();
    for want in &wants {
        assert!(
            rejected.iter().any(|e| e.starts_with(want.as_str())),
            "want `{want}` in {rejected:?}"
        );
    }
    assert!(
        !lab.gateway.listening().contains_key(&conflict_port),
        "no valid server on that port"
    );
    assert_eq!(
        lab.get(http, "any.example.com", "/").await.version(),
        "v3",
        "port {http} stays plain HTTP"
    );

    // Visible in the admin config_dump over HTTP...
    let admin = lab.gateway.admin_addr.expect("admin");
    let req = Request::builder()
        .uri(format!("http://{admin}/config_dump"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let dump: serde_json::Value = serde_json::from_str(
        &read(lab.client.request(req).await.expect("admin answers"), Instant::now())
            .await
            .body,
    )
    .expect("json");
    let listed = |v: &serde_json::Value, want: &str| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|l| l.as_str().is_some_and(|l| l.starts_with(want))))
    };
    assert!(listed(&dump["rejected"], want), "{dump}");
    for w in &wants[1..] {
        assert!(listed(&dump["gateway"]["errors"], w), "{w} in {dump}");
    }
    // ...and in `mesh-waypoint check --mode gateway`, which exits 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
        .args([
            "check",
            "--mode",
            "gateway",
            "--pod-labels",
            "istio=ingressgateway",
            "--namespace",
            GW_NS,
            "--config-dir",
        ])
        .arg(lab.dir.path())
        .output()
        .expect("check runs");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for w in wants.iter().map(String::as_str).chain([want]) {
        assert!(text.contains(&w.replace('"', "\\\"")), "`{w}` in check output:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_lost_during_reloads_under_200_concurrent_requests() {
    let lab = Arc::new(GatewayLab::start().await);
    let (port, extra) = (lab.free_port(), lab.free_port());
    lab.apply(
        "gw.yaml",
        &gateway_yaml("gw", NS, "istio: ingressgateway", &http_server(port, "'*'")),
    );
    lab.apply("vs.yaml", &vs_yaml("all", NS, "'*'", Some("gw"), "v1"));
    lab.wait_listening(port).await;

    let total = 4000;
    let next = Arc::new(AtomicUsize::new(0));
    // Completed requests: each reload waits for some, so reloads interleave with load.
    let (done_tx, mut done) = tokio::sync::watch::channel(0usize);
    let done_tx = Arc::new(done_tx);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (lab, next, done_tx) = (lab.clone(), next.clone(), done_tx.clone());
        workers.spawn(async move {
            let mut statuses = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let req = lab
                    .request(port, "shop.example.com", "/")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                statuses.push(match lab.client.request(req).await {
                    Ok(resp) => resp.status().as_u16(),
                    Err(_) => 0,
                });
                done_tx.send_modify(|d| *d += 1);
            }
            statuses
        });
    }
    // Reload while the load runs: routes change, a second port opens and closes.
    let mut reloads = 0;
    while next.load(Ordering::Relaxed) < total && reloads < 60 {
        let subset = ["v1", "v2", "v3"][reloads % 3];
        lab.apply("vs.yaml", &vs_yaml("all", NS, "'*'", Some("gw"), subset));
        let servers = if reloads % 2 == 0 {
            format!("{}{}", http_server(port, "'*'"), http_server(extra, "'*'"))
        } else {
            http_server(port, "'*'")
        };
        lab.apply("gw.yaml", &gateway_yaml("gw", NS, "istio: ingressgateway", &servers));
        reloads += 1;
        let mark = *done.borrow();
        let progressed = tokio::time::timeout(WAIT, done.wait_for(|d| *d >= (mark + 50).min(total))).await;
        assert!(
            progressed.is_ok(),
            "no request completed within {WAIT:?} after reload {reloads}"
        );
    }
    let mut statuses = Vec::new();
    while let Some(r) = workers.join_next().await {
        statuses.extend(r.expect("worker"));
    }
    assert_eq!(statuses.len(), total);
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(
        failed, 0,
        "{failed} of {total} requests failed across {reloads} reloads"
    );
    assert!(reloads >= 5, "reloads happened during the load ({reloads})");
}

/// Kills the child (by its PID, through the handle) even when the test fails.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_in_gateway_mode_serves_the_sample_and_follows_edited_files() {
    let lab = GatewayLab::start().await;
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/bookinfo/bookinfo-gateway.yaml");
    let text = std::fs::read_to_string(sample).expect("sample readable");
    lab.apply("bookinfo-gateway.yaml", &text);
    // The binary binds its own address of the block; the in-process gateway keeps `.1`.
    let bind = ip(lab.block, 5);
    let _proc = Proc(
        std::process::Command::new(env!("CARGO_BIN_EXE_mesh-waypoint"))
            .args([
                "run",
                "--mode",
                "gateway",
                "--pod-labels",
                "istio=ingressgateway",
                "--namespace",
                GW_NS,
                "--admin",
                "127.0.0.1:0",
                "--config-poll-ms",
                "50",
            ])
            .arg("--bind-ip")
            .arg(bind.to_string())
            .arg("--config-dir")
            .arg(lab.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mesh-waypoint starts"),
    );
    let up = |port: u16| async move {
        tokio::net::TcpStream::connect(SocketAddr::new(bind, port))
            .await
            .is_ok()
    };
    assert!(
        eventually(WAIT, || up(8080)).await,
        "the binary listens on 8080 of the sample"
    );
    let get = |port: u16, path: &'static str| {
        let req = Request::builder()
            .uri(format!("http://{}{path}", SocketAddr::new(bind, port)))
            .header("host", "bookinfo.example.com")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let client = lab.client.clone();
        async move { read(client.request(req).await.expect("binary answers"), Instant::now()).await }
    };
    let r = get(8080, "/productpage").await;
    assert_eq!(
        (r.status, r.version().as_str()),
        (StatusCode::OK, "productpage-v1"),
        "{r:?}"
    );

    // Editing the file moves the server: the new port opens, 8080 closes.
    let new_port = lab.free_port();
    std::fs::write(
        lab.dir.path().join("bookinfo-gateway.yaml"),
        text.replace("number: 8080", &format!("number: {new_port}")),
    )
    .expect("edit");
    bump_mtime(&lab.dir.path().join("bookinfo-gateway.yaml"));
    assert!(eventually(WAIT, || up(new_port)).await, "the edited port opens");
    assert!(eventually(WAIT, || async { !up(8080).await }).await, "8080 closes");
    assert_eq!(get(new_port, "/productpage").await.version(), "productpage-v1");
}
