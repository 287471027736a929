//! DestinationRule → subsets and layered traffic policies, validated once.

use std::collections::BTreeMap;

use http::HeaderName;
use mesh_common::model::istio::networking::destination_rule as dr;
use mesh_common::model::{FieldError, ObjectRef};

use super::duration;
use super::hosts::qualify;
use crate::backend::policy::{LevelPolicy, OutlierPolicy, PolicyParts, PoolLimits};
use crate::endpoint::balancer::{HashOn, LbPolicy};
use crate::endpoint::consistent_hash::HashAlgorithm;
use crate::endpoint::{maglev, ring_hash};

type Result<T> = std::result::Result<T, FieldError>;

fn err(path: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(path, message)
}

#[derive(Clone, Debug)]
pub struct CompiledRule {
    pub object: ObjectRef,
    pub namespace: String,
    pub host: String,
    pub export_to: Vec<String>,
    pub policy: LevelPolicy,
    pub subsets: Vec<CompiledSubset>,
}

#[derive(Clone, Debug)]
pub struct CompiledSubset {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub policy: LevelPolicy,
}

pub fn compile(d: &dr::DestinationRule) -> Result<CompiledRule> {
    let ns = d.metadata.namespace_or_default().to_owned();
    if d.spec.host.trim().is_empty() {
        return Err(err("spec.host", "host is required"));
    }
    let policy = level(d.spec.traffic_policy.as_ref(), "spec.trafficPolicy")?;
    let mut subsets: Vec<CompiledSubset> = Vec::new();
    for (i, s) in d.spec.subsets.iter().enumerate() {
        let p = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            return Err(err(format!("{p}.name"), "subset name is required"));
        }
        if subsets.iter().any(|o| o.name == s.name) {
            return Err(err(
                format!("{p}.name"),
                format!("subset `{}` is defined twice", s.name),
            ));
        }
        let policy = level(s.traffic_policy.as_ref(), &format!("{p}.trafficPolicy"))?;
        subsets.push(CompiledSubset {
            name: s.name.clone(),
            labels: s.labels.clone(),
            policy,
        });
    }
    Ok(CompiledRule {
        object: ObjectRef::new("DestinationRule", Some(&ns), &d.metadata.name),
        host: qualify(&d.spec.host, &ns),
        namespace: ns,
        export_to: d.spec.export_to.clone(),
        policy,
        subsets,
    })
}

fn level(tp: Option<&dr::TrafficPolicy>, path: &str) -> Result<LevelPolicy> {
    let Some(tp) = tp else {
        return Ok(LevelPolicy::default());
    };
    let top = parts(
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        path,
    )?;
    let mut ports = Vec::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let p = format!("{path}.portLevelSettings[{i}]");
        let number = pl.port.as_ref().map(|s| s.number).unwrap_or(0);
        let number = u16::try_from(number)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| err(format!("{p}.port.number"), format!("port {number} is outside 1–65535")))?;
        ports.push((
            number,
            parts(
                pl.load_balancer.as_ref(),
                pl.connection_pool.as_ref(),
                pl.outlier_detection.as_ref(),
                &p,
            )?,
        ));
    }
    Ok(LevelPolicy { parts: top, ports })
}

fn parts(
    lb: Option<&dr::LoadBalancerSettings>,
    pool: Option<&dr::ConnectionPoolSettings>,
    od: Option<&dr::OutlierDetection>,
    path: &str,
) -> Result<PolicyParts> {
    Ok(PolicyParts {
        lb: lb
            .map(|l| load_balancer(l, &format!("{path}.loadBalancer")))
            .transpose()?,
        pool: pool
            .map(|c| connection_pool(c, &format!("{path}.connectionPool")))
            .transpose()?,
        outlier: od
            .map(|o| outlier(o, &format!("{path}.outlierDetection")))
            .transpose()?,
    })
}

