//! Downstream calls: one HTTP/1.1 request per connection (the mesh pools underneath),
//! with Bookinfo's header propagation and a timeout per attempt.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Propagated;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub served_by: String,
    pub body: serde_json::Value,
}

#[derive(Debug)]
pub enum CallError {
    Timeout,
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "timed out"),
            CallError::Failed(e) => write!(f, "{e}"),
        }
    }
}

pub async fn get(
    name: &str,
    addr: SocketAddr,
    path: &str,
    headers: &Propagated,
    timeout: Duration,
) -> Result<Reply, CallError> {
    match tokio::time::timeout(timeout, get_once(name, addr, path, headers)).await {
        Ok(r) => r.map_err(CallError::Failed),
        Err(_) => Err(CallError::Timeout),
    }
}

async fn get_once(name: &str, addr: SocketAddr, path: &str, headers: &Propagated) -> Result<Reply, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {name} ({addr}): {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, format!("{name}:{}", addr.port()));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("{name}: {e}"))?;
    let status = resp.status().as_u16();
    let served_by = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    // Error pages from the mesh (fault aborts, 503s) are not JSON: keep them as text.
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Reply {
        status,
        served_by,
        body,
    })
}
