//! Gateway API `HTTPRoute` attached to a Service (GAMMA, mesh mode) → the same
//! [`RouteTable`] a VirtualService compiles to, so one engine serves both.
//!
//! Gateway API orders matches across all the routes of a parent, not by position, so
//! each `(rule, match)` becomes its own single-match [`HttpRoute`] and the table of a
//! Service is every such route of every HTTPRoute attached to it, sorted by Istio's
//! precedence: path Exact, then PathPrefix, then RegularExpression (longer values
//! first within each), then a method match, then more header matches, then more query
//! matches; ties keep route order (namespace/name; creation time is not read), then
//! rule and match order. Errors carry the field path (`spec.rules[1].matches[0].path`).

use std::cmp::Reverse;
use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use mesh_common::model::gateway_api::http_route as gw;
use mesh_common::model::{FieldError, ObjectRef};

use super::hosts::{HostPattern, qualify};
use super::virtual_service::{opt_duration, port};
use crate::route::direct::DirectResponse;
use crate::route::fault::Percentage;
use crate::route::headers::{HeaderOps, HeaderRules};
use crate::route::mirror::Mirror;
use crate::route::redirect::{Redirect, RedirectPort};
use crate::route::retry::RetryPolicy;
use crate::route::rewrite::Rewrite;
use crate::route::split::Split;
use crate::route::string_match::{StrMatch, compile_regex};
use crate::route::{Action, DestinationRef, HttpRoute, RequestMatch, RouteTable, WeightedDestination};

type Result<T> = std::result::Result<T, FieldError>;

fn err(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(path, message)
}

/// Where one compiled route sorts among all routes of its Service (smaller first).
type Rank = (Reverse<(u8, usize, bool, usize, usize)>, ObjectRef, usize, usize);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    pub host: String,
    pub port: Option<u16>,
    pub consumer: bool,
}

/// One HTTPRoute, checked and flattened.
#[derive(Clone, Debug)]
pub struct CompiledRoute {
    pub object: ObjectRef,
    /// Per Service parent: its FQDN, the port when the parentRef names one, and whether
    /// this is a consumer route (in another namespace than the Service: it applies to
    /// clients in the route's namespace only, as GAMMA defines).
    pub parents: Vec<Parent>,
    /// One single-match route per `(rule, match)`, with its rank.
    pub entries: Vec<(Rank, HttpRoute)>,
}

pub fn compile(h: &gw::HttpRoute) -> Result<CompiledRoute> {
    let ns = h.metadata.namespace_or_default().to_owned();
    let object = h.object_ref();
    let parents = h
        .spec
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_service())
        .map(|(i, p)| {
            let service_ns = p.namespace.as_deref().unwrap_or(&ns);
            Ok(Parent {
                host: qualify(&p.name, service_ns),
                port: p
                    .port
                    .map(|n| port(n, &format!("spec.parentRefs[{i}].port")))
                    .transpose()?,
                consumer: service_ns != ns,
            })
        })
        .collect::<Result<_>>()?;
    let mut entries = Vec::new();
    for (i, rule) in h.spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        let base = rule_route(rule, &path, &ns, &object)?;
        let implicit = [gw::HttpRouteMatch::default()];
        let matches = if rule.matches.is_empty() {
            &implicit[..]
        } else {
            &rule.matches[..]
        };
        for (j, m) in matches.iter().enumerate() {
            let compiled = request_match(m, &format!("{path}.matches[{j}]"))?;
            let mut route = base.clone();
            fill_matched_prefix(&mut route, &compiled);
            check_prefix_replacement(&route, &compiled, &format!("{path}.matches[{j}]"))?;
            route.name = match &rule.name {
                Some(n) => format!("{ns}/{}.{n}.matches[{j}]", h.metadata.name),
                None => format!("{ns}/{}.rules[{i}].matches[{j}]", h.metadata.name),
            };
            entries.push(((Reverse(rank(&compiled)), object.clone(), i, j), {
                route.matches = vec![compiled];
                route
            }));
        }
    }
    Ok(CompiledRoute {
        object,
        parents,
        entries,
    })
}

