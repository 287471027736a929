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
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| HarnessError::sys("parsing address", std::io::Error::other(format!("{addr}: {e}"))))?;
    let stream = cluster.in_node(node, || TcpStream::connect_timeout(&addr, TIMEOUT))?;
    let stream = stream.map_err(|e| HarnessError::sys(format!("connecting to {addr} in node {node}"), e))?;
    exchange(stream, addr, path, &[], TIMEOUT)
        .map_err(|e| HarnessError::sys(format!("GET http://{addr}{path} in node {node}"), e))
}

/// GET `path` from `addr` with a socket created in pod `ns/pod`'s netns (a thread in
/// the netns, not a process in the pod's cgroup: the pod's capture does not see it),
/// with extra request headers (`Host` among them replaces the default `addr`).
pub fn http_get_from_pod(
    cluster: &Cluster,
    (ns, pod): (&str, &str),
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpReply, HarnessError> {
    let stream = cluster.connect_from_pod(ns, pod, addr, timeout)?;
    exchange(stream, addr, path, headers, timeout)
        .map_err(|e| HarnessError::sys(format!("GET http://{addr}{path} from pod {ns}/{pod}"), e))
}

/// GET `path` from `addr` with a socket of this process: what an in-pod helper (a
/// process [`run_helper_in_pod`] started in the pod's cgroup, so capture applies) does.
pub fn http_get_here(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<HttpReply> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    exchange(stream, addr, path, &[], timeout)
}

/// Runs the calling test binary's ignored test `helper` inside pod `ns/pod` (its
/// cgroup and netns) with `env`, and returns the line it printed after `RESULT `.
pub fn run_helper_in_pod(cluster: &Cluster, (ns, pod): (&str, &str), env: &[(&str, String)]) -> String {
    let mut cmd = crate::harness::test_helper("helper");
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = cluster.run_in_pod(ns, pod, cmd).expect("run helper in pod");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("helper in {ns}/{pod} printed no result: {stdout}"))
}

fn exchange(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> std::io::Result<HttpReply> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("GET {path} HTTP/1.0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {:?}", head.lines().next())))?;
    Ok(HttpReply {
        status,
        body: body.to_owned(),
    })
}
