//! `bench-tool soak` and `bench-tool echo`: many concurrent connections, each moving a
//! known byte pattern both ways and checked byte for byte (the soak e2e test and the
//! 10,000-connection resources row).
//!
//! Phases: every connection opens and completes one small round trip (so the whole path,
//! tunnel included, exists for all of them at once), the tool prints
//! `{"held":N,...}` and, with `--wait-stdin`, waits for a line on stdin (the caller
//! samples memory meanwhile); then every connection sends its pattern and checks what
//! comes back, and the tool prints the [`SoakResult`] line.
//! Raw connections go to an echo server (`bench-tool echo`); HTTP ones POST the pattern
//! to `bench-tool serve`, which answers a POST with its body (through a waypoint, whose
//! HBONE streams carry HTTP only).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of the first round trip that proves a connection's path.
const FIRST: usize = 64;
/// Connects in flight at once (the rest wait their turn).
const OPENING: usize = 256;

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Echo server for raw connections.
    #[arg(long)]
    pub raw: Option<SocketAddr>,
    #[arg(long, default_value_t = 0)]
    pub raw_conns: usize,
    /// HTTP server (POST answered with its body) for HTTP connections.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    #[arg(long, default_value_t = 0)]
    pub http_conns: usize,
    /// Host header of the HTTP connections (the waypoint routes on it).
    #[arg(long, default_value = "bench")]
    pub host: String,
    /// Pattern bytes each connection sends (and gets back).
    #[arg(long, default_value_t = 4096)]
    pub bytes: usize,
    /// After every connection is open, wait for a line on stdin before transferring.
    #[arg(long)]
    pub wait_stdin: bool,
}

/// The held line: every connection open at once (or failed to open).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Held {
    pub held: usize,
    pub failed: usize,
    pub open_secs: f64,
    pub first_error: Option<String>,
}

/// The last line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakResult {
    pub conns: usize,
    pub held: usize,
    /// Connections whose pattern came back whole and unaltered.
    pub verified: usize,
    pub failed: usize,
    /// Pattern bytes sent, and received back equal, over all connections.
    pub bytes_sent: u64,
    pub bytes_verified: u64,
    pub secs: f64,
    pub first_error: Option<String>,
}

/// The byte at `offset` of connection `seed`'s pattern (any offset, no state).
pub fn pattern_byte(seed: u64, offset: u64) -> u8 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset / 8).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    x.to_le_bytes()[(offset % 8) as usize]
}

pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|k| pattern_byte(seed, offset + k)).collect()
}

/// `bench-tool echo`: writes back whatever each connection sends, until it closes.
pub async fn echo(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// One connection, open and proven by its first round trip.
enum Conn {
    Raw(TcpStream),
    Http(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
}

#[derive(Default)]
struct Tally {
    held: AtomicUsize,
    verified: AtomicUsize,
    bytes_sent: AtomicU64,
    bytes_verified: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: &anyhow::Error) {
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| format!("{e:#}"));
    }
}