/// `ReplacePrefixMatch` replaces the prefix this match matched: known per match.
fn fill_matched_prefix(route: &mut HttpRoute, m: &RequestMatch) {
    let Some(StrMatch::PathPrefix(prefix)) = &m.uri else {
        return;
    };
    if let Action::Redirect(r) = &mut route.action
        && r.replace_prefix.is_some()
    {
        r.replace_prefix = Some(prefix.clone());
    }
    if let Some(rw) = &mut route.rewrite
        && rw.replace_prefix.is_some()
    {
        rw.replace_prefix = Some(prefix.clone());
    }
}

/// `ReplacePrefixMatch` needs a `PathPrefix` match to replace (as the API requires).
fn check_prefix_replacement(route: &HttpRoute, m: &RequestMatch, path: &str) -> Result<()> {
    let wants = matches!(&route.action, Action::Redirect(r) if r.replace_prefix.is_some())
        || route.rewrite.as_ref().is_some_and(|r| r.replace_prefix.is_some());
    if wants && !matches!(m.uri, Some(StrMatch::PathPrefix(_))) {
        return Err(err(
            format!("{path}.path"),
            "ReplacePrefixMatch needs a PathPrefix path match",
        ));
    }
    Ok(())
}

/// Path kind (Exact 3, PathPrefix 2, RegularExpression 1), its length, method, and the
/// number of header and query matches: larger sorts first.
fn rank(m: &RequestMatch) -> (u8, usize, bool, usize, usize) {
    let (kind, len) = match &m.uri {
        Some(StrMatch::Exact(v)) => (3, v.len()),
        Some(StrMatch::PathPrefix(v)) => (2, v.len()),
        Some(StrMatch::Regex(r)) => (1, r.as_str().len()),
        _ => (0, 0),
    };
    (kind, len, m.method.is_some(), m.headers.len(), m.query_params.len())
}

/// Everything of a rule but its matches: filters, backends, timeouts.
fn rule_route(rule: &gw::HttpRouteRule, path: &str, ns: &str, object: &ObjectRef) -> Result<HttpRoute> {
    let filters = Filters::compile(&rule.filters, &format!("{path}.filters"), ns)?;
    let action = match (filters.redirect, rule.backend_refs.is_empty()) {
        (Some(_), false) => {
            return Err(err(
                format!("{path}.backendRefs"),
                "a RequestRedirect rule cannot have backendRefs",
            ));
        }
        (Some(r), true) => Action::Redirect(r),
        (None, _) => backends(&rule.backend_refs, path, ns)?,
    };
    let (timeout, per_try) = timeouts(rule.timeouts.as_ref(), &format!("{path}.timeouts"))?;
    Ok(HttpRoute {
        name: object.to_string(),
        matches: Vec::new(),
        action,
        rewrite: filters.rewrite,
        timeout,
        retries: RetryPolicy {
            per_try_timeout: per_try,
            ..RetryPolicy::default()
        },
        fault: None,
        mirrors: filters.mirrors,
        cors: None,
        headers: filters.headers,
    })
}

/// `request` bounds the whole request (retries included), `backendRequest` each try;
/// `0s` means no timeout, as the API defines.
fn timeouts(
    t: Option<&gw::HttpRouteTimeouts>,
    path: &str,
) -> Result<(Option<std::time::Duration>, Option<std::time::Duration>)> {
    let Some(t) = t else { return Ok((None, None)) };
    let request = opt_duration(&t.request, &format!("{path}.request"))?.filter(|d| !d.is_zero());
    let backend = opt_duration(&t.backend_request, &format!("{path}.backendRequest"))?.filter(|d| !d.is_zero());
    if let (Some(r), Some(b)) = (request, backend)
        && b > r
    {
        return Err(err(
            format!("{path}.backendRequest"),
            "backendRequest must not be longer than request",
        ));
    }
    Ok((request, backend))
}

