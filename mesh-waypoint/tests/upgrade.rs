//! WebSocket-style upgrades pass through the waypoint: routed like any request,
//! then bytes flow both ways over the switched connection.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{Lab, NS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers an upgrade with 101, then echoes every byte back, prefixed by nothing.
async fn echo_upgrade_backend(addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let mut resp = Response::new(Empty::<Bytes>::new());
                    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    resp.headers_mut().insert("connection", "upgrade".parse().expect("v"));
                    resp.headers_mut().insert("upgrade", "websocket".parse().expect("v"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_passed_through() {
    let lab = Lab::bookinfo().await;
    let ws = echo_upgrade_backend(SocketAddr::new(lab.ip(60), 0)).await;
    lab.apply(
        "ws.yaml",
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: chat, namespace: {NS}}}\nspec: {{selector: {{app: chat}}, ports: [{{port: 8080, targetPort: {}}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: chat-1, namespace: {NS}, labels: {{app: chat}}}}\nstatus: {{podIP: {}}}\n",
            ws.port(),
            ws.ip()
        ),
    );
    let mut s = tokio::net::TcpStream::connect(lab.waypoint.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /socket HTTP/1.1\r\nHost: chat:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        let n = s.read(&mut byte).await.expect("read head");
        assert_eq!(
            n,
            1,
            "connection closed during the response head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"ping"[..], b"a longer frame of bytes"] {
        s.write_all(msg).await.expect("write");
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(back, msg);
    }
}
