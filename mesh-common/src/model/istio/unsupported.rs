//! Fields of Istio's kinds (and of Gateway API's HTTPRoute, and Gateway API kinds
//! that are not implemented at all) that this mesh accepts (Istio YAML applies unchanged) but does
//! not enforce. Nothing is ignored silently: each such field, when set, is reported with
//! its path and the reason (the waypoint's `/config_dump` `warnings`, its log, and
//! `mesh-waypoint check`). The tables below are the list; a field that starts being
//! enforced leaves them in the same change.

use std::fmt;
use std::sync::LazyLock;

use serde::Serialize;
use serde_json::Value;

use crate::model::gateway_api::{self, HttpRoute};
use crate::model::{ObjectRef, Resource};

/// One set field that is not enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    pub object: ObjectRef,
    /// Where it is, with indices: `spec.subsets[1].trafficPolicy.tls`.
    pub path: String,
    pub why: &'static str,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: not supported, ignored: {}",
            self.object, self.path, self.why
        )
    }
}

/// Paths relative to a DestinationRule traffic policy (`spec.trafficPolicy`, a subset's,
/// and their `portLevelSettings[]`).
const TRAFFIC_POLICY: &[(&str, &str)] = &[
    (
        "tls",
        "TLS origination from the waypoint is not implemented; between meshed workloads the mesh's own mutual TLS (ISTIO_MUTUAL) always applies",
    ),
    ("tunnel", "tunneling the upstream connection is not implemented"),
    ("proxyProtocol", "the PROXY protocol to the upstream is not implemented"),
    (
        "loadBalancer.localityLbSetting",
        "locality-aware load balancing is not implemented; endpoints are balanced regardless of locality",
    ),
    (
        "loadBalancer.warmupDurationSecs",
        "slow start is not implemented; new endpoints get their full share at once",
    ),
    (
        "loadBalancer.consistentHash.httpCookie.attributes",
        "cookie attributes are not set on the generated cookie",
    ),
    (
        "connectionPool.tcp.tcpKeepalive",
        "TCP keepalive settings are not applied to upstream connections",
    ),
    (
        "connectionPool.tcp.maxConnectionDuration",
        "upstream connections are not closed after a maximum duration",
    ),
    (
        "connectionPool.http.h2UpgradePolicy",
        "upstream HTTP/1.1 connections are not upgraded to HTTP/2",
    ),
    (
        "connectionPool.http.useClientProtocol",
        "the upstream protocol follows the Service port, not the client's",
    ),
    (
        "connectionPool.http.maxConcurrentStreams",
        "the upstream HTTP/2 stream limit is the peer's, not this setting",
    ),
    (
        "outlierDetection.splitExternalLocalOriginErrors",
        "local-origin errors are counted with the upstream's errors",
    ),
    (
        "outlierDetection.consecutiveLocalOriginFailures",
        "local-origin errors are counted with the upstream's errors",
    ),
    (
        "outlierDetection.minHealthPercent",
        "ejection continues below this share of healthy endpoints (maxEjectionPercent bounds it)",
    ),
];

const TRAFFIC_POLICY_AT: &[&str] = &[
    "spec.trafficPolicy",
    "spec.trafficPolicy.portLevelSettings[]",
    "spec.subsets[].trafficPolicy",
    "spec.subsets[].trafficPolicy.portLevelSettings[]",
];

const DESTINATION_RULE: &[(&str, &str)] = &[(
    "spec.workloadSelector",
    "a DestinationRule applies to every client of its host (a workloadSelector narrows sidecars only)",
)];

const VIRTUAL_SERVICE: &[(&str, &str)] = &[
    (
        "spec.tls",
        "tls routes (by SNI) are not implemented; TLS streams are relayed by tcp routes or to the Service alone",
    ),
    (
        "spec.tcp[].match[].gateways",
        "a tcp match's gateways are not read; tcp routes apply at the waypoint",
    ),
    ("spec.http[].match[].statPrefix", "per-match statistics are not kept"),
    (
        "spec.http[].retries.retryRemoteLocalities",
        "retries do not consider locality",
    ),
];