/// A rule's filters, compiled; ExtensionRef and CORS are reported (unsupported.rs).
#[derive(Default)]
struct Filters {
    headers: HeaderRules,
    redirect: Option<Redirect>,
    rewrite: Option<Rewrite>,
    mirrors: Vec<Mirror>,
}

impl Filters {
    fn compile(filters: &[gw::HttpRouteFilter], path: &str, ns: &str) -> Result<Self> {
        let mut out = Filters::default();
        let mut seen: Vec<&str> = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            let p = format!("{path}[{i}]");
            if f.type_ != "RequestMirror" && seen.contains(&f.type_.as_str()) {
                return Err(err(format!("{p}.type"), format!("{} appears more than once", f.type_)));
            }
            seen.push(&f.type_);
            match f.type_.as_str() {
                "RequestHeaderModifier" => {
                    out.headers.request = header_ops(
                        required(&f.request_header_modifier, &p, "requestHeaderModifier")?,
                        &format!("{p}.requestHeaderModifier"),
                    )?;
                }
                "ResponseHeaderModifier" => {
                    out.headers.response = header_ops(
                        required(&f.response_header_modifier, &p, "responseHeaderModifier")?,
                        &format!("{p}.responseHeaderModifier"),
                    )?;
                }
                "RequestRedirect" => {
                    out.redirect = Some(redirect(
                        required(&f.request_redirect, &p, "requestRedirect")?,
                        &format!("{p}.requestRedirect"),
                    )?);
                }
                "URLRewrite" => {
                    out.rewrite = Some(rewrite(
                        required(&f.url_rewrite, &p, "urlRewrite")?,
                        &format!("{p}.urlRewrite"),
                    )?);
                }
                "RequestMirror" => {
                    let m = required(&f.request_mirror, &p, "requestMirror")?;
                    out.mirrors.push(mirror(m, &format!("{p}.requestMirror"), ns)?);
                }
                // Reported as not supported, with the field that configures them.
                "ExtensionRef" | "CORS" => {}
                other => {
                    return Err(err(format!("{p}.type"), format!("unknown filter type `{other}`")));
                }
            }
        }
        if out.redirect.is_some() && out.rewrite.is_some() {
            return Err(err(path, "RequestRedirect and URLRewrite cannot both be set"));
        }
        Ok(out)
    }
}

fn required<'a, T>(v: &'a Option<T>, path: &str, field: &str) -> Result<&'a T> {
    v.as_ref()
        .ok_or_else(|| err(format!("{path}.{field}"), format!("{field} is required by its type")))
}

fn header_ops(f: &gw::HeaderFilter, path: &str) -> Result<HeaderOps> {
    let name = |n: &str, p: String| {
        HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
            .map_err(|_| err(p, format!("`{n}` is not a valid header name")))
    };
    let pairs = |list: &[gw::HttpHeader], kind: &str| -> Result<Vec<(HeaderName, HeaderValue)>> {
        list.iter()
            .enumerate()
            .map(|(i, h)| {
                let p = format!("{path}.{kind}[{i}]");
                let value = HeaderValue::from_str(&h.value)
                    .map_err(|_| err(format!("{p}.value"), "value is not a valid header value"))?;
                Ok((name(&h.name, format!("{p}.name"))?, value))
            })
            .collect()
    };
    Ok(HeaderOps {
        set: pairs(&f.set, "set")?,
        add: pairs(&f.add, "add")?,
        remove: f
            .remove
            .iter()
            .enumerate()
            .map(|(i, n)| name(n, format!("{path}.remove[{i}]")))
            .collect::<Result<_>>()?,
    })
}

/// The new path: `(uri, replace_prefix?)`; the matched prefix is filled in per match.
fn path_modifier(m: &gw::HttpPathModifier, path: &str) -> Result<(String, bool)> {
    match m.type_.as_str() {
        "ReplaceFullPath" => Ok((required(&m.replace_full_path, path, "replaceFullPath")?.clone(), false)),
        "ReplacePrefixMatch" => Ok((
            required(&m.replace_prefix_match, path, "replacePrefixMatch")?.clone(),
            true,
        )),
        other => Err(err(
            format!("{path}.type"),
            format!("unknown path modifier `{other}`; use ReplaceFullPath or ReplacePrefixMatch"),
        )),
    }
}

