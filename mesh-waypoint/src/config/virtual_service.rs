//! VirtualService → [`RouteTable`]: everything checked once, here. Errors carry
//! the field path (`spec.http[1].match[0].uri.regex`).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use mesh_common::model::FieldError;
use mesh_common::model::istio::networking::virtual_service as vs;
use mesh_common::model::istio::networking::{Destination, Headers, Percent, StringMatch};

use super::duration;
use super::hosts::{HostPattern, qualify};
use crate::route::cors::Cors;
use crate::route::direct::DirectResponse;
use crate::route::fault::{AbortWith, Fault, Percentage};
use crate::route::headers::{HeaderOps, HeaderRules};
use crate::route::l4_match::L4Match;
use crate::route::mirror::Mirror;
use crate::route::redirect::{Redirect, RedirectPort};
use crate::route::retry::{RetryOn, RetryPolicy};
use crate::route::rewrite::Rewrite;
use crate::route::split::TcpRoute;
use crate::route::string_match::{StrMatch, compile_regex};
use crate::route::{Action, DestinationRef, HttpRoute, RequestMatch, RouteTable, WeightedDestination};
use mesh_common::authz::matcher::Cidr;

type Result<T> = std::result::Result<T, FieldError>;

fn err(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(path, message)
}

pub fn compile(v: &vs::VirtualService) -> Result<RouteTable> {
    let ns = v.metadata.namespace_or_default().to_owned();
    let object = mesh_common::model::ObjectRef::new("VirtualService", Some(&ns), &v.metadata.name);
    if v.spec.hosts.is_empty() {
        return Err(err("spec.hosts", "at least one host is required"));
    }
    let hosts = v.spec.hosts.iter().map(|h| HostPattern::parse(h, &ns)).collect();
    let gateways = if v.spec.gateways.is_empty() {
        vec!["mesh".to_owned()]
    } else {
        normalize_gateways(&v.spec.gateways, &ns)
    };
    let http = v
        .spec
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| http_route(r, &format!("spec.http[{i}]"), &ns, &object.to_string()))
        .collect::<Result<_>>()?;
    let tcp = v
        .spec
        .tcp
        .iter()
        .enumerate()
        .map(|(i, r)| tcp_route(r, &format!("spec.tcp[{i}]"), &ns))
        .collect::<Result<_>>()?;
    Ok(RouteTable {
        object,
        namespace: ns,
        hosts,
        gateways,
        export_to: v.spec.export_to.clone(),
        http,
        tcp,
    })
}

/// `mesh` stays; `name` means `<namespace>/name`.
pub fn normalize_gateways(gateways: &[String], ns: &str) -> Vec<String> {
    gateways
        .iter()
        .map(|g| {
            if g == "mesh" || g.contains('/') {
                g.clone()
            } else {
                format!("{ns}/{g}")
            }
        })
        .collect()
}

fn http_route(r: &vs::HttpRoute, path: &str, ns: &str, object: &str) -> Result<HttpRoute> {
    if r.delegate.is_some() {
        return Err(err(
            format!("{path}.delegate"),
            "delegate is only valid on gateway-bound VirtualServices and is not supported by the waypoint",
        ));
    }
    let matches = r
        .match_
        .iter()
        .enumerate()
        .map(|(i, m)| request_match(m, &format!("{path}.match[{i}]"), ns))
        .collect::<Result<_>>()?;
    let name = r
        .name
        .clone()
        .unwrap_or_else(|| format!("{object}{}", path.trim_start_matches("spec.")));
    Ok(HttpRoute {
        name,
        matches,
        action: action(r, path, ns)?,
        rewrite: r
            .rewrite
            .as_ref()
            .map(|rw| rewrite(rw, &format!("{path}.rewrite")))
            .transpose()?,
        timeout: opt_duration(&r.timeout, &format!("{path}.timeout"))?.filter(|d| !d.is_zero()),
        retries: retries(r.retries.as_ref(), &format!("{path}.retries"))?,
        fault: r
            .fault
            .as_ref()
            .map(|f| fault(f, &format!("{path}.fault")))
            .transpose()?,
        mirrors: mirrors(r, path, ns)?,
        cors: r
            .cors_policy
            .as_ref()
            .map(|c| cors(c, &format!("{path}.corsPolicy")))
            .transpose()?,
        headers: header_rules(r.headers.as_ref(), &format!("{path}.headers"))?,
    })
}

