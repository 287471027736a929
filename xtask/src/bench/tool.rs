//! `xtask bench-tool`: the 1 kB HTTP server and the load generator the benchmarks start
//! inside pods. A separate process (the xtask binary itself), so it runs in the pod's
//! cgroup and netns, where capture applies.
//!
//! Why a generator of our own: the latency rows need an open loop at a fixed rate with
//! coordinated omission corrected (wrk2 does that but is not in Debian; oha is a crates.io
//! build of several minutes on 2 cores; h2load reports no percentiles; wrk is closed-loop).
//! Throughput (iperf3), TLS reference (stunnel) and L7 reference (HAProxy) use the real tools.
//!
//! Latency correction: a request's latency runs from its scheduled send time when the
//! previous response on its connection arrived after that time (the server held us back:
//! coordinated omission), otherwise from the moment it was actually sent (tokio's timer
//! wakes up to 1 ms late; that slack is ours, not the server's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Subcommand, Debug, Clone)]
pub enum ToolCmd {
    /// HTTP/1.1 server answering every request with `size` bytes (and `x-served-by: NAME`).
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value = "v1")]
        name: String,
        /// Answer with this file's content instead of `size` bytes (the Bookinfo lab's JWKS server).
        #[arg(long)]
        body_file: Option<std::path::PathBuf>,
    },
    /// Open loop: `rate` requests/s spread over `conns` keep-alive connections.
    Rate(RateArgs),
    /// Closed loop: as many requests as `conns` keep-alive connections carry.
    Max(LoadArgs),
    /// New connections per second: `--http` sends one request per connection
    /// (`Connection: close`), otherwise connect and reset.
    Connect(ConnectArgs),
    /// Opens `conns` keep-alive connections (one request each), prints `{"opened":N}`, holds them `secs`.
    Hold(LoadArgs),
    /// TCP echo server (the soak's raw connections).
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Many concurrent connections, each sending a known pattern and checking it comes back.
    Soak(super::soak::SoakArgs),
    /// Certificates per second: CSRs to the mesh CA (`--address`) or signed in process.
    Csr(super::ca::CsrArgs),
    /// One HTTP request after another until one is answered (a new pod's first connection).
    First(super::ca::FirstArgs),
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(long)]
    pub target: SocketAddr,
    /// Host header (the waypoint routes on it).
    #[arg(long, default_value = "bench")]
    pub host: String,
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Extra header `NAME:VALUE` on every `every`-th request (header-match routing).
    #[arg(long)]
    pub header: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub every: u64,
}

#[derive(Args, Debug, Clone)]
pub struct RateArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    #[arg(long)]
    pub rate: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value_t = 16)]
    pub conc: usize,
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    #[arg(long)]
    pub http: bool,
}

/// What `rate`, `max` and `connect` print (one JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub secs: f64,
    /// Completed per second (requests, or connections for `connect`).
    pub per_sec: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The first failure, for diagnosis.
    #[serde(default)]
    pub first_error: Option<String>,
}

pub fn run(cmd: ToolCmd) -> anyhow::Result<()> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let result = match cmd {
            ToolCmd::Serve {
                listen,
                size,
                name,
                body_file,
            } => {
                let body = match body_file {
                    Some(f) => Bytes::from(std::fs::read(&f).with_context(|| format!("read {}", f.display()))?),
                    None => Bytes::from(vec![b'x'; size]),
                };
                return serve(listen, body, name).await;
            }
            ToolCmd::Echo { listen } => {
                let listener = TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("bind {listen}"))?;
                return super::soak::echo(listener).await;
            }
            ToolCmd::Soak(a) => return super::soak::soak(a).await,
            ToolCmd::Hold(a) => return hold(a).await,
            ToolCmd::Rate(a) => open_loop(a).await?,
            ToolCmd::Max(a) => closed_loop(a).await?,
            ToolCmd::Connect(a) => connect_loop(a).await?,
            ToolCmd::Csr(a) => super::ca::csr_loop(a).await?,
            ToolCmd::First(a) => super::ca::first_answer(a).await?,
        };
        println!("{}", serde_json::to_string(&result)?);
        Ok(())
    })
}

