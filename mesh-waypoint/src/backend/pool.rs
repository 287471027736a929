//! Connection pool and circuit breaker of one backend (`connectionPool`).
//!
//! HTTP/1.1 carries one request per connection at a time, so `maxConnections`
//! bounds concurrent upstream requests; a request that finds every connection busy
//! waits as *pending*, and when `http1MaxPendingRequests` are already waiting it is
//! refused at once (503, reason `pending requests overflow`). `http2MaxRequests`
//! bounds requests in flight whatever the protocol. Idle connections are reused up to
//! `maxRequestsPerConnection` and dropped after `idleTimeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::PoolLimits;
use crate::endpoint::connector::Connector;

/// Why the pool could not provide a connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("circuit breaker open: {0}")]
    Overflow(&'static str),
    #[error("upstream connect error: {0}")]
    Connect(std::io::Error),
    #[error("upstream connect timeout after {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("upstream HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
}

pub struct Conn {
    pub sender: http1::SendRequest<Full<Bytes>>,
    permit: OwnedSemaphorePermit,
    uses: u64,
    /// Taken from the idle list (a failure may be a stale connection, not the endpoint).
    pub reused: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

pub struct Pool {
    limits: PoolLimits,
    permits: Arc<Semaphore>,
    pending: AtomicUsize,
    active: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// One multiplexed h2 connection per endpoint (its permit lives in its driver task).
    h2: tokio::sync::Mutex<HashMap<SocketAddr, http2::SendRequest<Full<Bytes>>>>,
    connector: Arc<dyn Connector>,
}

/// Decrements a counter when dropped.
pub struct CountGuard(Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn try_count(counter: &Arc<AtomicUsize>, max: usize) -> Option<CountGuard> {
    let prev = counter.fetch_add(1, Ordering::Relaxed);
    let guard = CountGuard(counter.clone());
    (prev < max).then_some(guard)
}

impl Pool {
    pub fn new(limits: PoolLimits, connector: Arc<dyn Connector>) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
        Self {
            limits,
            permits,
            pending: AtomicUsize::new(0),
            active: Arc::new(AtomicUsize::new(0)),
            retries: Arc::new(AtomicUsize::new(0)),
            idle: Mutex::new(HashMap::new()),
            h2: tokio::sync::Mutex::new(HashMap::new()),
            connector,
        }
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Requests waiting for a connection (for tests and the config dump).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Admits one request (`http2MaxRequests`).
    pub fn begin_request(&self) -> Result<CountGuard, PoolError> {
        try_count(&self.active, self.limits.max_requests)
            .ok_or(PoolError::Overflow("max requests (http2MaxRequests) reached"))
    }

    /// Admits one retry (`maxRetries` concurrent retries across the backend).
    pub fn begin_retry(&self) -> Option<CountGuard> {
        try_count(&self.retries, self.limits.max_retries)
    }

    pub async fn acquire(self: &Arc<Self>, addr: SocketAddr) -> Result<Conn, PoolError> {
        if let Some(conn) = self.take_idle(addr) {
            return Ok(conn);
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match self.steal_idle_permit() {
                Some(p) => p,
                None => self.wait_as_pending().await?,
            },
        };
        self.connect(addr, permit).await
    }

    /// Opens a fresh connection, bypassing the idle list (after a stale reuse).
    pub async fn fresh(self: &Arc<Self>, addr: SocketAddr, old: Conn) -> Result<Conn, PoolError> {
        self.connect(addr, old.permit).await
    }

    async fn wait_as_pending(&self) -> Result<OwnedSemaphorePermit, PoolError> {
        let prev = self.pending.fetch_add(1, Ordering::Relaxed);
        let _pending = PendingGuard(&self.pending);
        if prev >= self.limits.max_pending {
            return Err(PoolError::Overflow(
                "pending requests overflow (maxConnections and http1MaxPendingRequests reached)",
            ));
        }
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Overflow("pool closed"))
    }

    async fn connect(&self, addr: SocketAddr, permit: OwnedSemaphorePermit) -> Result<Conn, PoolError> {
        let timeout = self.limits.connect_timeout;
        let io = match tokio::time::timeout(timeout, self.connector.connect(addr)).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(PoolError::Connect(e)),
            Err(_) => return Err(PoolError::ConnectTimeout(timeout)),
        };
        let (sender, connection) = http1::handshake(TokioIo::new(io)).await.map_err(PoolError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%addr, "upstream connection ended: {e}");
            }
        });
        Ok(Conn {
            sender,
            permit,
            uses: 0,
            reused: false,
        })
    }

    /// The shared h2 connection to `addr`, opened on first use or after it closed.
    /// Concurrency on it is bounded by `http2MaxRequests` (see [`Pool::begin_request`]).
    pub async fn h2(&self, addr: SocketAddr) -> Result<http2::SendRequest<Full<Bytes>>, PoolError> {
        let mut conns = self.h2.lock().await;
        if let Some(s) = conns.get(&addr).filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => return Err(PoolError::Overflow("max connections (maxConnections) reached")),
        };
        let timeout = self.limits.connect_timeout;
        let io = match tokio::time::timeout(timeout, self.connector.connect(addr)).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(PoolError::Connect(e)),
            Err(_) => return Err(PoolError::ConnectTimeout(timeout)),
        };
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(PoolError::Handshake)?;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!(%addr, "upstream h2 connection ended: {e}");
            }
        });
        conns.insert(addr, sender.clone());
        Ok(sender)
    }

    /// An opaque TCP stream to `addr` for `tcp` routes, holding one connection permit
    /// (`maxConnections`) for its lifetime; at the limit the connection is refused.
    pub async fn connect_stream(
        &self,
        addr: SocketAddr,
    ) -> Result<(Box<dyn crate::endpoint::connector::Io>, OwnedSemaphorePermit), PoolError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => match self.steal_idle_permit() {
                Some(p) => p,
                None => return Err(PoolError::Overflow("max connections (maxConnections) reached")),
            },
        };
        let timeout = self.limits.connect_timeout;
        match tokio::time::timeout(timeout, self.connector.connect(addr)).await {
            Ok(Ok(io)) => Ok((io, permit)),
            Ok(Err(e)) => Err(PoolError::Connect(e)),
            Err(_) => Err(PoolError::ConnectTimeout(timeout)),
        }
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some(Idle { mut conn, since }) = list.pop() {
            if since.elapsed() < self.limits.idle_timeout && !conn.sender.is_closed() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// At the connection limit, an idle connection to another endpoint gives way.
    fn steal_idle_permit(&self) -> Option<OwnedSemaphorePermit> {
        let mut idle = self.idle.lock().ok()?;
        idle.values_mut().find_map(|l| l.pop()).map(|i| i.conn.permit)
    }

    /// Called once a request has been sent and its response head received: the
    /// connection goes back to the idle list when the response body is done.
    pub fn release(self: &Arc<Self>, addr: SocketAddr, mut conn: Conn) {
        conn.uses += 1;
        if self
            .limits
            .max_requests_per_connection
            .is_some_and(|max| conn.uses >= max)
        {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if conn.sender.ready().await.is_err() {
                return;
            }
            // Waiters need the permit more than we need a warm connection.
            if pool.pending.load(Ordering::Relaxed) > 0 {
                return;
            }
            if let Ok(mut idle) = pool.idle.lock() {
                conn.reused = false;
                idle.entry(addr).or_default().push(Idle {
                    conn,
                    since: Instant::now(),
                });
            }
        });
    }
}

struct PendingGuard<'a>(&'a AtomicUsize);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