fn action(r: &vs::HttpRoute, path: &str, ns: &str) -> Result<Action> {
    let set = [!r.route.is_empty(), r.redirect.is_some(), r.direct_response.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(err(path, "set exactly one of route, redirect, directResponse"));
    }
    if let Some(rd) = &r.redirect {
        return redirect(rd, &format!("{path}.redirect")).map(Action::Redirect);
    }
    if let Some(d) = &r.direct_response {
        return direct(d, &format!("{path}.directResponse")).map(Action::Direct);
    }
    destinations(&r.route, path, ns).map(|d| Action::Forward(crate::route::split::Split::new(d)))
}

fn destinations(route: &[vs::HttpRouteDestination], path: &str, ns: &str) -> Result<Vec<WeightedDestination>> {
    let weights = weights(route.iter().map(|d| d.weight), path)?;
    route
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (d, weight))| {
            let p = format!("{path}.route[{i}]");
            Ok(WeightedDestination {
                destination: destination(&d.destination, &format!("{p}.destination"), ns)?,
                weight,
                headers: header_rules(d.headers.as_ref(), &format!("{p}.headers"))?,
            })
        })
        .collect()
}

/// Istio: a lone destination may omit its weight; several must sum to 100.
fn weights(given: impl Iterator<Item = Option<i64>>, path: &str) -> Result<Vec<u32>> {
    let given: Vec<Option<i64>> = given.collect();
    let mut out = Vec::with_capacity(given.len());
    for (i, w) in given.iter().enumerate() {
        let w = w.unwrap_or(0);
        if !(0..=100).contains(&w) {
            return Err(err(
                format!("{path}.route[{i}].weight"),
                format!("weight {w} is outside 0–100"),
            ));
        }
        out.push(w as u32);
    }
    match out.len() {
        1 => Ok(vec![100]),
        _ if out.iter().sum::<u32>() == 100 => Ok(out),
        _ => Err(err(
            format!("{path}.route"),
            format!(
                "destination weights sum to {}, they must sum to 100",
                out.iter().sum::<u32>()
            ),
        )),
    }
}

pub fn destination(d: &Destination, path: &str, ns: &str) -> Result<DestinationRef> {
    if d.host.trim().is_empty() {
        return Err(err(format!("{path}.host"), "host is required"));
    }
    if d.host.contains('*') {
        return Err(err(format!("{path}.host"), "a destination host cannot be a wildcard"));
    }
    let port = match &d.port {
        Some(p) => Some(u16::try_from(p.number).ok().filter(|n| *n > 0).ok_or_else(|| {
            err(
                format!("{path}.port.number"),
                format!("port {} is outside 1–65535", p.number),
            )
        })?),
        None => None,
    };
    Ok(DestinationRef {
        host: qualify(&d.host, ns),
        subset: d.subset.clone().filter(|s| !s.is_empty()),
        port,
    })
}

fn request_match(m: &vs::HttpMatchRequest, path: &str, ns: &str) -> Result<RequestMatch> {
    let sm = |field: &str, v: &Option<StringMatch>| {
        v.as_ref()
            .map(|v| StrMatch::compile(v, &format!("{path}.{field}")))
            .transpose()
    };
    Ok(RequestMatch {
        name: m.name.clone(),
        uri: sm("uri", &m.uri)?,
        scheme: sm("scheme", &m.scheme)?,
        method: sm("method", &m.method)?,
        authority: sm("authority", &m.authority)?,
        headers: header_matches(&m.headers, &format!("{path}.headers"))?,
        without_headers: header_matches(&m.without_headers, &format!("{path}.withoutHeaders"))?,
        query_params: m
            .query_params
            .iter()
            .map(|(k, v)| Ok((k.clone(), StrMatch::compile(v, &format!("{path}.queryParams.{k}"))?)))
            .collect::<Result<_>>()?,
        port: m.port.map(|p| port(p, &format!("{path}.port"))).transpose()?,
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
        gateways: normalize_gateways(&m.gateways, ns),
        ignore_uri_case: m.ignore_uri_case,
    })
}

fn header_matches(headers: &BTreeMap<String, StringMatch>, path: &str) -> Result<Vec<(HeaderName, StrMatch)>> {
    headers
        .iter()
        .map(|(name, m)| {
            let p = format!("{path}.{name}");
            // Header names are case-insensitive; HeaderName lowercases them.
            let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| err(&p, format!("`{name}` is not a valid header name")))?;
            Ok((header, StrMatch::compile(m, &p)?))
        })
        .collect()
}