/// 1,000 held connections (and their server side) need more than the default 1,024 fds.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Needs `want` open files (one per connection): raises the soft limit, and the hard
/// one when allowed; otherwise says what to change.
pub fn ensure_fd_limit(want: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let hard = lim.rlim_max;
    lim.rlim_cur = want.max(hard);
    lim.rlim_max = want.max(hard);
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        bail!(
            "{want} open files are needed for the connections, but the hard limit is {hard} and this process \
             may not raise it ({}): raise it for the caller (ulimit -Hn, systemd LimitNOFILE, the container's nofile)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

async fn serve(listen: SocketAddr, body: Bytes, name: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    serve_on(listener, body, name).await
}

/// Answers GET with `body`, and POST with the request's own body (the soak's HTTP connections).
pub(super) async fn serve_on(listener: TcpListener, body: Bytes, name: String) -> anyhow::Result<()> {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (body, name) = (body.clone(), name.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (body, name) = (body.clone(), name.clone());
                async move {
                    let body = match req.method() == http::Method::POST {
                        true => req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default(),
                        false => body,
                    };
                    let mut resp = http::Response::new(Full::new(body));
                    if let Ok(v) = http::HeaderValue::from_str(&name) {
                        resp.headers_mut().insert("x-served-by", v);
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect_http(target: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn request(a: &LoadArgs, n: u64) -> anyhow::Result<http::Request<Empty<Bytes>>> {
    let mut b = http::Request::get("/").header(http::header::HOST, &a.host);
    if let Some((k, v)) = a.header.as_deref().and_then(|h| h.split_once(':'))
        && a.every > 0
        && n.is_multiple_of(a.every)
    {
        b = b.header(k.trim(), v.trim());
    }
    Ok(b.body(Empty::new())?)
}

async fn exchange(sender: &mut Sender, req: http::Request<Empty<Bytes>>) -> anyhow::Result<()> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if !status.is_success() {
        bail!("answer {status}");
    }
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

pub(super) struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            hist: histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub(super) fn record(&mut self, d: Duration) {
        self.ok += 1;
        let _ = self.hist.record((d.as_micros() as u64).max(1));
    }

    pub(super) fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    pub(super) fn merge(&mut self, o: &Tally) {
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
        let _ = self.hist.add(&o.hist);
        self.ok += o.ok;
        self.errors += o.errors;
    }

    pub(super) fn result(&self, secs: f64) -> LoadResult {
        let q = |p: f64| self.hist.value_at_quantile(p) as f64;
        LoadResult {
            ok: self.ok,
            errors: self.errors,
            secs,
            per_sec: self.ok as f64 / secs.max(1e-9),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.hist.max() as f64,
            first_error: self.first_error.clone(),
        }
    }
}

async fn open_loop(a: RateArgs) -> anyhow::Result<LoadResult> {
    let conns = a.load.conns.max(1);
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect_http(a.load.target).await?);
    }
    let load = Arc::new(a.load.clone());
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(a.load.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut sender) in senders.into_iter().enumerate() {
        let (load, rate) = (load.clone(), a.rate);
        tasks.spawn(async move {
            let mut tally = Tally::new();
            let mut prev_done = start;
            for k in 0u64.. {
                let n = k * conns as u64 + i as u64;
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                let from = if prev_done > due { due } else { sent };
                let Ok(req) = request(&load, n) else { break };
                match exchange(&mut sender, req).await {
                    Ok(()) => tally.record(tokio::time::Instant::now() - from),
                    Err(e) => {
                        tally.error(&e);
                        match connect_http(load.target).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
                prev_done = tokio::time::Instant::now();
            }
            tally
        });
    }
    let mut all = Tally::new();
    while let Some(t) = tasks.join_next().await {
        all.merge(&t?);
    }
    Ok(all.result(a.load.secs))
}

async fn closed_loop(a: LoadArgs) -> anyhow::Result<LoadResult> {
    let mut senders = Vec::with_capacity(a.conns);
    for _ in 0..a.conns.max(1) {
        senders.push(connect_http(a.target).await?);
    }
    let load = Arc::new(a.clone());
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut sender) in senders.into_iter().enumerate() {
        let load = load.clone();
        tasks.spawn(async move {
            let mut tally = Tally::new();
            let mut n = i as u64;
            while Instant::now() < end {
                let t = Instant::now();
                let Ok(req) = request(&load, n) else { break };
                match exchange(&mut sender, req).await {
                    Ok(()) => tally.record(t.elapsed()),
                    Err(e) => {
                        tally.error(&e);
                        match connect_http(load.target).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
                n += load.conns as u64;
            }
            tally
        });
    }
    let mut all = Tally::new();
    while let Some(t) = tasks.join_next().await {
        all.merge(&t?);
    }
    Ok(all.result(started.elapsed().as_secs_f64()))
}

pub(super) async fn one_connection(target: SocketAddr, http: bool) -> anyhow::Result<()> {
    let mut stream = match TcpStream::connect(target).await {
        Ok(s) => s,
        // The handshake completed and the listener already reset the connection before this
        // task looked at it (the capture bench's listener resets at once): set up all the same.
        Err(e)
            if !http
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if !http {
        // RST instead of FIN: no TIME_WAIT pile-up on the client's ephemeral ports.
        socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        return Ok(());
    }
    stream.set_nodelay(true)?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(2048);
    stream.read_to_end(&mut buf).await?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!("unexpected answer");
    }
    Ok(())
}

async fn connect_loop(a: ConnectArgs) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.conc.max(1) {
        let a = a.clone();
        tasks.spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < end {
                let t = Instant::now();
                match one_connection(a.target, a.http).await {
                    Ok(()) => tally.record(t.elapsed()),
                    Err(e) => {
                        tally.error(&e);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            tally
        });
    }
    let mut all = Tally::new();
    while let Some(t) = tasks.join_next().await {
        all.merge(&t?);
    }
    Ok(all.result(started.elapsed().as_secs_f64()))
}

async fn hold(a: LoadArgs) -> anyhow::Result<()> {
    use futures::StreamExt;
    ensure_fd_limit(a.conns as u64 + 64)?;
    // Opened 64 at a time: 10,000 one after the other would take most of the bench's time.
    let opened: Vec<Option<Sender>> = futures::stream::iter(0..a.conns)
        .map(|n| {
            let a = &a;
            async move {
                let opened = async {
                    let mut s = connect_http(a.target).await?;
                    exchange(&mut s, request(a, n as u64)?).await?;
                    anyhow::Ok(s)
                };
                tokio::time::timeout(Duration::from_secs(5), opened).await.ok()?.ok()
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let held: Vec<Sender> = opened.into_iter().flatten().collect();
    let errors = a.conns - held.len();
    println!("{}", serde_json::json!({"opened": held.len(), "errors": errors}));
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    drop(held);
    Ok(())
}
