//! What a policy is evaluated against. The node daemon knows only the connection
//! ([`Request::http`] is `None`); the waypoint and gateway add the HTTP request.

use std::net::IpAddr;

/// One connection (L4) or one request (L7) arriving at a workload, waypoint or gateway.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The peer's SPIFFE id without `spiffe://` (`cluster.local/ns/x/sa/y`); `None` for plaintext.
    pub source_principal: Option<&'a str>,
    /// The peer's address (`source.ip`, `ipBlocks`).
    pub source_ip: Option<IpAddr>,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// HTTP attributes; `None` where only L4 is visible (the node daemon).
    pub http: Option<&'a HttpAttributes<'a>>,
}

/// The L7 part of a request.
#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    /// `:authority` / `Host`, possibly with a port.
    pub host: &'a str,
    pub method: &'a str,
    /// The request path; a query string, if present, is ignored for `paths`.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The original client (`remote.ip`, `remoteIpBlocks`); defaults to the source IP when unknown.
    pub remote_ip: Option<IpAddr>,
    /// `connection.sni`: the TLS server name the downstream connection asked for.
    pub sni: Option<&'a str>,
    /// The verified JWT (RequestAuthentication); `None` without a token.
    pub auth: Option<&'a AuthAttributes>,
}

/// Attributes of a verified JWT.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthAttributes {
    /// `iss/sub`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The token's payload (a JSON object).
    pub claims: serde_json::Value,
}

impl AuthAttributes {
    /// The claim at `path` (nested objects one segment each) as strings: a string or
    /// scalar is one value, a list gives each of its scalar elements.
    pub fn claim(&self, path: &[String]) -> Vec<String> {
        let mut at = &self.claims;
        for segment in path {
            match at.get(segment) {
                Some(v) => at = v,
                None => return Vec::new(),
            }
        }
        match at {
            serde_json::Value::Array(items) => items.iter().filter_map(scalar).collect(),
            v => scalar(v).into_iter().collect(),
        }
    }
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The namespace in a principal `<trust-domain>/ns/<ns>/sa/<sa>`.
pub fn principal_namespace(principal: &str) -> Option<&str> {
    let mut parts = principal.split('/');
    parts.next()?;
    (parts.next()? == "ns").then_some(())?;
    parts.next().filter(|ns| !ns.is_empty())
}