pub(super) fn port(p: u32, path: &str) -> Result<u16> {
    u16::try_from(p)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| err(path, format!("port {p} is outside 1–65535")))
}

pub(super) fn opt_duration(d: &Option<String>, path: &str) -> Result<Option<std::time::Duration>> {
    d.as_deref()
        .map(|d| duration::parse(d).map_err(|m| err(path, m)))
        .transpose()
}

fn percentage(p: &Option<Percent>, legacy: Option<i64>, path: &str, legacy_path: &str) -> Result<Percentage> {
    match (p, legacy) {
        (Some(p), _) => Percentage::new(p.value).map_err(|m| err(format!("{path}.value"), m)),
        (None, Some(l)) => Percentage::new(l as f64).map_err(|m| err(legacy_path, m)),
        (None, None) => Ok(Percentage::ALL),
    }
}

fn retries(r: Option<&vs::HttpRetry>, path: &str) -> Result<RetryPolicy> {
    let Some(r) = r else { return Ok(RetryPolicy::default()) };
    if r.attempts < 0 {
        return Err(err(
            format!("{path}.attempts"),
            format!("attempts {} must not be negative", r.attempts),
        ));
    }
    let defaults = RetryPolicy::default();
    let retry_on = match &r.retry_on {
        Some(on) => RetryOn::parse(on).map_err(|m| err(format!("{path}.retryOn"), m))?,
        None => defaults.retry_on.clone(),
    };
    Ok(RetryPolicy {
        attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        per_try_timeout: opt_duration(&r.per_try_timeout, &format!("{path}.perTryTimeout"))?.filter(|d| !d.is_zero()),
        retry_on,
        backoff: opt_duration(&r.backoff, &format!("{path}.backoff"))?.unwrap_or(defaults.backoff),
        ignore_previous_hosts: r.retry_ignore_previous_hosts.unwrap_or(true),
    })
}

fn fault(f: &vs::HttpFaultInjection, path: &str) -> Result<Fault> {
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let p = format!("{path}.delay");
            if d.exponential_delay.is_some() {
                return Err(err(
                    format!("{p}.exponentialDelay"),
                    "exponentialDelay is not supported (Istio does not implement it either); use fixedDelay",
                ));
            }
            let fixed = opt_duration(&d.fixed_delay, &format!("{p}.fixedDelay"))?
                .ok_or_else(|| err(format!("{p}.fixedDelay"), "fixedDelay is required"))?;
            Some((
                fixed,
                percentage(
                    &d.percentage,
                    d.percent,
                    &format!("{p}.percentage"),
                    &format!("{p}.percent"),
                )?,
            ))
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let p = format!("{path}.abort");
            let with = match (a.http_status, &a.grpc_status, &a.http2_error) {
                (Some(s), None, None) => AbortWith::Http(
                    u16::try_from(s)
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .ok_or_else(|| err(format!("{p}.httpStatus"), format!("status {s} is outside 200–599")))?,
                ),
                (None, Some(g), None) => AbortWith::Grpc(
                    grpc_code(g).ok_or_else(|| err(format!("{p}.grpcStatus"), format!("unknown gRPC status `{g}`")))?,
                ),
                (None, None, Some(_)) => {
                    return Err(err(
                        format!("{p}.http2Error"),
                        "http2Error is not supported; use httpStatus or grpcStatus",
                    ));
                }
                _ => return Err(err(&p, "set exactly one of httpStatus, grpcStatus")),
            };
            Some((with, percentage(&a.percentage, None, &format!("{p}.percentage"), &p)?))
        }
    };
    Ok(Fault { delay, abort })
}

fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
        .or_else(|| name.parse().ok().filter(|c| *c <= 16))
}

fn mirrors(r: &vs::HttpRoute, path: &str, ns: &str) -> Result<Vec<Mirror>> {
    let mut out = Vec::new();
    if let Some(m) = &r.mirror {
        let percentage = percentage(
            &r.mirror_percentage,
            r.mirror_percent,
            &format!("{path}.mirrorPercentage"),
            &format!("{path}.mirrorPercent"),
        )?;
        out.push(Mirror {
            destination: destination(m, &format!("{path}.mirror"), ns)?,
            percentage,
        });
    }
    for (i, m) in r.mirrors.iter().enumerate() {
        let p = format!("{path}.mirrors[{i}]");
        let percentage = percentage(&m.percentage, None, &format!("{p}.percentage"), &p)?;
        out.push(Mirror {
            destination: destination(&m.destination, &format!("{p}.destination"), ns)?,
            percentage,
        });
    }
    Ok(out)
}

