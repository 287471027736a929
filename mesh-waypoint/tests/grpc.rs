//! gRPC through the waypoint: h2 downstream, h2 upstream chosen by the Service
//! port's `appProtocol: grpc`, response trailers carried end to end, and retries on
//! gRPC status codes.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_waypoint::{Options, Waypoint};
use support::{fresh_block, ip};

/// One data frame, then trailers: the shape of a unary gRPC response.
struct WithTrailers(Option<Bytes>, Option<HeaderMap>);

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.0.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.1.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// An h2-only backend: the first `fail_first` calls answer trailers-only
/// `grpc-status: 14` (UNAVAILABLE), later ones succeed with trailers `grpc-status: 0`.
async fn grpc_backend(addr: SocketAddr, fail_first: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = c.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let h2 = req.version() == http::Version::HTTP_2;
                        let te = req.headers().get("te").is_some_and(|v| v == "trailers");
                        let mut resp = if n < fail_first {
                            let mut r = Response::new(WithTrailers(None, None));
                            r.headers_mut().insert("grpc-status", "14".parse().expect("v"));
                            r
                        } else {
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().expect("v"));
                            trailers.insert("grpc-message", format!("h2={h2} te={te}").parse().expect("v"));
                            Response::new(WithTrailers(Some(Bytes::from_static(b"\0\0\0\0\0")), Some(trailers)))
                        };
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().expect("v"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, calls)
}

async fn call(waypoint: SocketAddr) -> (Response<()>, http_body_util::Collected<Bytes>) {
    let stream = tokio::net::TcpStream::connect(waypoint).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::post("http://greeter:9090/helloworld.Greeter/SayHello")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("request");
    let resp = sender.send_request(req).await.expect("answer");
    let (parts, body) = resp.into_parts();
    (Response::from_parts(parts, ()), body.collect().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2_with_trailers_and_retry_on_unavailable() {
    let block = fresh_block();
    let (backend, calls) = grpc_backend(SocketAddr::new(ip(block, 2), 0), 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: greeter, namespace: bookinfo}}\nspec: {{selector: {{app: greeter}}, ports: [{{name: rpc, appProtocol: grpc, port: 9090, targetPort: {}}}]}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: greeter-1, namespace: bookinfo, labels: {{app: greeter}}}}\nstatus: {{podIP: {}}}\n---\n\
         apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: greeter, namespace: bookinfo}}\nspec:\n  hosts: [greeter]\n  http:\n  - retries: {{attempts: 2, retryOn: unavailable, backoff: 1ms}}\n    route: [{{destination: {{host: greeter}}}}]\n",
        backend.port(),
        backend.ip()
    );
    std::fs::write(dir.path().join("greeter.yaml"), yaml).expect("write");
    let mut opts = Options::new("127.0.0.1:0".parse().expect("addr"), "bookinfo");
    opts.config_dir = Some(dir.path().to_path_buf());
    let wp = Waypoint::start(opts).await.expect("start");
    assert!(wp.config.load().rejected.is_empty());

    let (resp, body) = call(wp.addr).await;
    assert_eq!(resp.status(), 200);
    let trailers = body.trailers().cloned().expect("trailers reached the client");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"h2=true te=true"[..]),
        "upstream was h2 and kept te: trailers"
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2, "UNAVAILABLE was retried once");
}
