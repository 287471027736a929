//! A minimal HTTP/1.0 GET from inside a node's netns, for readiness, admin and
//! metrics endpoints that listen on the node's own loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::harness::{Cluster, HarnessError};

#[derive(Clone, Debug)]
pub struct HttpReply {
    pub status: u16,
    pub body: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// GET `path` from `addr` with a socket created in `node`'s netns.
pub fn http_get(cluster: &Cluster, node: &str, addr: &str, path: &str) -> Result<HttpReply, HarnessError> {
    let addr: SocketAddr = addr.parse().map_err(|e| HarnessError::sys("parsing address", std::io::Error::other(format!("{addr}: {e}"))))?;
    let stream = cluster.in_node(node, || TcpStream::connect_timeout(&addr, TIMEOUT))?;
    let stream = stream.map_err(|e| HarnessError::sys(&format!("connecting to {addr} in node {node}"), e))?;
    exchange(stream, addr, path).map_err(|e| HarnessError::sys(&format!("GET http://{addr}{path} in node {node}"), e))
}

fn exchange(mut stream: TcpStream, addr: SocketAddr, path: &str) -> std::io::Result<HttpReply> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {:?}", head.lines().next())))?;
    Ok(HttpReply { status, body: body.to_owned() })
}