fn redirect(r: &vs::HttpRedirect, path: &str) -> Result<Redirect> {
    let code = r.redirect_code.unwrap_or(301);
    let code = u16::try_from(code)
        .ok()
        .filter(|c| (300..=399).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            err(
                format!("{path}.redirectCode"),
                format!("redirect code {code} is outside 300–399"),
            )
        })?;
    let port = match (r.port, r.derive_port.as_deref()) {
        (Some(p), None) => Some(RedirectPort::Fixed(port(p, &format!("{path}.port"))?)),
        (None, Some("FROM_REQUEST_PORT")) => Some(RedirectPort::FromRequest),
        (None, Some("FROM_PROTOCOL_DEFAULT")) => Some(RedirectPort::ProtocolDefault),
        (None, Some(other)) => {
            return Err(err(
                format!("{path}.derivePort"),
                format!("unknown derivePort `{other}`; use FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
            ));
        }
        (None, None) => None,
        (Some(_), Some(_)) => return Err(err(path, "set only one of port, derivePort")),
    };
    Ok(Redirect {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        port,
        scheme: r.scheme.clone(),
        code,
        replace_prefix: None,
    })
}

fn direct(d: &vs::HttpDirectResponse, path: &str) -> Result<DirectResponse> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| {
            err(
                format!("{path}.status"),
                format!("status {} is outside 200–599", d.status),
            )
        })?;
    let body = match &d.body {
        Some(vs::HttpBody {
            string: Some(s),
            bytes: None,
        }) => Bytes::from(s.clone()),
        Some(vs::HttpBody {
            string: None,
            bytes: Some(b),
        }) => Bytes::from(decode_base64(b).ok_or_else(|| err(format!("{path}.body.bytes"), "not valid base64"))?),
        Some(vs::HttpBody {
            string: None,
            bytes: None,
        })
        | None => Bytes::new(),
        Some(_) => return Err(err(format!("{path}.body"), "set only one of string, bytes")),
    };
    Ok(DirectResponse { status, body })
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim().bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()) {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn rewrite(r: &vs::HttpRewrite, path: &str) -> Result<Rewrite> {
    let uri_regex = match &r.uri_regex_rewrite {
        None => None,
        Some(rr) => {
            let p = format!("{path}.uriRegexRewrite");
            let pattern = rr
                .match_
                .as_deref()
                .ok_or_else(|| err(format!("{p}.match"), "match is required"))?;
            let re = regex::Regex::new(pattern).map_err(|e| {
                err(
                    format!("{p}.match"),
                    compile_regex(pattern).err().unwrap_or_else(|| e.to_string()),
                )
            })?;
            // Istio/Envoy write capture references as \1; the regex crate wants ${1}.
            let with = rr.rewrite.clone().unwrap_or_default();
            Some((re, backslash_refs(&with)))
        }
    };
    if r.uri.is_some() && uri_regex.is_some() {
        return Err(err(path, "set only one of uri, uriRegexRewrite"));
    }
    Ok(Rewrite {
        uri: r.uri.clone(),
        authority: r.authority.clone(),
        uri_regex,
        replace_prefix: None,
    })
}

fn backslash_refs(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) if !s.contains('\\') => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

fn cors(c: &vs::CorsPolicy, path: &str) -> Result<Cors> {
    let mut allow_origins: Vec<StrMatch> = c.allow_origin.iter().map(|o| StrMatch::Exact(o.clone())).collect();
    for (i, o) in c.allow_origins.iter().enumerate() {
        allow_origins.push(StrMatch::compile(o, &format!("{path}.allowOrigins[{i}]"))?);
    }
    let ignore = match c.unmatched_preflights.as_deref() {
        None | Some("UNSPECIFIED") | Some("FORWARD") => false,
        Some("IGNORE") => true,
        Some(other) => {
            return Err(err(
                format!("{path}.unmatchedPreflights"),
                format!("unknown value `{other}`; use FORWARD or IGNORE"),
            ));
        }
    };
    Ok(Cors {
        allow_origins,
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: opt_duration(&c.max_age, &format!("{path}.maxAge"))?,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        ignore_unmatched_preflights: ignore,
    })
}

pub fn header_rules(h: Option<&Headers>, path: &str) -> Result<HeaderRules> {
    let Some(h) = h else { return Ok(HeaderRules::default()) };
    let ops = |o: &Option<mesh_common::model::istio::networking::HeaderOperations>, p: String| -> Result<HeaderOps> {
        let Some(o) = o else { return Ok(HeaderOps::default()) };
        let name = |n: &str, p: &str| {
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| err(p, format!("`{n}` is not a valid header name")))
        };
        let pair = |(n, v): (&String, &String), kind: &str| -> Result<(HeaderName, HeaderValue)> {
            let fp = format!("{p}.{kind}.{n}");
            Ok((
                name(n, &fp)?,
                HeaderValue::from_str(v).map_err(|_| err(&fp, "value is not a valid header value"))?,
            ))
        };
        Ok(HeaderOps {
            set: o.set.iter().map(|kv| pair(kv, "set")).collect::<Result<_>>()?,
            add: o.add.iter().map(|kv| pair(kv, "add")).collect::<Result<_>>()?,
            remove: o
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| name(n, &format!("{p}.remove[{i}]")))
                .collect::<Result<_>>()?,
        })
    };
    Ok(HeaderRules {
        request: ops(&h.request, format!("{path}.request"))?,
        response: ops(&h.response, format!("{path}.response"))?,
    })
}