pub async fn soak(a: SoakArgs) -> anyhow::Result<()> {
    let conns = a.raw_conns + a.http_conns;
    super::tool::ensure_fd_limit(conns as u64 + 64)?;
    let targets: Vec<(bool, SocketAddr)> = (0..conns)
        .map(|i| match i < a.raw_conns {
            true => a.raw.map(|t| (false, t)).context("--raw-conns needs --raw"),
            false => a.http.map(|t| (true, t)).context("--http-conns needs --http"),
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let opening = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let opened = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let go = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let a = Arc::new(a);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (http, target)) in targets.into_iter().enumerate() {
        let (a, tally, opening, opened, go) = (a.clone(), tally.clone(), opening.clone(), opened.clone(), go.clone());
        tasks.spawn(async move {
            let seed = i as u64 + 1;
            let permit = opening.acquire_owned().await;
            let conn = tokio::time::timeout(Duration::from_secs(60), open(http, target, &a.host, seed)).await;
            drop(permit);
            let conn = match conn {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tally.error(&e.context(format!("open {i} to {target}")));
                    None
                }
                Err(_) => {
                    tally.error(&anyhow::anyhow!("open {i} to {target}: no round trip within 60 s"));
                    None
                }
            };
            if conn.is_some() {
                tally.held.fetch_add(1, Ordering::Relaxed);
            }
            // Every connection waits here, so all of them are open at the same time.
            opened.wait().await;
            go.wait().await;
            let Some(conn) = conn else { return };
            match tokio::time::timeout(Duration::from_secs(120), transfer(conn, &a, seed)).await {
                Ok(Ok(())) => {
                    tally.verified.fetch_add(1, Ordering::Relaxed);
                    tally.bytes_verified.fetch_add(a.bytes as u64, Ordering::Relaxed);
                }
                Ok(Err(e)) => tally.error(&e.context(format!("connection {i} to {target}"))),
                Err(_) => tally.error(&anyhow::anyhow!("connection {i} to {target}: transfer over 120 s")),
            }
            tally.bytes_sent.fetch_add(a.bytes as u64, Ordering::Relaxed);
        });
    }
    opened.wait().await;
    let held = tally.held.load(Ordering::Relaxed);
    let first_error = tally.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let line = Held {
        held,
        failed: conns - held,
        open_secs: started.elapsed().as_secs_f64(),
        first_error,
    };
    println!("{}", serde_json::to_string(&line)?);
    if a.wait_stdin {
        let mut line = String::new();
        tokio::io::BufReader::new(tokio::io::stdin())
            .read_line(&mut line)
            .await?;
    }
    go.wait().await;
    while let Some(t) = tasks.join_next().await {
        t?;
    }
    let verified = tally.verified.load(Ordering::Relaxed);
    let result = SoakResult {
        conns,
        held,
        verified,
        failed: conns - verified,
        bytes_sent: tally.bytes_sent.load(Ordering::Relaxed),
        bytes_verified: tally.bytes_verified.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        first_error: tally.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Connects and does the first round trip: the first bytes echoed (raw), or a POST of
/// them answered with them (HTTP).
async fn open(http: bool, target: SocketAddr, host: &str, seed: u64) -> anyhow::Result<Conn> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    if http {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        post_echo(&mut sender, host, pattern(seed, 0, FIRST)).await?;
        return Ok(Conn::Http(sender));
    }
    let mut stream = stream;
    let first = pattern(seed, 0, FIRST);
    stream.write_all(&first).await?;
    let mut back = vec![0u8; FIRST];
    stream.read_exact(&mut back).await?;
    if back != first {
        bail!("the first {FIRST} bytes came back altered");
    }
    Ok(Conn::Raw(stream))
}

async fn transfer(conn: Conn, a: &SoakArgs, seed: u64) -> anyhow::Result<()> {
    match conn {
        Conn::Http(mut sender) => post_echo(&mut sender, &a.host, pattern(seed, FIRST as u64, a.bytes)).await,
        Conn::Raw(stream) => raw_echo(stream, seed, a.bytes).await,
    }
}

/// POSTs `body` and checks the answer is the same bytes.
async fn post_echo(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    sender.ready().await?;
    let req = http::Request::post("/echo")
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::from(body.clone())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let got = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("answer {status}");
    }
    if got != body {
        bail!("{} bytes sent, {} came back, altered or cut", body.len(), got.len());
    }
    Ok(())
}

/// Sends `len` pattern bytes after the first ones, half-closes, and checks that exactly
/// those bytes come back before EOF.
async fn raw_echo(stream: TcpStream, seed: u64, len: usize) -> anyhow::Result<()> {
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        let mut sent = 0;
        while sent < len {
            let n = (len - sent).min(16 << 10);
            w.write_all(&pattern(seed, (FIRST + sent) as u64, n)).await?;
            sent += n;
        }
        w.shutdown().await?;
        anyhow::Ok(())
    };
    let reader = async move {
        let mut got = 0usize;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if got + n > len || buf[..n] != pattern(seed, (FIRST + got) as u64, n)[..] {
                bail!("bytes {got}..{} came back altered", got + n);
            }
            got += n;
        }
        if got != len {
            bail!("{len} bytes sent, {got} came back");
        }
        anyhow::Ok(())
    };
    let (w, r) = tokio::join!(writer, reader);
    w.and(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_the_same_from_any_offset_and_differs_per_connection() {
        let whole = pattern(7, 0, 100);
        assert_eq!(pattern(7, 37, 20), whole[37..57]);
        assert_ne!(pattern(8, 0, 100), whole);
        assert!(whole.iter().any(|b| *b != whole[0]), "not constant");
    }

    #[tokio::test]
    async fn raw_and_http_connections_verify_through_the_echo_servers() {
        let raw = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let raw_addr = raw.local_addr().expect("addr");
        tokio::spawn(echo(raw));
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http_addr = http.local_addr().expect("addr");
        tokio::spawn(super::super::tool::serve_on(http, Bytes::from_static(b"x"), "t".into()));
        let args = SoakArgs {
            raw: Some(raw_addr),
            raw_conns: 1,
            http: Some(http_addr),
            http_conns: 1,
            host: "bench".into(),
            bytes: 100_000,
            wait_stdin: false,
        };
        let r = open(false, raw_addr, "bench", 3).await.expect("raw open");
        let h = open(true, http_addr, "bench", 4).await.expect("http open");
        transfer(r, &args, 3).await.expect("raw verified");
        transfer(h, &args, 4).await.expect("http verified");
        // A server that alters the bytes is caught.
        let liar = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let liar_addr = liar.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = liar.accept().await {
                let mut buf = vec![0u8; FIRST];
                let _ = s.read_exact(&mut buf).await;
                let _ = s.write_all(&buf).await;
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"not the pattern").await;
            }
        });
        let r = open(false, liar_addr, "bench", 5).await.expect("open");
        assert!(transfer(r, &args, 5).await.is_err(), "altered bytes must fail");
    }
}
