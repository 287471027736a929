//! Which VirtualService serves a request at the ingress gateway, as Istio decides
//! it: the request's listener port selects the servers of that port; the Host must
//! match one of their `hosts`; then, among the VirtualServices bound to those
//! servers' Gateways (and admitted by the host entry's namespace part), the one
//! whose host matches most specifically. No match is a 404, never a fallback to a
//! Service (the gateway is not a sidecar for the host it is asked for).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::plan::{Plan, ServerPlan};
use super::server_host::request_host;
use crate::body::{self, Body};
use crate::config::Snapshot;
use crate::proxy::local_reply::{self, Flag};
use crate::route::RouteTable;

/// How a request reached the gateway; the listener puts it in the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downstream {
    pub port: u16,
    pub tls: bool,
}

pub enum Outcome {
    /// Route with `table`; `gateways` (normalized) are what `match.gateways` sees.
    Route {
        table: Arc<RouteTable>,
        gateways: Vec<String>,
    },
    /// Answered here: 404 (no server or VirtualService) or 301 (`httpsRedirect`).
    Local(Response<Body>),
}

pub fn decide(snap: &Snapshot, plan: &Plan, parts: &Parts, authority: &str, down: Downstream) -> Outcome {
    let host = request_host(authority);
    let Some(port) = plan.ports.get(&down.port) else {
        return not_found(format!("no route: no Gateway server is on port {}", down.port));
    };
    let servers: Vec<&ServerPlan> = port
        .servers
        .iter()
        .filter(|s| s.hosts.iter().any(|h| h.pattern.matches(&host)))
        .collect();
    let Some(first) = servers.first() else {
        return not_found(format!(
            "no route: host `{host}` matches no server host of the Gateways on port {}",
            down.port
        ));
    };
    if first.https_redirect && !down.tls {
        return Outcome::Local(https_redirect(parts, authority));
    }
    let mut gateways: Vec<String> = servers.iter().map(|s| s.gateway.clone()).collect();
    gateways.sort();
    gateways.dedup();
    let admitted = |t: &RouteTable| {
        servers.iter().any(|s| {
            t.serves_any(std::slice::from_ref(&s.gateway))
                && s.hosts
                    .iter()
                    .any(|h| h.pattern.matches(&host) && h.admits(&t.namespace))
        })
    };
    let best = snap
        .tables
        .iter()
        .filter(|t| admitted(t))
        .filter_map(|t| {
            t.hosts
                .iter()
                .filter(|h| h.matches(&host))
                .map(|h| h.specificity())
                .max()
                .map(|s| (s, t))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.object.cmp(&a.1.object)));
    match best {
        Some((_, table)) => Outcome::Route {
            table: table.clone(),
            gateways,
        },
        None => not_found(format!(
            "no route: no VirtualService bound to {} serves host `{host}` on port {}",
            gateways.join(", "),
            down.port
        )),
    }
}

fn not_found(reason: String) -> Outcome {
    Outcome::Local(local_reply::reply(StatusCode::NOT_FOUND, Flag::NoRoute, &reason))
}

/// 301 to the same authority and path over https. The port stays unless it is
/// plain HTTP's default (Envoy's `https_redirect` does the same).
fn https_redirect(parts: &Parts, authority: &str) -> Response<Body> {
    let authority = authority.strip_suffix(":80").unwrap_or(authority);
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&format!("https://{authority}{pq}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
