//! One request through the three layers: route (VirtualService) → backend
//! (Service + DestinationRule subset) → endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use rand::Rng;

use super::access_log::{AccessLog, Exchange};
use super::admission;
use super::attempt::{self, AttemptInputs};
use super::local_reply::{self, Flag};
use super::upstream_request;
use crate::body::{self, Body};
use crate::config::Config;
use crate::config::hosts::split_authority;
use crate::config::snapshot::Snapshot;
use crate::endpoint::balancer::{HashOn, LbPolicy};
use crate::gateway::{self, routing::Downstream};
use crate::route::cors::CorsDecision;
use crate::route::matching::query_value;
use crate::route::{
    Action, DestinationRef, HttpRoute, RequestInfo, Selected, Source, WeightedDestination, mirror, split,
};

/// Request bodies are buffered so attempts and mirrors can resend them.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub struct Proxy {
    pub config: Arc<Config>,
    /// Gateways this proxy serves (normalized); `mesh` for a waypoint.
    pub gateways: Vec<String>,
    /// Istio's request metrics, one observation per answered request.
    pub metrics: Arc<crate::metrics::RequestMetrics>,
    pub access_log: super::access_log::AccessLogFormat,
    /// `--otlp-endpoint`: a span per request; `None` creates nothing.
    pub tracer: Option<Arc<crate::trace::RequestTracer>>,
    /// The metric series of recent label sets (see [`super::telemetry::SeriesCache`]).
    pub series: super::telemetry::SeriesCache,
    /// Header read and TLS handshake timeouts of downstream connections.
    pub limits: super::server::HttpLimits,
}

/// What routing needs to know about the request, computed once.
pub(super) struct Ctx {
    pub(super) authority: String,
    pub(super) host_fqdn: String,
    pub(super) port: u16,
    pub(super) scheme: String,
    source: Source,
    pub(super) peer: SocketAddr,
}