const HTTP_ROUTE: &[(&str, &str)] = &[
    (
        "spec.hostnames",
        "a route attached to a Service applies to that Service's traffic; hostnames are not read",
    ),
    (
        "spec.parentRefs[].sectionName",
        "a Service parent's sectionName (port name) is not read; set `port` to narrow the route to one port",
    ),
    (
        "spec.rules[].retry",
        "HTTPRoute retry (experimental) is not implemented; the mesh default applies (2 retries on connect failures)",
    ),
    (
        "spec.rules[].sessionPersistence",
        "session persistence is not implemented; use a DestinationRule consistentHash",
    ),
    (
        "spec.rules[].filters[].extensionRef",
        "extension filters are not implemented",
    ),
    (
        "spec.rules[].filters[].cors",
        "the CORS filter (experimental) is not implemented; use a VirtualService corsPolicy",
    ),
    (
        "spec.rules[].backendRefs[].filters[].requestMirror",
        "per-backend filters other than header modifiers are not implemented",
    ),
    (
        "spec.rules[].backendRefs[].filters[].requestRedirect",
        "per-backend filters other than header modifiers are not implemented",
    ),
    (
        "spec.rules[].backendRefs[].filters[].urlRewrite",
        "per-backend filters other than header modifiers are not implemented",
    ),
    (
        "spec.rules[].backendRefs[].filters[].extensionRef",
        "extension filters are not implemented",
    ),
    (
        "spec.rules[].backendRefs[].filters[].cors",
        "the CORS filter (experimental) is not implemented",
    ),
];

/// Field pattern → why, per kind; built once (every snapshot scans every object).
type Table = Vec<(String, &'static str)>;
static DESTINATION_RULE_TABLE: LazyLock<Table> = LazyLock::new(destination_rule_paths);
static VIRTUAL_SERVICE_TABLE: LazyLock<Table> = LazyLock::new(|| owned(VIRTUAL_SERVICE));
static HTTP_ROUTE_TABLE: LazyLock<Table> = LazyLock::new(|| owned(HTTP_ROUTE));

fn owned(table: &[(&str, &'static str)]) -> Table {
    table.iter().map(|(p, w)| (p.to_string(), *w)).collect()
}

/// The set fields of `resource` that are not enforced, by path.
pub fn fields(resource: &Resource) -> Vec<Unsupported> {
    let object = resource.object_ref();
    let found = match resource {
        Resource::DestinationRule(d) => scan(&d.spec, &DESTINATION_RULE_TABLE),
        Resource::VirtualService(v) => scan(&v.spec, &VIRTUAL_SERVICE_TABLE),
        Resource::HttpRoute(h) => {
            let mut found = scan(&h.spec, &HTTP_ROUTE_TABLE);
            found.extend(non_service_parents(h));
            found.sort();
            found
        }
        Resource::Other(raw) if raw.group() == gateway_api::GROUP => gateway_api::UNSUPPORTED_KINDS
            .iter()
            .filter(|(kind, _)| *kind == raw.kind)
            .map(|(_, why)| ("kind".to_owned(), *why))
            .collect(),
        _ => Vec::new(),
    };
    found
        .into_iter()
        .map(|(path, why)| Unsupported {
            object: object.clone(),
            path,
            why,
        })
        .collect()
}

/// Every field pattern reported, by kind (indices written `[]`): what a test uses to
/// prove that a sample setting each of them gets each reported.
pub fn patterns() -> Vec<(&'static str, String)> {
    let dr = DESTINATION_RULE_TABLE
        .iter()
        .map(|(p, _)| ("DestinationRule", p.clone()));
    let vs = VIRTUAL_SERVICE_TABLE.iter().map(|(p, _)| ("VirtualService", p.clone()));
    let hr = HTTP_ROUTE_TABLE.iter().map(|(p, _)| ("HTTPRoute", p.clone()));
    dr.chain(vs).chain(hr).collect()
}

/// Parents other than a Service: the waypoint serves mesh (GAMMA) routes only.
fn non_service_parents(h: &HttpRoute) -> Vec<(String, &'static str)> {
    h.spec
        .parent_refs
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_service())
        .map(|(i, _)| {
            (
                format!("spec.parentRefs[{i}]"),
                "only Service parents (group \"\", kind Service: mesh routes) are served; a route attached to a Gateway is not applied",
            )
        })
        .collect()
}

/// Every not-enforced DestinationRule path, the traffic-policy ones at each level (a
/// port-level policy has no `tunnel` or `proxyProtocol`).
fn destination_rule_paths() -> Table {
    let mut out: Table = DESTINATION_RULE.iter().map(|(p, w)| (p.to_string(), *w)).collect();
    for at in TRAFFIC_POLICY_AT {
        let port_level = at.ends_with("portLevelSettings[]");
        out.extend(
            TRAFFIC_POLICY
                .iter()
                .filter(|(p, _)| !(port_level && matches!(*p, "tunnel" | "proxyProtocol")))
                .map(|(p, w)| (format!("{at}.{p}"), *w)),
        );
    }
    out
}

/// The paths of `spec` (as `spec.…`) whose pattern (indices written `[]`) is in `table`
/// and whose value is set. `tls` set to the mesh's own `ISTIO_MUTUAL` alone is enforced
/// (ambient's mutual TLS), not reported.
fn scan(spec: &impl Serialize, table: &[(String, &'static str)]) -> Vec<(String, &'static str)> {
    let Ok(value) = serde_json::to_value(spec) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&value, "spec", "spec", table, &mut out);
    out.sort();
    out
}

fn walk(v: &Value, path: &str, pattern: &str, table: &[(String, &'static str)], out: &mut Vec<(String, &'static str)>) {
    if !is_set(v) {
        return;
    }
    if let Some((_, why)) = table.iter().find(|(p, _)| p == pattern) {
        if !is_mesh_mutual_tls(pattern, v) {
            out.push((path.to_owned(), *why));
        }
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                walk(child, &format!("{path}.{k}"), &format!("{pattern}.{k}"), table, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), &format!("{pattern}[]"), table, out);
            }
        }
        _ => {}
    }
}

/// Unset as far as behaviour goes: absent, `false`, `0`, empty.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => m.values().any(is_set),
    }
}

