//! Byte relay between a TCP socket and an HTTP/2 stream, honouring half-close in both
//! directions: TCP EOF becomes END_STREAM, END_STREAM becomes a TCP write shutdown.

use std::future::poll_fn;
use std::io;

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{FIRST_READ_CHUNK, READ_CHUNK};

/// Bytes moved: `sent` from TCP into the tunnel, `received` from the tunnel into TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub sent: u64,
    pub received: u64,
}

/// Relays until both directions finish. An error on one side resets the stream so
/// the peer stops too; the counts cover what was moved before the error.
pub async fn relay(mut tcp: TcpStream, mut send: SendStream<Bytes>, recv: RecvStream) -> (Copied, Option<io::Error>) {
    let _ = tcp.set_nodelay(true);
    let (rd, wr) = tcp.split();
    let mut sent = 0u64;
    let mut received = 0u64;
    let up = async {
        let r = tcp_to_h2(rd, &mut send, &mut sent).await;
        if r.is_err() {
            send.send_reset(h2::Reason::CANCEL);
        }
        r
    };
    let down = h2_to_tcp(recv, wr, &mut received);
    let (a, b) = tokio::join!(up, down);
    (Copied { sent, received }, a.err().or(b.err()))
}

async fn tcp_to_h2<R: AsyncRead + Unpin>(mut rd: R, send: &mut SendStream<Bytes>, total: &mut u64) -> io::Result<()> {
    let mut chunk = FIRST_READ_CHUNK;
    let mut buf = BytesMut::with_capacity(chunk);
    loop {
        buf.reserve(chunk);
        let n = rd.read_buf(&mut buf).await?;
        if n == 0 {
            return send.send_data(Bytes::new(), true).map_err(h2_io);
        }
        if n >= chunk && chunk < READ_CHUNK {
            chunk *= 2;
        }
        // split+freeze hands the bytes to h2 without a copy.
        let mut data = buf.split().freeze();
        *total += data.len() as u64;
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = poll_fn(|cx| send.poll_capacity(cx))
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "tunnel stream closed"))?
                .map_err(h2_io)?;
            let piece = data.split_to(granted.min(data.len()));
            send.send_data(piece, false).map_err(h2_io)?;
        }
    }
}

async fn h2_to_tcp<W: AsyncWrite + Unpin>(mut recv: RecvStream, mut wr: W, total: &mut u64) -> io::Result<()> {
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(h2_io)?;
        wr.write_all(&chunk).await?;
        *total += chunk.len() as u64;
        // Window credit only once the bytes left us, so a slow reader slows the sender.
        recv.flow_control().release_capacity(chunk.len()).map_err(h2_io)?;
    }
    wr.shutdown().await
}

pub fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e.into_io().unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    io::Error::other(e)
}