impl Proxy {
    pub async fn handle<B>(self: Arc<Self>, mut req: Request<B>, peer: SocketAddr, local: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let start_time = std::time::SystemTime::now();
        let snap = self.config.load();
        let downstream_upgrade = upstream_request::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let mut log = AccessLog::default();
        let ctx = context(&snap, &parts, peer, local);
        if let Some(t) = &self.tracer {
            log.span = Some(t.begin(&parts.headers, || span_name(&ctx), start_time));
        }
        let origin = admission::Origin {
            host_fqdn: &ctx.host_fqdn,
            authority: &ctx.authority,
            peer,
            local,
        };
        let resp = match admission::admit(&self.config, &snap, &mut parts, &origin, &mut log).await {
            Err(refused) => refused,
            Ok(_admitted) => match Limited::new(body, MAX_BODY).collect().await {
                Ok(collected) => {
                    let body = collected.to_bytes();
                    log.request_bytes = body.len() as u64;
                    self.route(&snap, &parts, body, &ctx, &mut log).await
                }
                Err(e) => local_reply::reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Flag::NoRoute,
                    &format!("cannot buffer request body: {e}"),
                ),
            },
        };
        let exchange = Exchange {
            method: &parts.method,
            authority: &ctx.authority,
            path: parts.uri.path(),
            version: parts.version,
            request_id: parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            peer_principal: parts
                .extensions
                .get::<super::server::PeerIdentity>()
                .map(|p| &*p.principal),
            status: resp.status().as_u16(),
            response_bytes: super::telemetry::body_size(resp.body()),
            started,
            start_time,
        };
        log.emit(self.access_log, &exchange);
        if let Some(span) = log.span.take() {
            span.finish(|| super::telemetry::finished(&snap, &exchange, &ctx, &log));
        }
        if self.metrics.is_recording() {
            let answered = super::telemetry::Answered {
                snap: &snap,
                parts: &parts,
                ctx: &ctx,
                log: &log,
                resp: &resp,
                started,
            };
            self.series.record(&self.metrics, &answered);
        }
        match downstream_upgrade {
            Some(down) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => splice_upgrade(down, resp),
            _ => resp,
        }
    }

    async fn route(
        &self,
        snap: &Arc<Snapshot>,
        parts: &Parts,
        body: Bytes,
        ctx: &Ctx,
        log: &mut AccessLog,
    ) -> Response<Body> {
        // Ingress gateway mode: the Gateway's servers decide the VirtualService (404 otherwise).
        let (gateway_table, gateway_names);
        let (table, gateways) = match snap.gateway.as_deref() {
            Some(plan) => {
                let down = parts.extensions.get::<Downstream>().copied().unwrap_or(Downstream {
                    port: ctx.port,
                    tls: false,
                });
                match gateway::routing::decide(snap, plan, parts, &ctx.authority, down) {
                    gateway::routing::Outcome::Route { table, gateways } => {
                        (gateway_table, gateway_names) = (table, gateways);
                        (Some(&gateway_table), gateway_names.as_slice())
                    }
                    gateway::routing::Outcome::Local(resp) => {
                        if resp.status() == StatusCode::NOT_FOUND {
                            log.flag(Flag::NoRoute);
                        }
                        return resp;
                    }
                }
            }
            None => (snap.table_for(&ctx.host_fqdn, &self.gateways), self.gateways.as_slice()),
        };
        let info = RequestInfo {
            method: &parts.method,
            scheme: &ctx.scheme,
            authority: &ctx.authority,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            port: ctx.port,
            source: &ctx.source,
            gateways,
        };
        let default_route;
        let selected = match table {
            Some(table) => match table.select(&info) {
                Some(s) => s,
                None => {
                    log.flag(Flag::NoRoute);
                    return local_reply::reply(
                        StatusCode::NOT_FOUND,
                        Flag::NoRoute,
                        &format!("no route: no http route of {} matches the request", table.object),
                    );
                }
            },
            None if snap.service(&ctx.host_fqdn).is_some() => {
                default_route = service_route(&ctx.host_fqdn);
                Selected {
                    object: &DEFAULT_OBJECT,
                    route: &default_route,
                    matched: None,
                }
            }
            None => {
                log.flag(Flag::NoRoute);
                let reason = format!(
                    "no route: host `{}` is not a known Service and no VirtualService matches it",
                    ctx.host_fqdn
                );
                return local_reply::reply(StatusCode::SERVICE_UNAVAILABLE, Flag::NoRoute, &reason);
            }
        };
        log.route = Some(selected.route.name.clone());
        let mut resp = self.apply(snap, parts, body, ctx, &selected, log).await;
        local_reply::add_flags(&mut resp, &log.flags);
        resp
    }

    async fn apply(
        &self,
        snap: &Arc<Snapshot>,
        parts: &Parts,
        body: Bytes,
        ctx: &Ctx,
        sel: &Selected<'_>,
        log: &mut AccessLog,
    ) -> Response<Body> {
        let route = sel.route;
        let cors = route.cors.as_ref().map(|c| c.decide(&parts.method, &parts.headers));
        let cors_headers = match cors {
            Some(CorsDecision::Respond(h)) => return with_headers(Response::new(body::empty()), h),
            Some(CorsDecision::ForwardAndDecorate(h)) => Some(h),
            _ => None,
        };
        let dests = match &route.action {
            Action::Redirect(r) => {
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let host = split_authority(&ctx.authority).0;
                let location = r.location(&ctx.scheme, host, ctx.port, pq);
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = r.code;
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return resp;
            }
            Action::Direct(d) => {
                let mut resp = Response::new(body::full(d.body.clone()));
                *resp.status_mut() = d.status;
                return resp;
            }
            Action::Forward(dests) => dests,
        };
        let Some(dest) = dests.pick().cloned() else {
            return local_reply::reply(
                StatusCode::SERVICE_UNAVAILABLE,
                Flag::NoRoute,
                "route has no destination",
            );
        };
        let mut resp = self.forward(snap, parts, body, ctx, sel, &dest, log).await;
        dest.headers.response.apply(resp.headers_mut());
        route.headers.response.apply(resp.headers_mut());
        if let Some(h) = cors_headers {
            resp = with_headers(resp, h);
        }
        resp
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        snap: &Arc<Snapshot>,
        parts: &Parts,
        body: Bytes,
        ctx: &Ctx,
        sel: &Selected<'_>,
        dest: &WeightedDestination,
        log: &mut AccessLog,
    ) -> Response<Body> {
        let route = sel.route;
        let backend = match snap.backend(&dest.destination, ctx.port) {
            Ok(b) => b,
            Err(e) => {
                log.flag(Flag::NoHealthy);
                return local_reply::reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Flag::NoHealthy,
                    &format!("no healthy upstream: {e}"),
                );
            }
        };
        log.backend = Some(backend.key.to_string());
        log.service_host = Some(backend.key.host.clone());
        let (path, authority) = rewritten(parts, ctx, sel);
        let mut req = match upstream_request::build(
            parts,
            &path,
            &authority,
            body,
            &[&route.headers.request, &dest.headers.request],
        ) {
            Ok(r) => r,
            Err(e) => {
                return local_reply::reply(
                    StatusCode::BAD_REQUEST,
                    Flag::NoRoute,
                    &format!("cannot build upstream request: {e}"),
                );
            }
        };
        if let Some(span) = &log.span {
            span.inject(req.headers_mut());
        }
        self.mirror(snap, route, &req, ctx.port);
        let (hash_key, set_cookie) = hash_key(&backend.policy.lb, parts, ctx);
        let inputs = AttemptInputs {
            hash_key: hash_key.as_deref(),
            original_dst: ctx.authority.parse().ok(),
        };
        let attempts = attempt::run(&backend, route, &req, &inputs, log);
        let mut resp = match route.timeout {
            None => attempts.await,
            Some(t) => match tokio::time::timeout(t, attempts).await {
                Ok(r) => r,
                Err(_) => {
                    log.flag(Flag::Timeout);
                    local_reply::reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        Flag::Timeout,
                        &format!("upstream request timeout: route timeout {t:?} reached"),
                    )
                }
            },
        };
        if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        resp
    }

    /// Fire-and-forget copies; their responses are discarded.
    fn mirror(&self, snap: &Arc<Snapshot>, route: &HttpRoute, req: &Request<http_body_util::Full<Bytes>>, port: u16) {
        for m in &route.mirrors {
            if !m.percentage.roll(&mut rand::thread_rng()) {
                continue;
            }
            let Ok(backend) = snap.backend(&m.destination, port) else {
                continue;
            };
            let mut copy = crate::backend::clone_request(req);
            let shadow = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(mirror::shadow_authority);
            if let Some(v) = shadow.and_then(|s| HeaderValue::from_str(&s).ok()) {
                copy.headers_mut().insert(header::HOST, v);
            }
            tokio::spawn(async move {
                let cx = crate::endpoint::balancer::PickContext {
                    hash_key: None,
                    original_dst: None,
                    avoid: &[],
                };
                if let Ok(ep) = backend.pick(&cx)
                    && let Ok(resp) = backend.call(&ep, copy).await
                {
                    let _ = resp.into_body().collect().await;
                }
            });
        }
    }
}

