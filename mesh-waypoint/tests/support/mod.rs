//! Test lab: real hyper backends on their own loopback addresses (each test gets a
//! fresh 127.x.y.0/24 block), a real waypoint reading a real config directory, and
//! a real HTTP client. Everything stays on 127.0.0.0/8.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use mesh_waypoint::{Options, Waypoint};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

pub const NS: &str = "bookinfo";

static NEXT_BLOCK: AtomicU8 = AtomicU8::new(1);

/// A /24 inside 127/8 no other test (of this process) uses.
pub fn fresh_block() -> [u8; 3] {
    let n = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
    [127, 100 + (std::process::id() % 100) as u8, n]
}

pub fn ip(block: [u8; 3], last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(block[0], block[1], block[2], last))
}

/// A backend that answers with JSON naming its version, and echoes the request.
/// Query parameters steer it: `status=N`, `hold=1` (wait for a permit
/// on `gate`).
pub struct Backend {
    pub addr: SocketAddr,
    pub version: String,
    pub hits: Arc<AtomicUsize>,
    pub inflight: Arc<AtomicUsize>,
    pub gate: Arc<Semaphore>,
    /// Status every request gets unless `status=` says otherwise (0: 200).
    pub fixed_status: Arc<std::sync::atomic::AtomicU16>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Backend {
    pub async fn start(addr: SocketAddr, version: &str) -> Backend {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind backend {addr}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let b = Backend {
            addr,
            version: version.to_owned(),
            hits: Arc::default(),
            inflight: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            fixed_status: Arc::default(),
            stop: tokio::sync::watch::channel(false).0,
        };
        let (version, hits, inflight, gate, fixed) = (
            b.version.clone(),
            b.hits.clone(),
            b.inflight.clone(),
            b.gate.clone(),
            b.fixed_status.clone(),
        );
        let mut stop = b.stop.subscribe();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stop.changed() => return,
                };
                let (version, hits, inflight, gate, fixed) = (
                    version.clone(),
                    hits.clone(),
                    inflight.clone(),
                    gate.clone(),
                    fixed.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (version, hits, inflight, gate, fixed) = (
                            version.clone(),
                            hits.clone(),
                            inflight.clone(),
                            gate.clone(),
                            fixed.clone(),
                        );
                        async move { Ok::<_, Infallible>(echo(req, peer, &version, &hits, &inflight, &gate, &fixed).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        b
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn echo(
    req: Request<Incoming>,
    peer: SocketAddr,
    version: &str,
    hits: &AtomicUsize,
    inflight: &Arc<AtomicUsize>,
    gate: &Semaphore,
    fixed: &std::sync::atomic::AtomicU16,
) -> Response<Full<Bytes>> {
    hits.fetch_add(1, Ordering::Relaxed);
    inflight.fetch_add(1, Ordering::Relaxed);
    struct Dec(Arc<AtomicUsize>);
    impl Drop for Dec {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _dec = Dec(inflight.clone());
    let q = |k: &str| {
        req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .map(str::to_owned)
        })
    };
    if q("hold").is_some() {
        let _ = gate.acquire().await.map(|p| p.forget());
    }
    let mut status = q("status").and_then(|s| s.parse().ok()).unwrap_or(200u16);
    let f = fixed.load(Ordering::Relaxed);
    if f != 0 {
        status = f;
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = v.to_str().unwrap_or("?");
        headers
            .entry(k.to_string())
            .and_modify(|old| *old = format!("{old},{v}"))
            .or_insert_with(|| v.to_owned());
    }
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let method = req.method().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({"version": version, "path": path, "host": host, "method": method, "headers": headers, "peer": peer.to_string(), "body": String::from_utf8_lossy(&body)});
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    resp.headers_mut().insert("x-version", version.parse().expect("header"));
    resp
}

/// What a test reads from a response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The version that served the request, or `-` for local replies.
    pub fn version(&self) -> String {
        self.json()["version"].as_str().unwrap_or("-").to_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn echoed(&self, name: &str) -> String {
        self.json()["headers"][name].as_str().unwrap_or("").to_owned()
    }
}

pub struct Lab {
    pub block: [u8; 3],
    pub dir: tempfile::TempDir,
    pub waypoint: Waypoint,
    pub client: Client<HttpConnector, Full<Bytes>>,
    /// reviews v1, v2, v3 at .2, .3, .4 (same port).
    pub reviews: Vec<Backend>,
    pub port: u16,
}

impl Lab {
    /// Bookinfo-shaped lab: Service `reviews` (port 9080) with pods v1..v3,
    /// a DestinationRule with subsets v1..v3, and a `productpage` pod at .50 as client.
    pub async fn bookinfo() -> Lab {
        Self::bookinfo_serving(&["mesh"]).await
    }

    /// Like [`Lab::bookinfo`], the waypoint serving `gateways` (ingress gateway mode).
    pub async fn bookinfo_serving(gateways: &[&str]) -> Lab {
        let block = fresh_block();
        let first = Backend::start(SocketAddr::new(ip(block, 2), 0), "v1").await;
        let port = first.addr.port();
        let mut reviews = vec![first];
        for (i, v) in ["v2", "v3"].iter().enumerate() {
            reviews.push(Backend::start(SocketAddr::new(ip(block, 3 + i as u8), port), v).await);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bookinfo.yaml"), bookinfo_yaml(block, port)).expect("write config");
        let mut opts = Options::new("127.0.0.1:0".parse().expect("addr"), NS);
        opts.config_dir = Some(dir.path().to_path_buf());
        opts.poll_interval = Duration::from_secs(3600);
        opts.gateways = gateways.iter().map(|g| g.to_string()).collect();
        let waypoint = Waypoint::start(opts).await.expect("waypoint starts");
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build_http();
        Lab {
            block,
            dir,
            waypoint,
            client,
            reviews,
            port,
        }
    }

    pub fn ip(&self, last: u8) -> IpAddr {
        ip(self.block, last)
    }

    /// Writes `name` in the config directory and applies it now.
    pub fn apply(&self, name: &str, yaml: &str) {
        // Written beside it (hidden names are not read) and renamed into place: the
        // waypoint's own directory poll must never see a half-written file, which
        // would drop the file's objects until the next reload.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write config");
        // Same size and mtime within the timestamp granularity would look unchanged.
        bump_mtime(&tmp);
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename config into place");
        self.waypoint.reload_config().expect("config dir readable");
    }

    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.path().join(name));
        self.waypoint.reload_config().expect("config dir readable");
    }

    pub fn request(&self, host: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .uri(format!("http://{}{path}", self.waypoint.addr))
            .header("host", host)
    }

    pub async fn send(&self, req: http::request::Builder) -> Reply {
        self.send_body(req, Bytes::new()).await
    }

    pub async fn send_body(&self, req: http::request::Builder, body: Bytes) -> Reply {
        let started = Instant::now();
        let resp = self
            .client
            .request(req.body(Full::new(body)).expect("request"))
            .await
            .expect("waypoint answers");
        read(resp, started).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(&format!("reviews:{}", 9080), path)).await
    }

    /// One request on a fresh connection from `source` (for sourceLabels/sourceNamespace).
    pub async fn send_from(&self, source: IpAddr, req: http::request::Builder) -> Reply {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(source, 0)).expect("bind source");
        let stream = sock.connect(self.waypoint.addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = req.body(Full::new(Bytes::new())).expect("request");
        // Origin-form on a raw connection, so the Host header is what routes.
        *req.uri_mut() = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .expect("path");
        let started = Instant::now();
        let resp = sender.send_request(req).await.expect("response");
        read(resp, started).await
    }
}

fn bump_mtime(path: &std::path::Path) {
    static TICK: AtomicUsize = AtomicUsize::new(1);
    let t = std::time::SystemTime::now() + Duration::from_secs(TICK.fetch_add(1, Ordering::Relaxed) as u64);
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(t);
    }
}

async fn read(resp: Response<Incoming>, started: Instant) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: started.elapsed(),
    }
}

