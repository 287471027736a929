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
use crate::config::hosts::split_authority;
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
        return Outcome::Local(match redirect_authority(authority) {
            Some(a) => https_redirect(parts, &a),
            None => local_reply::reply(
                StatusCode::BAD_REQUEST,
                Flag::NoRoute,
                "Host is not a host name or IP with an optional port",
            ),
        });
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

/// The authority a redirect may point at: the request's host (DNS characters, or an
/// IP) and its port unless it is plain HTTP's default (Envoy's `https_redirect` does the
/// same). `None` for anything else: the Host is written into `Location`, and
/// `shop.example.com:x@evil.test` (whose host part matches a server) would send the
/// client to evil.test.
fn redirect_authority(authority: &str) -> Option<String> {
    let (host, port) = split_authority(authority);
    let bracketed = authority.starts_with('[');
    let host_ok = if bracketed {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let host = if bracketed {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    // What split_authority did not take as host and port must not exist.
    let exact = match port {
        Some(p) => authority == format!("{host}:{p}"),
        None => authority == host,
    };
    (host_ok && exact).then(|| match port {
        Some(p) if p != 80 => format!("{host}:{p}"),
        _ => host,
    })
}

/// 301 to `authority` (see [`redirect_authority`]) and the same path over https.
fn https_redirect(parts: &Parts, authority: &str) -> Response<Body> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(&format!("https://{authority}{pq}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/fuzz_targets/gateway_host.rs: the Host went into `Location` as
    /// written, so a Host whose host part matched a server could redirect anywhere.
    #[test]
    fn redirects_name_only_the_host_and_a_valid_port() {
        assert_eq!(
            redirect_authority("shop.example.com").as_deref(),
            Some("shop.example.com")
        );
        assert_eq!(
            redirect_authority("shop.example.com:80").as_deref(),
            Some("shop.example.com")
        );
        assert_eq!(
            redirect_authority("shop.example.com:8080").as_deref(),
            Some("shop.example.com:8080")
        );
        assert_eq!(redirect_authority("[fd00::1]:8080").as_deref(), Some("[fd00::1]:8080"));
        assert_eq!(redirect_authority("198.18.0.1").as_deref(), Some("198.18.0.1"));
        for bad in [
            "shop.example.com:x@evil.test",
            "shop.example.com:84\tl",
            "shop.example.com/evil",
            "shop.example.com:99999",
            "[::1",
            "",
            "a b",
        ] {
            assert_eq!(redirect_authority(bad), None, "{bad:?}");
        }
    }
}