fn redirect(r: &gw::RequestRedirect, path: &str) -> Result<Redirect> {
    let code = match r.status_code.unwrap_or(302) {
        301 => StatusCode::MOVED_PERMANENTLY,
        302 => StatusCode::FOUND,
        other => {
            return Err(err(
                format!("{path}.statusCode"),
                format!("status code {other} is not 301 or 302"),
            ));
        }
    };
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(s.to_owned()),
        Some(other) => {
            return Err(err(
                format!("{path}.scheme"),
                format!("scheme `{other}` is not http or https"),
            ));
        }
    };
    // The API: no port means the scheme's well-known port when the scheme is set,
    // else the port the request came in on (the "listener" port of a mesh route).
    let redirect_port = match r.port {
        Some(p) => RedirectPort::Fixed(port(p, &format!("{path}.port"))?),
        None if scheme.is_some() => RedirectPort::ProtocolDefault,
        None => RedirectPort::FromRequest,
    };
    let (uri, prefix) = match &r.path {
        Some(m) => {
            let (uri, prefix) = path_modifier(m, &format!("{path}.path"))?;
            (Some(uri), prefix)
        }
        None => (None, false),
    };
    Ok(Redirect {
        uri,
        authority: r.hostname.clone(),
        port: Some(redirect_port),
        scheme,
        code,
        replace_prefix: prefix.then(String::new),
    })
}

fn rewrite(r: &gw::UrlRewrite, path: &str) -> Result<Rewrite> {
    let (uri, prefix) = match &r.path {
        Some(m) => {
            let (uri, prefix) = path_modifier(m, &format!("{path}.path"))?;
            (Some(uri), prefix)
        }
        None => (None, false),
    };
    Ok(Rewrite {
        uri,
        authority: r.hostname.clone(),
        uri_regex: None,
        replace_prefix: prefix.then(String::new),
    })
}

fn mirror(m: &gw::RequestMirror, path: &str, ns: &str) -> Result<Mirror> {
    let percentage = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => return Err(err(path, "set only one of percent, fraction")),
        (Some(p), None) => Percentage::new(p as f64).map_err(|e| err(format!("{path}.percent"), e))?,
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            if denominator <= 0 || f.numerator < 0 || f.numerator > denominator {
                return Err(err(
                    format!("{path}.fraction"),
                    "numerator must be within 0–denominator and denominator above 0",
                ));
            }
            Percentage::new(100.0 * f.numerator as f64 / denominator as f64)
                .map_err(|e| err(format!("{path}.fraction"), e))?
        }
        (None, None) => Percentage::ALL,
    };
    let r = &m.backend_ref;
    let destination = service_ref(
        r.group.as_deref(),
        r.kind.as_deref(),
        &r.name,
        r.namespace.as_deref(),
        r.port,
        &format!("{path}.backendRef"),
        ns,
    )?;
    Ok(Mirror {
        destination,
        percentage,
    })
}

/// A core Service in the route's namespace, with its port (required, as the API says).
fn service_ref(
    group: Option<&str>,
    kind: Option<&str>,
    name: &str,
    namespace: Option<&str>,
    port_number: Option<u32>,
    path: &str,
    ns: &str,
) -> Result<DestinationRef> {
    if !matches!(group, None | Some("")) || !matches!(kind, None | Some("Service")) {
        return Err(err(
            format!("{path}.kind"),
            "only Service backends (group \"\", kind Service) are supported",
        ));
    }
    if namespace.is_some_and(|n| n != ns) {
        return Err(err(
            format!("{path}.namespace"),
            "cross-namespace backends need a ReferenceGrant, which is not implemented",
        ));
    }
    let number = port_number.ok_or_else(|| err(format!("{path}.port"), "port is required for a Service backend"))?;
    Ok(DestinationRef {
        host: qualify(name, ns),
        subset: None,
        port: Some(port(number, &format!("{path}.port"))?),
    })
}