pub fn bookinfo_yaml(block: [u8; 3], port: u16) -> String {
    let ipn = |n: u8| ip(block, n);
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reviews, namespace: {NS}}}\nspec:\n  selector: {{app: reviews}}\n  ports: [{{name: http, port: 9080, targetPort: {port}}}]\n"
    );
    for (i, v) in ["v1", "v2", "v3"].iter().enumerate() {
        y += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: reviews-{v}, namespace: {NS}, labels: {{app: reviews, version: {v}}}}}\nstatus: {{podIP: {}}}\n",
            ipn(2 + i as u8)
        );
    }
    y += &format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: productpage, namespace: {NS}, labels: {{app: productpage}}}}\nstatus: {{podIP: {}}}\n",
        ipn(50)
    );
    y += &format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: {NS}}}\nspec:\n  host: reviews\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: v3, labels: {{version: v3}}}}\n"
    );
    y
}

/// A VirtualService for `reviews` in the lab namespace with the given `http:` list.
pub fn reviews_vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: {NS}}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

/// Polls `check` every 20 ms until it holds or `deadline` passes: the one place
/// the tests wait for state that has no notification (counters, reloads, ejections).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    deadline: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let polled = tokio::time::timeout(deadline, async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if check().await {
                return;
            }
        }
    });
    polled.await.is_ok()
}

/// Sends `n` requests built by `make`, at most `concurrency` at once; returns replies in completion order.
pub async fn burst(
    lab: &Arc<Lab>,
    n: usize,
    concurrency: usize,
    make: impl Fn(usize) -> http::request::Builder + Send + Sync + 'static,
) -> Vec<Reply> {
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (lab, make, next) = (lab.clone(), make.clone(), next.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push(lab.send(make(i)).await);
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("worker"));
    }
    all
}
