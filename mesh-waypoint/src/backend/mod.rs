//! Backend layer: a Service port, optionally narrowed to a DestinationRule subset,
//! with its effective traffic policy, endpoints, connection pool (circuit breaker)
//! and outlier detection. The route layer hands it a request; it picks an endpoint
//! and sends the request there.

pub mod outlier;
pub mod policy;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};

use self::outlier::Observation;
use self::policy::Policy;
use self::pool::{Pool, PoolError};
use crate::body::{self, Body};
use crate::discovery::UpstreamProtocol;
use crate::endpoint::Endpoint;
use crate::endpoint::balancer::{Balancer, PickContext};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct BackendKey {
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
}

impl std::fmt::Display for BackendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.subset {
            Some(s) => write!(f, "{}:{}/{}", self.host, self.port, s),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

pub struct Backend {
    pub key: BackendKey,
    pub protocol: UpstreamProtocol,
    pub policy: Policy,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub pool: Arc<Pool>,
    balancer: Balancer,
}

/// Why a call produced no upstream response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("no healthy upstream for {0}")]
    NoHealthy(String),
    #[error("upstream reset: {0}")]
    Reset(hyper::Error),
}

impl CallError {
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            CallError::Pool(PoolError::Connect(_) | PoolError::ConnectTimeout(_) | PoolError::Handshake(_))
        )
    }
}

impl Backend {
    /// `previous`: this backend in the last snapshot, whose consistent-hash table is
    /// kept when neither the algorithm nor the endpoints changed.
    pub fn new(
        key: BackendKey,
        policy: Policy,
        endpoints: Vec<Arc<Endpoint>>,
        pool: Arc<Pool>,
        previous: Option<&Backend>,
    ) -> Self {
        Self {
            key,
            protocol: UpstreamProtocol::Http1,
            balancer: Balancer::new(&policy.lb, &endpoints, previous.map(|p| &p.balancer)),
            policy,
            endpoints,
            pool,
        }
    }

    pub fn with_protocol(mut self, protocol: UpstreamProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Endpoints not currently ejected by outlier detection.
    pub fn healthy(&self, now: Instant) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .iter()
            .filter(|e| e.outlier.lock().is_ok_and(|mut s| s.usable(now)))
            .cloned()
            .collect()
    }

    pub fn pick(&self, cx: &PickContext<'_>) -> Result<Arc<Endpoint>, CallError> {
        let healthy = self.healthy(Instant::now());
        self.balancer
            .pick(&self.policy.lb, &healthy, cx)
            .ok_or_else(|| CallError::NoHealthy(self.key.to_string()))
    }

    /// Sends `req` to `ep`. The returned body keeps the request counted as active
    /// (for LEAST_REQUEST and `http2MaxRequests`) until it is fully sent.
    pub async fn call(&self, ep: &Arc<Endpoint>, req: Request<Full<Bytes>>) -> Result<Response<Body>, CallError> {
        let admitted = self.pool.begin_request()?;
        ep.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ep_guard = EndpointActive(ep.clone());
        let result = self.send(ep.addr, req).await;
        match &result {
            Ok(resp) => self.observe(ep, Observation::Status(resp.status().as_u16())),
            Err(CallError::Pool(PoolError::Overflow(_))) => {}
            Err(_) => self.observe(ep, Observation::LocalFailure),
        }
        result.map(|resp| resp.map(|b| body::guarded(b.map_err(Into::into).boxed(), (admitted, ep_guard))))
    }

    async fn send(
        &self,
        addr: SocketAddr,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, CallError> {
        if self.protocol == UpstreamProtocol::Http2 {
            let mut sender = self.pool.h2(addr).await?;
            return sender.send_request(as_h2(req)).await.map_err(CallError::Reset);
        }
        let mut conn = self.pool.acquire(addr).await?;
        if conn.reused {
            // A pooled connection the server already closed fails before the request
            // is written; that says nothing about the endpoint, so try a fresh one.
            let retry_copy = clone_request(&req);
            match conn.sender.send_request(req).await {
                Ok(resp) => {
                    self.pool.release(addr, conn);
                    return Ok(resp);
                }
                Err(e) if e.is_canceled() || e.is_closed() || conn.sender.is_closed() => {
                    conn = self.pool.fresh(addr, conn).await?;
                    return self.finish(addr, conn, retry_copy).await;
                }
                Err(e) => return Err(CallError::Reset(e)),
            }
        }
        self.finish(addr, conn, req).await
    }

    async fn finish(
        &self,
        addr: SocketAddr,
        mut conn: pool::Conn,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, CallError> {
        let resp = conn.sender.send_request(req).await.map_err(CallError::Reset)?;
        self.pool.release(addr, conn);
        Ok(resp)
    }

    pub fn observe(&self, ep: &Endpoint, obs: Observation) {
        if let Some(policy) = &self.policy.outlier {
            outlier::observe(&self.endpoints, ep, policy, obs, Instant::now());
        }
    }
}

/// h2 carries the authority in `:authority`, taken from an absolute URI.
fn as_h2(mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_owned));
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if let Some(uri) = authority.and_then(|a| format!("http://{a}{pq}").parse().ok()) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
    req
}

pub fn clone_request(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut out = Request::new(req.body().clone());
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = req.uri().clone();
    *out.version_mut() = req.version();
    *out.headers_mut() = req.headers().clone();
    out
}

struct EndpointActive(Arc<Endpoint>);

impl Drop for EndpointActive {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
