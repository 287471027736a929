//! The attempt loop. Each attempt: injected delay, injected abort, endpoint pick,
//! upstream call under the per-try timeout. Retries follow the route's policy and
//! the backend's `maxRetries` budget. The caller wraps the whole loop in the route
//! timeout, so delays and retries together never exceed it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use super::access_log::AccessLog;
use super::local_reply::{self, Flag};
use crate::backend::outlier::Observation;
use crate::backend::pool::PoolError;
use crate::backend::{Backend, CallError, clone_request};
use crate::body::{self, Body};
use crate::endpoint::balancer::PickContext;
use crate::route::HttpRoute;
use crate::route::fault::AbortWith;
use crate::route::retry::AttemptResult;

pub struct AttemptInputs<'a> {
    pub hash_key: Option<&'a str>,
    pub original_dst: Option<SocketAddr>,
}

pub async fn run(
    backend: &Arc<Backend>,
    route: &HttpRoute,
    req: &Request<Full<Bytes>>,
    inputs: &AttemptInputs<'_>,
    log: &mut AccessLog,
) -> Response<Body> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut _retry_budget = None;
    let mut attempt = 0u32;
    loop {
        log.attempts = attempt + 1;
        let (result, resp) = one(backend, route, req, inputs, &mut tried, log).await;
        if !route.retries.should_retry(attempt, result) {
            return resp;
        }
        match backend.pool.begin_retry() {
            Some(g) => _retry_budget = Some(g),
            None => {
                log.flag(Flag::RetryOverflow);
                return resp;
            }
        }
        drop(resp);
        if let Some(span) = log.span.as_mut() {
            span.retry(attempt + 1, result, log.endpoint.as_deref());
        }
        let wait = route.retries.backoff_for(attempt, &mut rand::thread_rng());
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

async fn one(
    backend: &Arc<Backend>,
    route: &HttpRoute,
    req: &Request<Full<Bytes>>,
    inputs: &AttemptInputs<'_>,
    tried: &mut Vec<SocketAddr>,
    log: &mut AccessLog,
) -> (AttemptResult, Response<Body>) {
    if let Some(fault) = &route.fault {
        let delay = fault.roll_delay(&mut rand::thread_rng());
        if let Some(d) = delay {
            log.flag(Flag::DelayInjected);
            tokio::time::sleep(d).await;
        }
        let abort = fault.roll_abort(&mut rand::thread_rng()).cloned();
        if let Some(a) = abort {
            log.flag(Flag::FaultInjected);
            return abort_reply(&a);
        }
    }
    let avoid: &[SocketAddr] = if route.retries.ignore_previous_hosts {
        tried
    } else {
        &[]
    };
    let cx = PickContext {
        hash_key: inputs.hash_key,
        original_dst: inputs.original_dst,
        avoid,
    };
    let ep = match backend.pick(&cx) {
        Ok(ep) => ep,
        Err(e) => {
            log.flag(Flag::NoHealthy);
            return (
                AttemptResult::Local,
                local_reply::reply(StatusCode::SERVICE_UNAVAILABLE, Flag::NoHealthy, &e.to_string()),
            );
        }
    };
    tried.push(ep.addr);
    log.endpoint = Some(ep.addr.to_string());
    log.endpoint_ip = Some(ep.addr.ip());
    let call = backend.call(&ep, clone_request(req));
    let outcome = match route.retries.per_try_timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r,
            Err(_) => {
                backend.observe(&ep, Observation::LocalFailure);
                log.flag(Flag::Timeout);
                let reason = format!("upstream per-try timeout after {t:?} at {}", ep.addr);
                return (
                    AttemptResult::Timeout,
                    local_reply::reply(StatusCode::GATEWAY_TIMEOUT, Flag::Timeout, &reason),
                );
            }
        },
        None => call.await,
    };
    match outcome {
        Ok(resp) => (result_of(&resp), resp),
        Err(e) => failure_reply(e, &ep.addr, log),
    }
}

fn result_of(resp: &Response<Body>) -> AttemptResult {
    let grpc = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match grpc {
        Some(code) if code != 0 && resp.status() == StatusCode::OK => AttemptResult::Grpc(code),
        _ => AttemptResult::Status(resp.status().as_u16()),
    }
}

fn failure_reply(e: CallError, addr: &SocketAddr, log: &mut AccessLog) -> (AttemptResult, Response<Body>) {
    let (result, status, flag) = match &e {
        CallError::Pool(PoolError::Overflow(_)) => {
            (AttemptResult::Local, StatusCode::SERVICE_UNAVAILABLE, Flag::Overflow)
        }
        CallError::NoHealthy(_) => (AttemptResult::Local, StatusCode::SERVICE_UNAVAILABLE, Flag::NoHealthy),
        CallError::Reset(_) => (AttemptResult::Reset, StatusCode::SERVICE_UNAVAILABLE, Flag::Reset),
        _ => (
            AttemptResult::ConnectFailure,
            StatusCode::SERVICE_UNAVAILABLE,
            Flag::ConnectFailure,
        ),
    };
    log.flag(flag);
    let reason = match &e {
        CallError::Pool(PoolError::Overflow(_)) => e.to_string(),
        _ => format!("{e} ({addr})"),
    };
    (result, local_reply::reply(status, flag, &reason))
}

fn abort_reply(a: &AbortWith) -> (AttemptResult, Response<Body>) {
    match a {
        AbortWith::Http(status) => (
            AttemptResult::Status(status.as_u16()),
            local_reply::reply(*status, Flag::FaultInjected, "fault filter abort"),
        ),
        AbortWith::Grpc(code) => {
            let mut resp = Response::new(body::empty());
            resp.headers_mut()
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            resp.headers_mut().insert("grpc-status", HeaderValue::from(*code));
            resp.headers_mut().insert(
                local_reply::REASON_HEADER,
                HeaderValue::from_static("fault filter abort"),
            );
            resp.headers_mut()
                .insert(local_reply::FLAGS_HEADER, HeaderValue::from_static("FI"));
            (AttemptResult::Grpc(*code), resp)
        }
    }
}
