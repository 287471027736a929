//! One request's metrics observation: who called (the HBONE peer's identity, else the
//! pod behind the source address), which pod answered, for which Service.

use std::time::Instant;

use http::Response;
use http::request::Parts;

use super::access_log::AccessLog;
use super::handler::Ctx;
use super::server::PeerIdentity;
use crate::body::Body;
use crate::config::snapshot::Snapshot;
use crate::metrics::{Observation, Peer, Protocol, Security, ServiceLabels};

pub(super) fn observe(
    snap: &Snapshot,
    parts: &Parts,
    ctx: &Ctx,
    log: &AccessLog,
    resp: &Response<Body>,
    started: Instant,
) -> Observation {
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
        grpc_status: grpc
            .then(|| {
                resp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .flatten(),
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