fn load_balancer(l: &dr::LoadBalancerSettings, path: &str) -> Result<LbPolicy> {
    match (&l.simple, &l.consistent_hash) {
        (Some(_), Some(_)) => Err(err(path, "set only one of simple, consistentHash")),
        (Some(s), None) => match s.as_str() {
            "UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" => Ok(LbPolicy::LeastRequest),
            "ROUND_ROBIN" => Ok(LbPolicy::RoundRobin),
            "RANDOM" => Ok(LbPolicy::Random),
            "PASSTHROUGH" => Ok(LbPolicy::Passthrough),
            other => Err(err(
                format!("{path}.simple"),
                format!(
                    "unknown load balancer `{other}`; use ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM or PASSTHROUGH"
                ),
            )),
        },
        (None, Some(c)) => {
            let path = format!("{path}.consistentHash");
            Ok(LbPolicy::ConsistentHash(
                consistent_hash(c, &path)?,
                hash_algorithm(c, &path)?,
            ))
        }
        (None, None) => Ok(LbPolicy::default()),
    }
}

fn consistent_hash(c: &dr::ConsistentHashLb, path: &str) -> Result<HashOn> {
    let mut found = Vec::new();
    if let Some(h) = &c.http_header_name {
        let name = HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
            err(
                format!("{path}.httpHeaderName"),
                format!("`{h}` is not a valid header name"),
            )
        })?;
        found.push(HashOn::Header(name));
    }
    if let Some(cookie) = &c.http_cookie {
        let ttl = cookie
            .ttl
            .as_deref()
            .map(|t| duration::parse(t).map_err(|m| err(format!("{path}.httpCookie.ttl"), m)))
            .transpose()?;
        found.push(HashOn::Cookie {
            name: cookie.name.clone(),
            path: cookie.path.clone(),
            ttl,
        });
    }
    if c.use_source_ip == Some(true) {
        found.push(HashOn::SourceIp);
    }
    if let Some(q) = &c.http_query_parameter_name {
        found.push(HashOn::QueryParameter(q.clone()));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(err(
            path,
            "set one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        )),
        _ => Err(err(
            path,
            "set only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName",
        )),
    }
}

/// `ringHash` / `maglev`, or Istio's default: a ring of the deprecated
/// `minimumRingSize` or 1024. Sizes Envoy would refuse are refused here.
fn hash_algorithm(c: &dr::ConsistentHashLb, path: &str) -> Result<HashAlgorithm> {
    let deprecated = c.minimum_ring_size.filter(|n| *n > 0);
    match (&c.ring_hash, &c.maglev, deprecated) {
        (Some(_), Some(_), _) => Err(err(path, "set only one of ringHash, maglev")),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => Err(err(
            format!("{path}.minimumRingSize"),
            "the deprecated minimumRingSize is ignored beside ringHash or maglev; set ringHash.minimumRingSize instead",
        )),
        (Some(r), None, None) => ring(r.minimum_ring_size, &format!("{path}.ringHash.minimumRingSize")),
        (None, Some(m), None) => maglev_table(m.table_size, &format!("{path}.maglev.tableSize")),
        (None, None, size) => ring(size, &format!("{path}.minimumRingSize")),
    }
}

fn ring(size: Option<u64>, path: &str) -> Result<HashAlgorithm> {
    match size {
        None | Some(0) => Ok(HashAlgorithm::default()),
        Some(n) if n > ring_hash::MAXIMUM_RING_SIZE => Err(err(
            path,
            format!("{n} exceeds the maximum ring size {}", ring_hash::MAXIMUM_RING_SIZE),
        )),
        Some(n) => Ok(HashAlgorithm::RingHash { minimum_ring_size: n }),
    }
}

fn maglev_table(size: Option<u64>, path: &str) -> Result<HashAlgorithm> {
    match size {
        None | Some(0) => Ok(HashAlgorithm::Maglev {
            table_size: maglev::DEFAULT_TABLE_SIZE,
        }),
        Some(n) if n > maglev::MAXIMUM_TABLE_SIZE => Err(err(
            path,
            format!(
                "{n} exceeds the maximum Maglev table size {}",
                maglev::MAXIMUM_TABLE_SIZE
            ),
        )),
        Some(n) if !maglev::is_prime(n) => Err(err(
            path,
            format!("{n} is not a prime number; the Maglev table size must be prime (default 65537)"),
        )),
        Some(n) => Ok(HashAlgorithm::Maglev { table_size: n }),
    }
}

/// Proto integers: 0 means "unset" (the default applies); negative is an error.
fn limit(v: Option<i64>, default: usize, path: &str) -> Result<usize> {
    match v {
        None | Some(0) => Ok(default),
        Some(n) if n < 0 => Err(err(path, format!("{n} must not be negative"))),
        Some(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

fn dur(v: &Option<String>, default: std::time::Duration, path: &str) -> Result<std::time::Duration> {
    v.as_deref()
        .map_or(Ok(default), |d| duration::parse(d).map_err(|m| err(path, m)))
}

fn connection_pool(c: &dr::ConnectionPoolSettings, path: &str) -> Result<PoolLimits> {
    let d = PoolLimits::default();
    let tcp = c.tcp.clone().unwrap_or_default();
    let http = c.http.clone().unwrap_or_default();
    let (tp, hp) = (format!("{path}.tcp"), format!("{path}.http"));
    let per_conn = limit(
        http.max_requests_per_connection,
        0,
        &format!("{hp}.maxRequestsPerConnection"),
    )?;
    let idle = http.idle_timeout.as_ref().or(tcp.idle_timeout.as_ref()).cloned();
    Ok(PoolLimits {
        max_connections: limit(tcp.max_connections, d.max_connections, &format!("{tp}.maxConnections"))?,
        connect_timeout: dur(&tcp.connect_timeout, d.connect_timeout, &format!("{tp}.connectTimeout"))?,
        max_pending: limit(
            http.http1_max_pending_requests,
            d.max_pending,
            &format!("{hp}.http1MaxPendingRequests"),
        )?,
        max_requests: limit(
            http.http2_max_requests,
            d.max_requests,
            &format!("{hp}.http2MaxRequests"),
        )?,
        max_requests_per_connection: (per_conn > 0).then_some(per_conn as u64),
        max_retries: limit(http.max_retries, d.max_retries, &format!("{hp}.maxRetries"))?,
        idle_timeout: dur(&idle, d.idle_timeout, &format!("{hp}.idleTimeout"))?,
    })
}

fn outlier(o: &dr::OutlierDetection, path: &str) -> Result<OutlierPolicy> {
    let d = OutlierPolicy::default();
    let count = |v: Option<i64>, field: &str| -> Result<Option<u32>> {
        match v {
            None => Ok(None),
            Some(n) if n < 0 => Err(err(format!("{path}.{field}"), format!("{n} must not be negative"))),
            Some(0) => Ok(Some(0)),
            Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        }
    };
    let c5xx = count(o.consecutive5xx_errors, "consecutive5xxErrors")?;
    let gw = count(o.consecutive_gateway_errors, "consecutiveGatewayErrors")?
        .or(count(o.consecutive_errors, "consecutiveErrors")?);
    let pct = |v: Option<i64>, field: &str, default: u32| -> Result<u32> {
        match v {
            None => Ok(default),
            Some(n) if (0..=100).contains(&n) => Ok(n as u32),
            Some(n) => Err(err(
                format!("{path}.{field}"),
                format!("percentage {n} is outside 0–100"),
            )),
        }
    };
    pct(o.min_health_percent, "minHealthPercent", 0)?;
    let interval = dur(&o.interval, d.interval, &format!("{path}.interval"))?;
    if interval.is_zero() {
        return Err(err(format!("{path}.interval"), "interval must be greater than 0"));
    }
    Ok(OutlierPolicy {
        // An explicit 0 disables a detector; absent 5xx keeps Istio's default of 5.
        consecutive_5xx: match c5xx {
            Some(0) => None,
            Some(n) => Some(n),
            None => d.consecutive_5xx,
        },
        consecutive_gateway: gw.filter(|n| *n > 0),
        interval,
        base_ejection: dur(
            &o.base_ejection_time,
            d.base_ejection,
            &format!("{path}.baseEjectionTime"),
        )?,
        max_ejection_percent: pct(o.max_ejection_percent, "maxEjectionPercent", d.max_ejection_percent)?,
    })
}

#[cfg(test)]
mod tests {
    use mesh_common::model::{ConfigError, Resource, parse_documents};

    use super::*;

    fn check(spec: &str) -> std::result::Result<CompiledRule, String> {
        let text = format!(
            "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: bookinfo}}\nspec:\n  host: reviews\n{spec}"
        );
        let doc = parse_documents("t.yaml", &text).remove(0).map_err(|e| e.to_string())?;
        let Resource::DestinationRule(d) = &doc else { panic!() };
        compile(d).map_err(|e| {
            ConfigError::Invalid {
                object: doc.object_ref(),
                error: e,
            }
            .to_string()
        })
    }

    #[test]
    fn layered_policy_compiles() {
        let r = check("  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN}\n    connectionPool: {tcp: {maxConnections: 1, connectTimeout: 100ms}, http: {http1MaxPendingRequests: 1}}\n    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - name: v2\n    labels: {version: v2}\n    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n").unwrap();
        assert_eq!(r.host, "reviews.bookinfo.svc.cluster.local");
        let mut eff = PolicyParts::default();
        r.policy.apply_to(&mut eff, 9080);
        r.subsets[1].policy.apply_to(&mut eff, 9080);
        assert_eq!(
            eff.lb,
            Some(LbPolicy::ConsistentHash(
                HashOn::Header(HeaderName::from_static("x-user")),
                HashAlgorithm::RingHash {
                    minimum_ring_size: 1024
                }
            ))
        );
        let pool = eff.pool.unwrap();
        assert_eq!((pool.max_connections, pool.max_pending), (1, 1));
        assert_eq!(eff.outlier.unwrap().consecutive_5xx, Some(2));
    }

    #[test]
    fn consistent_hash_algorithms_and_istio_defaults() {
        let lb = |spec: &str| {
            let r = check(&format!(
                "  trafficPolicy: {{loadBalancer: {{consistentHash: {{useSourceIp: true{spec}}}}}}}\n"
            ))
            .unwrap();
            match r.policy.parts.lb {
                Some(LbPolicy::ConsistentHash(HashOn::SourceIp, algorithm)) => algorithm,
                other => panic!("{other:?}"),
            }
        };
        let ring = |n| HashAlgorithm::RingHash { minimum_ring_size: n };
        assert_eq!(lb(""), ring(1024));
        assert_eq!(lb(", minimumRingSize: 64"), ring(64));
        assert_eq!(lb(", ringHash: {}"), ring(1024));
        assert_eq!(lb(", ringHash: {minimumRingSize: 4096}"), ring(4096));
        assert_eq!(lb(", maglev: {}"), HashAlgorithm::Maglev { table_size: 65537 });
        assert_eq!(
            lb(", maglev: {tableSize: 251}"),
            HashAlgorithm::Maglev { table_size: 251 }
        );
    }

    #[test]
    fn bad_input_names_object_and_path() {
        let table = [
            (
                "  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.loadBalancer.simple: unknown load balancer `FASTEST`",
            ),
            (
                "  trafficPolicy: {connectionPool: {tcp: {connectTimeout: -3s}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration `-3s` must not be negative",
            ),
            (
                "  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 must not be negative",
            ),
            (
                "  subsets:\n  - {name: v1, trafficPolicy: {outlierDetection: {maxEjectionPercent: 140}}}\n",
                "DestinationRule bookinfo/reviews: spec.subsets[0].trafficPolicy.outlierDetection.maxEjectionPercent: percentage 140 is outside 0–100",
            ),
            (
                "  subsets:\n  - {name: v1}\n  - {name: v1}\n",
                "DestinationRule bookinfo/reviews: spec.subsets[1].name: subset `v1` is defined twice",
            ),
            (
                "  trafficPolicy: {loadBalancer: {consistentHash: {}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.loadBalancer.consistentHash: set one of",
            ),
            (
                "  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65536}}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 65536 is not a prime number",
            ),
            (
                "  subsets:\n  - {name: v1, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000023}}}}}\n",
                "DestinationRule bookinfo/reviews: spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 5000023 exceeds the maximum Maglev table size 5000011",
            ),
            (
                "  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 9000000}}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize: 9000000 exceeds the maximum ring size 8388608",
            ),
            (
                "  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {}, maglev: {}}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.loadBalancer.consistentHash: set only one of ringHash, maglev",
            ),
            (
                "  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 64, maglev: {}}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: the deprecated minimumRingSize is ignored",
            ),
            (
                "  trafficPolicy: {outlierDetection: {interval: 1 second}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.outlierDetection.interval: cannot parse duration `1 second`",
            ),
            (
                "  trafficPolicy: {connectionPool: {http: {maxPending: 1}}}\n",
                "DestinationRule bookinfo/reviews: spec.trafficPolicy.connectionPool.http.maxPending: unknown field `maxPending`",
            ),
        ];
        for (spec, want) in table {
            let got = check(spec).map(|_| ()).unwrap_err();
            assert!(got.starts_with(want), "\n got: {got}\nwant: {want}");
        }
    }
}
