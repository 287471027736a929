//! The live traffic map (what Kiali's graph shows in Istio's tutorials): a static page
//! (`page/`: one HTML, one JS, one CSS file, no build step, built into the binary) and
//! a small HTTP server on the host's loopback that serves it and passes the page's
//! PromQL queries (`GET /api/v1/query`) on to the lab's Prometheus, so the page and
//! the API are same-origin. Everything the map draws comes from Prometheus' HTTP API
//! with Istio's metric names; see README.md "Traffic map".

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

const INDEX_HTML: &str = include_str!("page/index.html");
const MAP_JS: &str = include_str!("page/traffic-map.js");
const MAP_CSS: &str = include_str!("page/traffic-map.css");

/// How long one query may take end to end (connect, Prometheus' evaluation, answer).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Prometheus answer passed on; the map's queries return a few kB.
const MAX_ANSWER_BYTES: usize = 8 << 20;
/// The only upstream path: instant queries. Prometheus' other endpoints (admin, series
/// listing, remote write) are not reachable through the map.
const QUERY_PATH: &str = "/api/v1/query";

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error(
        "the traffic map listens on loopback only (it passes queries on to Prometheus without authentication); {addr} is not a loopback address"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("cannot listen on {addr} for the traffic map: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the traffic map's runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running map server; dropping it stops it.
pub struct TrafficMap {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TrafficMap {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's address, for a browser on this machine.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for TrafficMap {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the map on `listen` (loopback; port 0 picks a free one), passing queries on
/// to the Prometheus HTTP API at `prometheus` (e.g. the lab's, published on loopback).
pub fn serve(listen: SocketAddr, prometheus: SocketAddr) -> Result<TrafficMap, MapError> {
    if !listen.ip().is_loopback() {
        return Err(MapError::NotLoopback { addr: listen });
    }
    let bind = |source| MapError::Bind { addr: listen, source };
    let listener = TcpListener::bind(listen).map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MapError::Runtime)?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => accept_loop(l, prometheus, stopped).await,
                Err(e) => tracing::warn!("traffic map on {addr}: {e}"),
            }
        })
    });
    Ok(TrafficMap {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn accept_loop(listener: tokio::net::TcpListener, prometheus: SocketAddr, mut stopped: oneshot::Receiver<()>) {
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("traffic map accept: {e}");
                    continue;
                }
            },
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, prometheus));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, prometheus: SocketAddr) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "the traffic map answers GET only",
        ));
    }
    let reply = match req.uri().path() {
        "/" | "/index.html" => asset(INDEX_HTML, "text/html; charset=utf-8"),
        "/traffic-map.js" => asset(MAP_JS, "text/javascript; charset=utf-8"),
        "/traffic-map.css" => asset(MAP_CSS, "text/css; charset=utf-8"),
        QUERY_PATH => query(prometheus, req.uri().query().unwrap_or("")).await,
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(reply)
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    // The page loads its own script and stylesheet and talks to its own origin only.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'self'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    r
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `GET /api/v1/query?<query>` at Prometheus, its answer passed back as it came
/// (status and JSON body); 502 / 504 with the reason when Prometheus cannot answer.
async fn query(prometheus: SocketAddr, query: &str) -> Response<Full<Bytes>> {
    match tokio::time::timeout(UPSTREAM_TIMEOUT, forward(prometheus, query)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => plain(StatusCode::BAD_GATEWAY, &format!("Prometheus at {prometheus}: {e}")),
        Err(_) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("Prometheus at {prometheus} did not answer within {UPSTREAM_TIMEOUT:?}"),
        ),
    }
}

#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("reading the answer: {0}")]
    Body(String),
}

async fn forward(prometheus: SocketAddr, query: &str) -> Result<Response<Full<Bytes>>, UpstreamError> {
    let stream = tokio::net::TcpStream::connect(prometheus)
        .await
        .map_err(UpstreamError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = match query {
        "" => QUERY_PATH.to_owned(),
        q => format!("{QUERY_PATH}?{q}"),
    };
    let req = Request::get(path)
        .header(header::HOST, prometheus.to_string())
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())?;
    let answer = sender.send_request(req).await?;
    let (parts, body) = answer.into_parts();
    let body = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| UpstreamError::Body(e.to_string()))?
        .to_bytes();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).expect("connect to the map");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status");
        (status, head.to_owned(), body.to_owned())
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A one-request HTTP server standing in for Prometheus' API: answers a fixed JSON
    /// document and hands back the request line it received.
    fn upstream() -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind(loopback()).expect("bind");
        let addr = l.local_addr().expect("addr");
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).expect("read");
            let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .expect("answer");
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        });
        (addr, t)
    }

    #[test]
    fn serves_the_page_its_script_and_stylesheet_from_loopback() {
        let map = serve(loopback(), loopback()).expect("serve");
        let (status, head, body) = get(map.addr(), "/");
        assert_eq!(status, 200);
        assert!(head.to_lowercase().contains("content-type: text/html"), "{head}");
        assert!(head.contains("default-src 'self'"), "{head}");
        assert!(
            body.contains("traffic-map.js") && body.contains("traffic-map.css"),
            "{body}"
        );
        let (status, head, body) = get(map.addr(), "/traffic-map.js");
        assert_eq!(status, 200);
        assert!(head.to_lowercase().contains("content-type: text/javascript"), "{head}");
        assert!(
            body.contains("istio_requests_total"),
            "the script queries Istio's metrics"
        );
        assert_eq!(get(map.addr(), "/traffic-map.css").0, 200);
        assert_eq!(get(map.addr(), "/api/v1/admin/tsdb/snapshot").0, 404);
    }

    #[test]
    fn passes_instant_queries_on_to_prometheus_unchanged() {
        let (up, seen) = upstream();
        let map = serve(loopback(), up).expect("serve");
        let (status, _, body) = get(map.addr(), "/api/v1/query?query=sum%28up%29");
        assert_eq!(status, 200);
        assert!(body.contains("\"status\":\"success\""), "{body}");
        assert_eq!(
            seen.join().expect("upstream"),
            "GET /api/v1/query?query=sum%28up%29 HTTP/1.1"
        );
    }

    #[test]
    fn says_which_prometheus_failed_when_it_is_down() {
        // A port nothing listens on: bound, then closed.
        let closed = TcpListener::bind(loopback())
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let map = serve(loopback(), closed).expect("serve");
        let (status, _, body) = get(map.addr(), "/api/v1/query?query=up");
        assert_eq!(status, 502);
        assert!(body.contains(&closed.to_string()) && body.contains("connect"), "{body}");
    }

    #[test]
    fn refuses_to_listen_beyond_loopback() {
        let err = serve(SocketAddr::from(([0, 0, 0, 0], 0)), loopback())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("loopback only"), "{err}");
    }
}