fn tcp_route(r: &vs::TcpRoute, path: &str, ns: &str) -> Result<TcpRoute> {
    let weights = weights(r.route.iter().map(|d| d.weight), path)?;
    let destinations = r
        .route
        .iter()
        .zip(weights)
        .enumerate()
        .map(|(i, (d, weight))| {
            let destination = destination(&d.destination, &format!("{path}.route[{i}].destination"), ns)?;
            Ok(WeightedDestination {
                destination,
                weight,
                headers: HeaderRules::default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if destinations.is_empty() {
        return Err(err(format!("{path}.route"), "at least one destination is required"));
    }
    let matches = r
        .match_
        .iter()
        .enumerate()
        .map(|(i, m)| l4_match(m, &format!("{path}.match[{i}]")))
        .collect::<Result<_>>()?;
    Ok(TcpRoute {
        matches,
        split: crate::route::split::Split::new(destinations),
    })
}

/// One `tcp[].match[]` block; `gateways` is reported as unsupported, not read.
fn l4_match(m: &vs::L4MatchAttributes, path: &str) -> Result<L4Match> {
    let cidr = |text: &str, field: String| Cidr::parse(text).map_err(|e| err(field, e));
    Ok(L4Match {
        port: m.port.map(|p| port(p, &format!("{path}.port"))).transpose()?,
        destination_subnets: m
            .destination_subnets
            .iter()
            .enumerate()
            .map(|(i, c)| cidr(c, format!("{path}.destinationSubnets[{i}]")))
            .collect::<Result<_>>()?,
        source_subnet: m
            .source_subnet
            .as_deref()
            .map(|c| cidr(c, format!("{path}.sourceSubnet")))
            .transpose()?,
        source_labels: m.source_labels.clone(),
        source_namespace: m.source_namespace.clone(),
    })
}

#[cfg(test)]
mod tests {
    use mesh_common::model::{ConfigError, Resource, parse_documents};

    use super::*;

    /// Decodes one VirtualService document and compiles it, giving the operator's message.
    fn check(spec: &str) -> std::result::Result<RouteTable, String> {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n{spec}"
        );
        let doc = parse_documents("t.yaml", &text).remove(0).map_err(|e| e.to_string())?;
        let Resource::VirtualService(v) = &doc else {
            panic!("not a VirtualService")
        };
        compile(v).map_err(|e| {
            ConfigError::Invalid {
                object: doc.object_ref(),
                error: e,
            }
            .to_string()
        })
    }

    #[test]
    fn tcp_match_blocks_compile_every_l4_field_and_name_a_bad_one() {
        let t = check("  hosts: [db]\n  tcp:\n  - match:\n    - {port: 3306, destinationSubnets: [198.19.0.0/16], sourceSubnet: 198.18.1.0/24, sourceLabels: {app: web}, sourceNamespace: shop}\n    - {port: 3307}\n    route: [{destination: {host: db}}]\n").unwrap();
        let m = &t.tcp[0].matches;
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].port, m[1].port), (Some(3306), Some(3307)));
        assert_eq!(m[0].destination_subnets.len(), 1);
        assert!(m[0].source_subnet.is_some());
        assert_eq!(m[0].source_labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(m[0].source_namespace.as_deref(), Some("shop"));
        let bad = check("  hosts: [db]\n  tcp:\n  - match: [{sourceSubnet: 198.18.1.0/33}]\n    route: [{destination: {host: db}}]\n").unwrap_err();
        assert!(bad.contains("spec.tcp[0].match[0].sourceSubnet"), "{bad}");
        let bad = check("  hosts: [db]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/8, db]}]\n    route: [{destination: {host: db}}]\n").unwrap_err();
        assert!(bad.contains("spec.tcp[0].match[0].destinationSubnets[1]"), "{bad}");
    }

    #[test]
    fn bad_input_names_object_and_path() {
        let table = [
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n  - match: [{uri: {regex: '(unclosed'}}]\n    route: [{destination: {host: reviews}}]\n",
                "VirtualService default/reviews: spec.http[1].match[0].uri.regex: unclosed group",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v1}, weight: 60}, {destination: {host: reviews, subset: v2}, weight: 30}]\n",
                "VirtualService default/reviews: spec.http[0].route: destination weights sum to 90, they must sum to 100",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}, weight: -5}, {destination: {host: reviews}, weight: 105}]\n",
                "VirtualService default/reviews: spec.http[0].route[0].weight: weight -5 is outside 0–100",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    fault: {abort: {httpStatus: 500, percentage: {value: 150}}}\n",
                "VirtualService default/reviews: spec.http[0].fault.abort.percentage.value: percentage 150 is outside 0–100",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    fault: {delay: {fixedDelay: 1s, percent: 101}}\n",
                "VirtualService default/reviews: spec.http[0].fault.delay.percent: percentage 101 is outside 0–100",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    timeout: -1s\n",
                "VirtualService default/reviews: spec.http[0].timeout: duration `-1s` must not be negative",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 3, perTryTimeout: soon}\n",
                "VirtualService default/reviews: spec.http[0].retries.perTryTimeout: cannot parse duration `soon`",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    fault: {delay: {fixedDelay: '7'}}\n",
                "VirtualService default/reviews: spec.http[0].fault.delay.fixedDelay: cannot parse duration `7`",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    retries: {attempts: 3, retryOn: '5xx,sometimes'}\n",
                "VirtualService default/reviews: spec.http[0].retries.retryOn: unknown retry condition `sometimes`",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews}}]\n    timeot: 1s\n",
                "VirtualService default/reviews: spec.http[0].timeot: unknown field `timeot`",
            ),
            (
                "  hosts: [reviews]\n  http:\n  - match: [{headers: {end-user: {exact: a, regex: b}}}]\n    route: [{destination: {host: reviews}}]\n",
                "VirtualService default/reviews: spec.http[0].match[0].headers.end-user: set only one of exact, prefix, regex",
            ),
            (
                "  hosts: []\n",
                "VirtualService default/reviews: spec.hosts: at least one host is required",
            ),
        ];
        for (spec, want) in table {
            let got = check(spec).map(|_| ()).unwrap_err();
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn valid_route_compiles_with_defaults() {
        let t = check(
            "  hosts: [reviews, '*.bookinfo.svc.cluster.local']\n  http:\n  - name: jason\n    match: [{headers: {End-User: {exact: jason}}, ignoreUriCase: true, uri: {prefix: /API}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n    fault: {delay: {fixedDelay: 7s, percentage: {value: 100}}}\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,503'}\n    timeout: 10s\n  - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1, port: {number: 9080}}, weight: 95}, {destination: {host: reviews, subset: v3}, weight: 5}]\n",
        )
        .unwrap();
        assert_eq!(t.gateways, vec!["mesh"]);
        assert_eq!(t.http.len(), 2);
        let jason = &t.http[0];
        assert_eq!(jason.name, "jason");
        assert_eq!(jason.matches[0].headers[0].0.as_str(), "end-user");
        assert_eq!(jason.timeout, Some(std::time::Duration::from_secs(10)));
        assert_eq!(jason.retries.attempts, 3);
        let Action::Forward(split) = &t.http[1].action else {
            panic!()
        };
        let d = &split.destinations;
        assert_eq!(d[0].destination.host, "reviews.default.svc.cluster.local");
        assert_eq!((d[0].weight, d[1].weight, d[0].destination.port), (95, 5, Some(9080)));
        assert_eq!(t.http[1].retries, RetryPolicy::default());
    }

    #[test]
    fn base64_and_backrefs() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(backslash_refs("\\2/instance/\\1"), "${2}/instance/${1}");
    }
}