/// Upgrade accepted upstream (101): once both sides have switched, bytes flow both
/// ways until either closes. The routing decision was made on the upgrade request.
fn splice_upgrade(down: hyper::upgrade::OnUpgrade, mut resp: Response<Body>) -> Response<Body> {
    let up = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (down, up) = match (down.await, up.await) {
            (Ok(d), Ok(u)) => (d, u),
            (d, u) => {
                tracing::debug!(down_ok = d.is_ok(), up_ok = u.is_ok(), "upgrade did not complete");
                return;
            }
        };
        let (mut down, mut up) = (hyper_util::rt::TokioIo::new(down), hyper_util::rt::TokioIo::new(up));
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!("upgraded stream ended: {e}");
        }
    });
    resp
}

static DEFAULT_OBJECT: std::sync::LazyLock<mesh_common::model::ObjectRef> =
    std::sync::LazyLock::new(|| mesh_common::model::ObjectRef::new("Service", None, "default-route"));

/// No VirtualService for a known Service: send to the Service itself, as Istio does.
fn service_route(fqdn: &str) -> HttpRoute {
    HttpRoute {
        name: format!("default/{fqdn}"),
        matches: Vec::new(),
        action: Action::Forward(split::Split::new(vec![WeightedDestination {
            destination: DestinationRef {
                host: fqdn.to_owned(),
                subset: None,
                port: None,
            },
            weight: 100,
            headers: Default::default(),
        }])),
        rewrite: None,
        timeout: None,
        retries: Default::default(),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
        headers: Default::default(),
    }
}

