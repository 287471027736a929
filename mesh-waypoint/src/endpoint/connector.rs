//! How the waypoint reaches an endpoint. Today: plain TCP to `podIP:targetPort`.
//! The HBONE upstream (HTTP/2 CONNECT over mTLS to the pod's 15008) will be another
//! [`Connector`]; nothing else in the request path changes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to an endpoint.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send + 'a>>;

pub trait Connector: Send + Sync + 'static {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PlainTcp;

impl Connector for PlainTcp {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }
}
