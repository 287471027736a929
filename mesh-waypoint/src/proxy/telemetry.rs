//! One request's metrics observation: who called (the HBONE peer's identity, else the
//! pod behind the source address), which pod answered, for which Service.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Response;
use http::request::Parts;

use super::access_log::AccessLog;
use super::handler::Ctx;
use super::server::PeerIdentity;
use crate::body::Body;
use crate::config::snapshot::Snapshot;
use crate::metrics::{Observation, Peer, Protocol, RequestMetrics, Security, Series, ServiceLabels, Sizes};
use mesh_common::telemetry::Flag;
use thread_local::ThreadLocal;

/// Series looked up by what decides their labels (addresses, principal, Service,
/// code, flags) instead of by the ~20 labels themselves: a request whose series is
/// known costs one small hash and four increments, not two label sets built from the
/// cluster view and four lookups hashing every label. The labels depend on the
/// configuration, so a new snapshot empties it; it is also emptied when it holds
/// [`SeriesCache::MAX`] entries (clients from many addresses), which bounds its memory
/// without bounding the families (their cardinality is the labels', see `metrics`).
///
/// One cache per thread that serves requests (the runtime's workers): no lock, and
/// no cache line moving between the cores at every request, as one mutex for all did.
#[derive(Default)]
pub struct SeriesCache {
    per_thread: ThreadLocal<RefCell<Cached>>,
    hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Cached {
    generation: u64,
    len: usize,
    by_hash: HashMap<u64, Vec<(SeriesKey, Series)>>,
}

/// What decides one request's labels, owned (kept in the cache).
struct SeriesKey {
    source: IpAddr,
    principal: Option<Arc<str>>,
    endpoint: Option<IpAddr>,
    service: String,
    grpc: bool,
    code: u16,
    grpc_status: Option<String>,
    flags: Vec<Flag>,
}

/// The same, borrowed from the request (built for every lookup).
#[derive(Hash)]
struct KeyRef<'a> {
    source: IpAddr,
    principal: Option<&'a str>,
    endpoint: Option<IpAddr>,
    service: &'a str,
    grpc: bool,
    code: u16,
    grpc_status: Option<&'a str>,
    flags: &'a [Flag],
}

impl KeyRef<'_> {
    fn is(&self, k: &SeriesKey) -> bool {
        self.source == k.source
            && self.principal == k.principal.as_deref()
            && self.endpoint == k.endpoint
            && self.service == k.service
            && self.grpc == k.grpc
            && self.code == k.code
            && self.grpc_status == k.grpc_status.as_deref()
            && self.flags == k.flags.as_slice()
    }

    fn owned(&self, principal: Option<&Arc<str>>) -> SeriesKey {
        SeriesKey {
            source: self.source,
            principal: principal.cloned(),
            endpoint: self.endpoint,
            service: self.service.to_owned(),
            grpc: self.grpc,
            code: self.code,
            grpc_status: self.grpc_status.map(str::to_owned),
            flags: self.flags.to_vec(),
        }
    }
}

impl SeriesCache {
    pub const MAX: usize = 4096;

    /// Counts one answered request in its series (`metrics` must be recording).
    pub(super) fn record(&self, metrics: &RequestMetrics, a: &Answered<'_>) {
        let Answered {
            snap,
            parts,
            ctx,
            log,
            resp,
            started,
        } = *a;
        let identity = parts.extensions.get::<PeerIdentity>();
        let grpc = is_grpc(parts.headers.get(http::header::CONTENT_TYPE));
        let key = KeyRef {
            source: ctx.peer.ip(),
            principal: identity.map(|id| &*id.principal),
            endpoint: log.endpoint_ip,
            service: log.service_host.as_deref().unwrap_or(&ctx.host_fqdn),
            grpc,
            code: resp.status().as_u16(),
            grpc_status: grpc_status(grpc, resp),
            flags: &log.flags,
        };
        let sizes = Sizes {
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            request_bytes: log.request_bytes,
            response_bytes: body_size(resp.body()),
        };
        let hash = self.hasher.hash_one(&key);
        let mut cached = self.per_thread.get_or_default().borrow_mut();
        if cached.generation != snap.generation || cached.len >= Self::MAX {
            *cached = Cached {
                generation: snap.generation,
                ..Cached::default()
            };
        }
        let bucket = cached.by_hash.entry(hash).or_default();
        if let Some((_, series)) = bucket.iter().find(|(k, _)| key.is(k)) {
            return series.observe(&sizes);
        }
        let series = metrics.series(observe(a));
        series.observe(&sizes);
        bucket.push((key.owned(identity.map(|id| &id.principal)), series));
        cached.len += 1;
    }
}