fn context(snap: &Snapshot, parts: &Parts, peer: SocketAddr, local: SocketAddr) -> Ctx {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let (host, port) = split_authority(&authority);
    let source = snap.source(peer.ip());
    // A stream to a Service VIP (HBONE `:authority`) is for that Service whatever its
    // Host says, as in Istio's waypoints: the ingress gateway keeps the user's Host.
    let host_fqdn = match snap.discovery.by_cluster_ip.get(&local.ip()) {
        Some(fqdn) => fqdn.clone(),
        None => snap.request_host(host),
    };
    Ctx {
        host_fqdn,
        port: port.unwrap_or(local.port()),
        scheme: parts
            .uri
            .scheme_str()
            .unwrap_or(if parts.extensions.get::<Downstream>().is_some_and(|d| d.tls) {
                "https"
            } else {
                "http"
            })
            .to_owned(),
        authority,
        source,
        peer,
    }
}

/// Envoy's operation name for a route without a decorator: `<host>:<port>/*`.
fn span_name(ctx: &Ctx) -> String {
    format!("{}:{}/*", ctx.host_fqdn, ctx.port)
}

fn rewritten(parts: &Parts, ctx: &Ctx, sel: &Selected<'_>) -> (String, String) {
    let path = parts.uri.path();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    match &sel.route.rewrite {
        None => (format!("{path}{query}"), ctx.authority.clone()),
        Some(rw) => {
            let m = sel.matched;
            let new_path = rw.path(
                path,
                m.and_then(|m| m.uri.as_ref()),
                m.is_some_and(|m| m.ignore_uri_case),
            );
            (
                format!("{new_path}{query}"),
                rw.authority.clone().unwrap_or_else(|| ctx.authority.clone()),
            )
        }
    }
}

/// The consistent-hash key, and a `Set-Cookie` when a cookie with a TTL must be minted.
fn hash_key(lb: &LbPolicy, parts: &Parts, ctx: &Ctx) -> (Option<String>, Option<String>) {
    let LbPolicy::ConsistentHash(on, _) = lb else {
        return (None, None);
    };
    match on {
        HashOn::Header(name) => (
            parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned),
            None,
        ),
        HashOn::SourceIp => (Some(ctx.peer.ip().to_string()), None),
        HashOn::QueryParameter(q) => (query_value(parts.uri.query(), q), None),
        HashOn::Cookie { name, path, ttl } => match cookie(&parts.headers, name) {
            Some(v) => (Some(v), None),
            None => match ttl {
                Some(ttl) => {
                    let value = format!("{:016x}", rand::thread_rng().r#gen::<u64>());
                    let path = path.as_deref().map(|p| format!("; Path={p}")).unwrap_or_default();
                    let set = format!("{name}={value}; Max-Age={}{path}; HttpOnly", ttl.as_secs());
                    (Some(value), Some(set))
                }
                None => (None, None),
            },
        },
    }
}

fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

fn with_headers(mut resp: Response<Body>, h: http::HeaderMap) -> Response<Body> {
    for (k, v) in h.iter() {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}