/// Weighted backends; none, or all at weight 0, answer 500 as the API requires.
fn backends(refs: &[gw::HttpBackendRef], path: &str, ns: &str) -> Result<Action> {
    let mut out = Vec::with_capacity(refs.len());
    for (i, b) in refs.iter().enumerate() {
        let p = format!("{path}.backendRefs[{i}]");
        let weight = b.weight.unwrap_or(1);
        if !(0..=1_000_000).contains(&weight) {
            return Err(err(
                format!("{p}.weight"),
                format!("weight {weight} is outside 0–1000000"),
            ));
        }
        let destination = service_ref(
            b.group.as_deref(),
            b.kind.as_deref(),
            &b.name,
            b.namespace.as_deref(),
            b.port,
            &p,
            ns,
        )?;
        let filters = Filters::compile(&b.filters, &format!("{p}.filters"), ns)?;
        out.push(WeightedDestination {
            destination,
            weight: weight as u32,
            headers: filters.headers,
        });
    }
    if out.iter().all(|d| d.weight == 0) {
        return Ok(Action::Direct(DirectResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::new(),
        }));
    }
    scale_weights(&mut out);
    Ok(Action::Forward(Split::new(out)))
}

/// The split deals a deck of `sum(weights)` cards: keep it small without changing the
/// shares (divide by the common factor), and past 10,000 scale to per-ten-thousand.
fn scale_weights(dests: &mut [WeightedDestination]) {
    let gcd = dests.iter().map(|d| d.weight).filter(|w| *w > 0).fold(0, gcd);
    for d in dests.iter_mut() {
        d.weight /= gcd.max(1);
    }
    let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    if total > 10_000 {
        for d in dests.iter_mut() {
            let scaled = u64::from(d.weight) * 10_000 / total;
            d.weight = if d.weight > 0 { scaled.max(1) as u32 } else { 0 };
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn request_match(m: &gw::HttpRouteMatch, path: &str) -> Result<RequestMatch> {
    let uri = match &m.path {
        None => StrMatch::PathPrefix(String::new()),
        Some(p) => path_match(p, &format!("{path}.path"))?,
    };
    let named = |list: &[gw::NamedMatch], field: &str, lowercase: bool| -> Result<Vec<(String, StrMatch)>> {
        let mut out: Vec<(String, StrMatch)> = Vec::new();
        for (i, n) in list.iter().enumerate() {
            let p = format!("{path}.{field}[{i}]");
            let name = if lowercase {
                n.name.to_ascii_lowercase()
            } else {
                n.name.clone()
            };
            // The API: a repeated name after the first is ignored.
            if out.iter().any(|(k, _)| *k == name) {
                continue;
            }
            let value = match n.type_.as_deref().unwrap_or("Exact") {
                "Exact" => StrMatch::Exact(n.value.clone()),
                "RegularExpression" => {
                    StrMatch::Regex(compile_regex(&n.value).map_err(|e| err(format!("{p}.value"), e))?)
                }
                other => {
                    return Err(err(
                        format!("{p}.type"),
                        format!("unknown match type `{other}`; use Exact or RegularExpression"),
                    ));
                }
            };
            out.push((name, value));
        }
        Ok(out)
    };
    let headers = named(&m.headers, "headers", true)?
        .into_iter()
        .enumerate()
        .map(|(i, (n, v))| {
            HeaderName::from_bytes(n.as_bytes()).map(|h| (h, v)).map_err(|_| {
                err(
                    format!("{path}.headers[{i}].name"),
                    format!("`{n}` is not a valid header name"),
                )
            })
        })
        .collect::<Result<_>>()?;
    Ok(RequestMatch {
        uri: Some(uri),
        method: m.method.as_ref().map(|v| StrMatch::Exact(v.clone())),
        headers,
        query_params: named(&m.query_params, "queryParams", false)?,
        ..RequestMatch::default()
    })
}

fn path_match(p: &gw::HttpPathMatch, path: &str) -> Result<StrMatch> {
    let value = p.value.as_deref().unwrap_or("/");
    match p.type_.as_deref().unwrap_or("PathPrefix") {
        "RegularExpression" => compile_regex(value)
            .map(StrMatch::Regex)
            .map_err(|e| err(format!("{path}.value"), e)),
        _ if !value.starts_with('/') => Err(err(format!("{path}.value"), "a path must start with `/`")),
        "Exact" => Ok(StrMatch::Exact(value.to_owned())),
        "PathPrefix" => Ok(StrMatch::PathPrefix(value.trim_end_matches('/').to_owned())),
        other => Err(err(
            format!("{path}.type"),
            format!("unknown path match type `{other}`; use Exact, PathPrefix or RegularExpression"),
        )),
    }
}

/// What one Service host collects: its routes with their rank, each parent's port, and
/// the first HTTPRoute (by name) attached to it.
type HostRoutes<'a> = (Vec<(&'a Rank, HttpRoute)>, Vec<Option<u16>>, &'a ObjectRef);

/// One table per Service host: every route of every HTTPRoute attached to it, in
/// precedence order (a consumer route only matches clients of its own namespace). A parent with a `port` narrows its routes to that port; when every
/// parent of a host names a port, unmatched requests on those ports get 404 and other
/// ports go to the Service as if no route existed.
pub fn tables(routes: &[CompiledRoute]) -> Vec<RouteTable> {
    let mut by_host: BTreeMap<&str, HostRoutes<'_>> = BTreeMap::new();
    for r in routes {
        for parent in &r.parents {
            let slot = by_host
                .entry(&parent.host)
                .or_insert_with(|| (Vec::new(), Vec::new(), &r.object));
            slot.2 = slot.2.min(&r.object);
            slot.1.push(parent.port);
            for (rank, route) in &r.entries {
                let mut route = route.clone();
                for m in &mut route.matches {
                    m.port = parent.port;
                    if parent.consumer {
                        m.source_namespace = r.object.namespace.clone();
                    }
                }
                slot.0.push((rank, route));
            }
        }
    }
    by_host
        .into_iter()
        .map(|(host, (mut entries, ports, object))| {
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut http: Vec<HttpRoute> = entries.into_iter().map(|(_, r)| r).collect();
            if ports.iter().all(Option::is_some) {
                http.extend(port_fallbacks(host, &ports));
            }
            RouteTable {
                object: object.clone(),
                namespace: object.namespace.clone().unwrap_or_default(),
                hosts: vec![HostPattern::Exact(host.to_owned())],
                gateways: vec!["mesh".to_owned()],
                export_to: Vec::new(),
                http,
                tcp: Vec::new(),
            }
        })
        .collect()
}

/// 404 on the parents' ports, the Service itself on any other port.
fn port_fallbacks(host: &str, ports: &[Option<u16>]) -> Vec<HttpRoute> {
    let mut ports: Vec<u16> = ports.iter().flatten().copied().collect();
    ports.sort_unstable();
    ports.dedup();
    let plain = |name: String, matches: Vec<RequestMatch>, action: Action| HttpRoute {
        name,
        matches,
        action,
        rewrite: None,
        timeout: None,
        retries: RetryPolicy::default(),
        fault: None,
        mirrors: Vec::new(),
        cors: None,
        headers: HeaderRules::default(),
    };
    let not_found = ports.iter().map(|p| {
        plain(
            format!("{host}:{p} no HTTPRoute match"),
            vec![RequestMatch {
                port: Some(*p),
                ..RequestMatch::default()
            }],
            Action::Direct(DirectResponse {
                status: StatusCode::NOT_FOUND,
                body: Bytes::new(),
            }),
        )
    });
    let service = WeightedDestination {
        destination: DestinationRef {
            host: host.to_owned(),
            subset: None,
            port: None,
        },
        weight: 100,
        headers: HeaderRules::default(),
    };
    not_found
        .chain(std::iter::once(plain(
            format!("{host} other ports"),
            Vec::new(),
            Action::Forward(Split::new(vec![service])),
        )))
        .collect()
}

#[cfg(test)]
mod tests;