fn grpc_status(grpc: bool, resp: &Response<Body>) -> Option<&str> {
    if !grpc {
        return None;
    }
    resp.headers().get("grpc-status").and_then(|v| v.to_str().ok())
}

/// One answered request, as its telemetry sees it.
#[derive(Clone, Copy)]
pub(super) struct Answered<'a> {
    pub snap: &'a Snapshot,
    pub parts: &'a Parts,
    pub ctx: &'a Ctx,
    pub log: &'a AccessLog,
    pub resp: &'a Response<Body>,
    pub started: Instant,
}

pub(super) fn observe(a: &Answered<'_>) -> Observation {
    let Answered {
        snap,
        parts,
        ctx,
        log,
        resp,
        started,
    } = *a;
    let identity = parts.extensions.get::<PeerIdentity>();
    let mut source = snap
        .discovery
        .pods_by_ip
        .get(&ctx.peer.ip())
        .map(Peer::of_workload)
        .unwrap_or_else(Peer::unknown);
    // Istio reports a principal only when mutual TLS proved it.
    source.principal = match identity {
        Some(id) => format!("spiffe://{}", id.principal),
        None => "unknown".into(),
    };
    let destination = log
        .endpoint_ip
        .and_then(|ip| snap.discovery.pods_by_ip.get(&ip))
        .map(Peer::of_workload)
        .unwrap_or_else(Peer::unknown);
    let grpc = is_grpc(parts.headers.get(http::header::CONTENT_TYPE));
    Observation {
        source,
        destination,
        service: service_labels(snap, log.service_host.as_deref().unwrap_or(&ctx.host_fqdn)),
        protocol: if grpc { Protocol::grpc } else { Protocol::http },
        code: resp.status().as_u16(),
        grpc_status: grpc_status(grpc, resp).map(str::to_owned),
        flags: log.flags_text(),
        security: if identity.is_some() {
            Security::mutual_tls
        } else {
            Security::none
        },
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        request_bytes: log.request_bytes,
        response_bytes: body_size(resp.body()),
    }
}

fn is_grpc(content_type: Option<&http::HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// `destination_service`, `_name`, `_namespace`; a host that is no Service of the
/// configuration keeps its name and gets `unknown` for the other two.
fn service_labels(snap: &Snapshot, fqdn: &str) -> ServiceLabels {
    match snap.service(fqdn) {
        Some(svc) => ServiceLabels {
            host: fqdn.to_owned(),
            name: fqdn.split('.').next().unwrap_or(fqdn).to_owned(),
            namespace: svc.namespace.clone(),
        },
        None => ServiceLabels {
            host: fqdn.to_owned(),
            ..ServiceLabels::unknown()
        },
    }
}

/// The response body's size when known up front (buffered and local replies); a
/// streamed body counts its lower bound.
pub(super) fn body_size(body: &Body) -> u64 {
    let hint = hyper::body::Body::size_hint(body);
    hint.exact().unwrap_or(hint.lower())
}

/// The span's closing tags: the same facts as the access log line, plus the peers' identities.
pub(super) fn finished<'a>(
    snap: &Snapshot,
    x: &'a super::access_log::Exchange<'a>,
    ctx: &Ctx,
    log: &'a AccessLog,
) -> crate::trace::Finished<'a> {
    let destination = log.endpoint_ip.and_then(|ip| snap.discovery.pods_by_ip.get(&ip));
    crate::trace::Finished {
        method: x.method.as_str(),
        url: format!("{}://{}{}", ctx.scheme, ctx.authority, x.path),
        protocol: x.version,
        status: x.status,
        route: log.route.as_deref(),
        upstream_cluster: log.backend.as_deref(),
        upstream_address: log.endpoint.as_deref(),
        flags: log.flags_text(),
        request_id: x.request_id,
        request_size: log.request_bytes,
        response_size: x.response_bytes,
        source_principal: x.peer_principal.map(|p| format!("spiffe://{p}")),
        destination_principal: destination.map(|p| Peer::of_workload(p).principal),
    }
}