fn is_mesh_mutual_tls(pattern: &str, v: &Value) -> bool {
    pattern.ends_with(".tls")
        && v.as_object().is_some_and(|m| {
            m.iter()
                .filter(|(_, x)| is_set(x))
                .all(|(k, x)| k == "mode" && x == "ISTIO_MUTUAL")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_documents;

    fn unsupported(yaml: &str) -> Vec<Unsupported> {
        parse_documents("test.yaml", yaml)
            .into_iter()
            .map(|r| r.expect("valid object"))
            .flat_map(|r| fields(&r))
            .collect()
    }

    fn reported(yaml: &str) -> Vec<String> {
        unsupported(yaml).into_iter().map(|u| u.path).collect()
    }

    #[test]
    fn every_traffic_policy_level_reports_its_unenforced_fields() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: web}}
  trafficPolicy:
    tls: {mode: SIMPLE, sni: reviews.example}
    loadBalancer:
      consistentHash: {httpCookie: {name: user, attributes: [{name: SameSite, value: Strict}]}}
    outlierDetection: {consecutive5xxErrors: 3, minHealthPercent: 50}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {tcp: {maxConnections: 5, tcpKeepalive: {time: 10s}}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true}}
";
        assert_eq!(
            reported(yaml),
            [
                "spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting",
                "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes",
                "spec.trafficPolicy.outlierDetection.minHealthPercent",
                "spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.tcpKeepalive",
                "spec.trafficPolicy.tls",
                "spec.workloadSelector",
            ]
        );
    }

    #[test]
    fn the_mesh_own_mutual_tls_and_unset_fields_are_not_reported() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    outlierDetection: {minHealthPercent: 0}
    loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: v1
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 4096}}}
  - name: v2
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 64}}}
";
        assert!(reported(yaml).is_empty(), "{:?}", reported(yaml));
    }

    #[test]
    fn virtual_service_tls_routes_and_l4_source_matches_are_reported() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432, sourceLabels: {app: web}, gateways: [mesh]}]
    route: [{destination: {host: db}}]
  tls:
  - match: [{sniHosts: [db.example]}]
    route: [{destination: {host: db}}]
";
        let lines: Vec<String> = unsupported(yaml).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "VirtualService shop/db: spec.tcp[0].match[0].gateways: not supported, ignored: a tcp match's gateways are not read; tcp routes apply at the waypoint",
                "VirtualService shop/db: spec.tls: not supported, ignored: tls routes (by SNI) are not implemented; TLS streams are relayed by tcp routes or to the Service alone",
            ]
        );
    }

    #[test]
    fn http_route_unenforced_fields_gateway_parents_and_unimplemented_kinds_are_reported() {
        let yaml = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: bookinfo}
spec:
  parentRefs:
  - {group: '', kind: Service, name: reviews, sectionName: http}
  - {name: ingress}
  hostnames: [reviews.example.com]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: x.io, kind: Filter, name: f}}
    - {type: CORS, cors: {allowOrigins: ['*']}}
    backendRefs:
    - name: reviews
      port: 9080
      filters: [{type: URLRewrite, urlRewrite: {hostname: r}}]
    retry: {attempts: 3}
    sessionPersistence: {sessionName: s}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: bookinfo}
spec: {}
";
        assert_eq!(
            reported(yaml),
            [
                "spec.hostnames",
                "spec.parentRefs[0].sectionName",
                "spec.parentRefs[1]",
                "spec.rules[0].backendRefs[0].filters[0].urlRewrite",
                "spec.rules[0].filters[0].extensionRef",
                "spec.rules[0].filters[1].cors",
                "spec.rules[0].retry",
                "spec.rules[0].sessionPersistence",
                "kind",
            ]
        );
        let tcp = unsupported(yaml).pop().unwrap().to_string();
        assert_eq!(
            tcp,
            "TCPRoute bookinfo/db: kind: not supported, ignored: TCPRoute is not implemented; use a VirtualService `tcp` route"
        );
    }
}
