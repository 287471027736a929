//! `HTTPMatchRequest`: blocks are OR'ed, fields inside a block AND'ed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};

use super::string_match::StrMatch;

/// Who sent the request, as far as the waypoint knows it (the source pod is found
/// by the peer address among known Pods).
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub namespace: Option<String>,
}

/// The parts of a request that matching reads.
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub scheme: &'a str,
    /// Host header / `:authority` as received.
    pub authority: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Destination port the client addressed.
    pub port: u16,
    pub source: &'a Source,
    /// Gateways this proxy serves, normalized (`mesh`, `ns/name`).
    pub gateways: &'a [String],
}

#[derive(Clone, Debug, Default)]
pub struct RequestMatch {
    pub name: Option<String>,
    pub uri: Option<StrMatch>,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<(HeaderName, StrMatch)>,
    pub without_headers: Vec<(HeaderName, StrMatch)>,
    pub query_params: Vec<(String, StrMatch)>,
    pub port: Option<u16>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    /// Normalized; empty means "the VirtualService's gateways".
    pub gateways: Vec<String>,
    pub ignore_uri_case: bool,
}

impl RequestMatch {
    pub fn matches(&self, req: &RequestInfo<'_>, vs_gateways: &[String]) -> bool {
        let gateways = if self.gateways.is_empty() {
            vs_gateways
        } else {
            &self.gateways
        };
        gateways.iter().any(|g| req.gateways.contains(g))
            && self.uri_matches(req.path)
            && opt(&self.scheme, req.scheme)
            && opt(&self.method, req.method.as_str())
            && opt(&self.authority, req.authority)
            && self
                .headers
                .iter()
                .all(|(n, m)| header_value(req.headers, n).is_some_and(|v| m.matches(&v)))
            && !self
                .without_headers
                .iter()
                .any(|(n, m)| header_value(req.headers, n).is_some_and(|v| m.matches(&v)))
            && self
                .query_params
                .iter()
                .all(|(k, m)| query_value(req.query, k).is_some_and(|v| m.matches(&v)))
            && self.port.is_none_or(|p| p == req.port)
            && self
                .source_labels
                .iter()
                .all(|(k, v)| req.source.labels.get(k) == Some(v))
            && self
                .source_namespace
                .as_ref()
                .is_none_or(|ns| req.source.namespace.as_ref() == Some(ns))
    }

    fn uri_matches(&self, path: &str) -> bool {
        match &self.uri {
            None => true,
            Some(m) if self.ignore_uri_case => m.matches_ignore_case(path),
            Some(m) => m.matches(path),
        }
    }
}

fn opt(m: &Option<StrMatch>, value: &str) -> bool {
    m.as_ref().is_none_or(|m| m.matches(value))
}

/// Several values of one header are compared joined by `,`, as Envoy does.
fn header_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(","))
}

pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_owned())
    })
}
