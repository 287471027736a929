//! The seam between capture and the data path behind it.
//!
//! Capture owns the per-pod listeners (15001, 15006, 15008) and recovers the original
//! destination; whatever happens to a connection after that is a [`ConnectionHandler`].
//! [`DirectHandler`] forwards plain TCP (allowed until the HBONE tunnel replaces it).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::client_ip::{ClientIp, Registered};
use crate::hbone::relay::Copied;
use crate::netns::PodNetns;
use crate::state::Workload;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An enrolled pod as capture hands it over: the workload snapshot it was enrolled
/// with, and a socket factory inside its netns (for upstream sockets that must carry
/// the pod's IP as source, or for reaching the app over the pod's own address).
#[derive(Debug)]
pub struct CapturedPod {
    pub workload: Arc<Workload>,
    pub netns: PodNetns,
    /// Set when the pod's netns is prepared for connects from the client's address.
    pub client_ip: Option<Arc<ClientIp>>,
}

pub trait ConnectionHandler: Send + Sync + 'static {
    /// A captured outbound connection from `pod` to `orig_dst` (accepted on 15001).
    fn outbound(&self, pod: Arc<CapturedPod>, orig_dst: SocketAddrV4, stream: TcpStream) -> BoxFuture<'static, ()>;
    /// Plaintext arriving at `pod` for `orig_dst` from `peer`, steered to 15006.
    fn inbound_plaintext(
        &self,
        pod: Arc<CapturedPod>,
        orig_dst: SocketAddrV4,
        peer: SocketAddr,
        stream: TcpStream,
    ) -> BoxFuture<'static, ()>;
    /// A connection accepted on the pod's 15008 (HBONE; TLS not yet terminated).
    fn hbone(&self, pod: Arc<CapturedPod>, peer: SocketAddr, stream: TcpStream) -> BoxFuture<'static, ()>;
}

/// Relay buffer per direction; 64 KiB moved noticeably more than tokio's 8 KiB default.
const RELAY_BUF: usize = 64 * 1024;

/// Plain TCP forwarding: outbound straight to the original destination from the source
/// pod's netns, inbound plaintext to the app from the pod's own IP. No policy, no TLS.
#[derive(Debug, Default, Clone)]
pub struct DirectHandler;

impl ConnectionHandler for DirectHandler {
    fn outbound(&self, pod: Arc<CapturedPod>, orig_dst: SocketAddrV4, stream: TcpStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let key = pod.workload.key();
            match connect_from(&pod.netns, orig_dst).await {
                Ok(upstream) => drop(relay(stream, upstream, &key, orig_dst).await),
                Err(e) => reject(stream, &key, orig_dst, &e).await,
            }
        })
    }

    fn inbound_plaintext(
        &self,
        pod: Arc<CapturedPod>,
        orig_dst: SocketAddrV4,
        peer: SocketAddr,
        stream: TcpStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let key = pod.workload.key();
            if is_steering_loop(&pod, peer, orig_dst) {
                return;
            }
            match connect_from(&pod.netns, orig_dst).await {
                Ok(app) => drop(relay(stream, app, &key, orig_dst).await),
                Err(e) => reject(stream, &key, orig_dst, &e).await,
            }
        })
    }

    fn hbone(&self, pod: Arc<CapturedPod>, peer: SocketAddr, stream: TcpStream) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            tracing::debug!(pod = %pod.workload.key(), %peer, "HBONE not served by the direct handler; closing");
            drop(stream);
        })
    }
}

/// Loop guard: the pod's own app connections come from the pod IP and are never
/// steered (sk_lookup skips them); one that arrives anyway must not be forwarded back.
pub fn is_steering_loop(pod: &CapturedPod, peer: SocketAddr, orig_dst: SocketAddrV4) -> bool {
    let looped = peer.ip() == std::net::IpAddr::V4(pod.workload.ip);
    if looped {
        tracing::warn!(pod = %pod.workload.key(), %peer, %orig_dst, "inbound from the pod's own address refused (steering loop)");
    }
    looped
}

/// Connects to the pod's application at `app` (its own address) from `client`'s address
/// when the pod preserves client IPs and the address can stand in; otherwise from the
/// pod's own address. Keep the registration as long as the stream.
pub async fn connect_to_app(
    pod: &CapturedPod,
    client: IpAddr,
    app: SocketAddrV4,
) -> io::Result<(TcpStream, Option<Registered>)> {
    match (&pod.client_ip, client) {
        (Some(c), IpAddr::V4(ip)) if ClientIp::applies(ip, pod.workload.ip) => c.connect(&pod.netns, ip, app).await,
        _ => Ok((connect_from(&pod.netns, app).await?, None)),
    }
}

pub async fn connect_from(netns: &PodNetns, dst: SocketAddrV4) -> io::Result<TcpStream> {
    let sock = netns.tcp_socket().await?;
    let s = sock.connect(SocketAddr::V4(dst)).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Copies both ways until both sides are done; an EOF on one side becomes a write
/// shutdown on the other (half-close), as the client would see without the mesh.
/// `sent` is what the client (`down`) sent; a relay that ended in an error counts 0.
pub async fn relay(mut down: TcpStream, mut up: TcpStream, pod: &str, dst: SocketAddrV4) -> Copied {
    let _ = down.set_nodelay(true);
    match tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, RELAY_BUF, RELAY_BUF).await {
        Ok((sent, received)) => {
            tracing::debug!(%pod, %dst, sent, received, "connection closed");
            Copied { sent, received }
        }
        Err(e) => {
            tracing::debug!(%pod, %dst, "connection ended with error: {e}");
            Copied::default()
        }
    }
}

/// The upstream refused: reset the client so it sees a failure, not a clean EOF.
pub async fn reject(mut stream: TcpStream, pod: &str, dst: SocketAddrV4, e: &io::Error) {
    tracing::debug!(%pod, %dst, "upstream connect failed: {e}");
    // Linger 0 turns the close into a RST; closing a non-blocking socket never blocks.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO));
    let _ = stream.shutdown().await;
}
