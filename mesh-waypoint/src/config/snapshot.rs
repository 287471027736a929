//! One immutable, fully validated view of the configuration. Requests load the
//! current snapshot once and keep it until they finish, so a reload never changes
//! the rules under an in-flight request. Backend state (connection pools, outlier
//! ejections) carries over from the previous snapshot when the policy is unchanged.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_common::model::Resource;

use super::destination_rule::{self, CompiledRule};
use super::hosts::{HostPattern, canonical_request_host, qualify};
use super::{http_route, virtual_service};
use crate::backend::policy::{Policy, PolicyParts};
use crate::backend::pool::Pool;
use crate::backend::{Backend, BackendKey};
use crate::discovery::{self, Discovery, ServiceInfo};
use crate::endpoint::Endpoint;
use crate::endpoint::connector::Connector;
use crate::route::{DestinationRef, RouteTable};

pub struct Snapshot {
    pub generation: u64,
    pub namespace: String,
    pub discovery: Discovery,
    /// Visible VirtualServices, in name order, then one table per Service that
    /// HTTPRoutes attach to (object kind `HTTPRoute`, see [`Snapshot::table_for`]).
    pub tables: Vec<Arc<RouteTable>>,
    /// HTTPRoutes compiled into `tables` (`HTTPRoute ns/name`), in name order.
    pub http_routes: Vec<String>,
    /// Gateway API conditions of each compiled HTTPRoute, per parentRef.
    pub http_route_status: Vec<super::route_status::RouteStatus>,
    /// DestinationRule in force per host.
    pub rules: BTreeMap<String, CompiledRule>,
    pub backends: HashMap<BackendKey, Arc<Backend>>,
    /// Dangling references (undefined subsets, unknown hosts), one line each.
    pub warnings: Vec<String>,
    /// Objects rejected by validation (they keep their last good version, if any).
    pub rejected: Vec<String>,
    /// Ingress gateway mode only: the ports, servers and certificates in force.
    pub gateway: Option<Arc<crate::gateway::Plan>>,
    /// RequestAuthentications (JWT rules), attached per request.
    pub authn: Arc<crate::authn::attach::AuthnPolicies>,
    /// AuthorizationPolicies, attached per request (see `authz`).
    pub authz: Arc<mesh_common::authz::PolicySet>,
}

/// Why no backend serves a destination.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("host `{0}` is not a known Service")]
    UnknownHost(String),
    #[error("Service `{host}` has no port {port}")]
    NoPort { host: String, port: u16 },
    #[error("subset `{subset}` of `{host}` is not defined by any DestinationRule")]
    UndefinedSubset { host: String, subset: String },
}

impl Snapshot {
    pub fn empty(namespace: &str) -> Self {
        Self::build(
            &[],
            namespace,
            Vec::new(),
            0,
            None,
            Arc::new(crate::endpoint::connector::PlainTcp),
        )
    }

    pub fn build(
        resources: &[Resource],
        namespace: &str,
        rejected: Vec<String>,
        generation: u64,
        prev: Option<&Snapshot>,
        connector: Arc<dyn Connector>,
    ) -> Self {
        let discovery = discovery::discover(resources);
        let mut tables: Vec<Arc<RouteTable>> = Vec::new();
        let mut rules: BTreeMap<String, CompiledRule> = BTreeMap::new();
        let mut warnings = Vec::new();
        let mut http_routes = Vec::new();
        let mut http_route_status = Vec::new();
        for r in resources {
            let ignored = mesh_common::model::istio::unsupported::fields(r);
            warnings.extend(ignored.iter().map(ToString::to_string));
            match r {
                Resource::VirtualService(v) => match virtual_service::compile(v) {
                    Ok(t) if t.visible_from(namespace) => tables.push(Arc::new(t)),
                    Ok(_) => {}
                    Err(e) => warnings.push(format!("{}: {e}", r.object_ref())),
                },
                Resource::DestinationRule(d) => match destination_rule::compile(d) {
                    Ok(c) => choose_rule(&mut rules, c, namespace),
                    Err(e) => warnings.push(format!("{}: {e}", r.object_ref())),
                },
                Resource::HttpRoute(h) => match http_route::compile(h) {
                    Ok(c) => {
                        http_routes.push(c);
                        let known = |fqdn: &str| discovery.services.contains_key(fqdn);
                        http_route_status.push(super::route_status::compute(h, known));
                    }
                    Err(e) => warnings.push(format!("{}: {e}", r.object_ref())),
                },
                _ => {}
            }
        }
        let route_tables = http_route::tables(&http_routes);
        let http_routes = http_routes.iter().map(|r| r.object.to_string()).collect();
        warnings.extend(shadowed_virtual_services(&tables, &route_tables));
        tables.extend(route_tables.into_iter().map(Arc::new));
        let backends = build_backends(&discovery, &rules, prev, &connector);
        let mut snap = Snapshot {
            generation,
            namespace: namespace.to_owned(),
            discovery,
            tables,
            http_routes,
            http_route_status,
            rules,
            backends,
            warnings,
            rejected,
            gateway: None,
            authn: Default::default(),
            authz: Default::default(),
        };
        snap.warnings.extend(dangling_references(resources, &snap));
        snap.warnings.extend(dangling_http_route_references(resources, &snap));
        for w in &snap.warnings {
            tracing::warn!("{w}");
        }
        snap
    }

    /// The client at `ip` for route matches: its pod's labels and namespace when it is
    /// a known pod.
    pub fn source(&self, ip: IpAddr) -> crate::route::Source {
        match self.discovery.pods_by_ip.get(&ip) {
            Some(p) => crate::route::Source {
                ip: Some(ip),
                labels: p.labels.clone(),
                namespace: Some(p.namespace.clone()),
            },
            None => crate::route::Source {
                ip: Some(ip),
                ..Default::default()
            },
        }
    }

    /// Whether `addr` is a Service VIP and port declared as non-HTTP
    /// ([`discovery::is_opaque`]): the waypoint relays such streams as TCP.
    pub fn is_opaque(&self, addr: SocketAddr) -> bool {
        self.discovery
            .by_cluster_ip
            .get(&addr.ip())
            .and_then(|fqdn| self.discovery.services.get(fqdn))
            .and_then(|svc| svc.ports.iter().find(|p| p.port == addr.port()))
            .is_some_and(|p| p.opaque)
    }

    /// Canonical FQDN for a request's host: a Service VIP maps to its Service.
    pub fn request_host(&self, host: &str) -> String {
        if let Ok(ip) = host.parse::<IpAddr>() {
            if let Some(fqdn) = self.discovery.by_cluster_ip.get(&ip) {
                return fqdn.clone();
            }
            return host.to_owned();
        }
        canonical_request_host(host, &self.namespace)
    }

    /// The VirtualService for `fqdn`: exact host first, then the longest wildcard.
    /// Only VirtualServices bound (at their top level or in a match block) to one of
    /// `gateways` — the ones this proxy serves — are considered. The HTTPRoutes of a
    /// Service win over a VirtualService naming the same host (Istio leaves mixing the
    /// two undefined; see docs/gateway-api.md).
    pub fn table_for(&self, fqdn: &str, gateways: &[String]) -> Option<&Arc<RouteTable>> {
        self.tables
            .iter()
            .filter(|t| t.serves_any(gateways))
            .filter_map(|t| {
                t.hosts
                    .iter()
                    .filter(|h| h.matches(fqdn))
                    .map(|h| h.specificity())
                    .max()
                    .map(|s| (s, t))
            })
            .max_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| is_http_route(a.1).cmp(&is_http_route(b.1)))
                    .then_with(|| b.1.object.cmp(&a.1.object))
            })
            .map(|(_, t)| t)
    }

    pub fn service(&self, fqdn: &str) -> Option<&ServiceInfo> {
        self.discovery.services.get(fqdn)
    }

    pub fn backend(&self, dest: &DestinationRef, request_port: u16) -> Result<Arc<Backend>, ResolveError> {
        let svc = self
            .service(&dest.host)
            .ok_or_else(|| ResolveError::UnknownHost(dest.host.clone()))?;
        let port = svc.port(dest.port, request_port).ok_or(ResolveError::NoPort {
            host: dest.host.clone(),
            port: dest.port.unwrap_or(request_port),
        })?;
        let key = BackendKey {
            host: dest.host.clone(),
            subset: dest.subset.clone(),
            port: port.port,
        };
        self.backends
            .get(&key)
            .cloned()
            .ok_or_else(|| ResolveError::UndefinedSubset {
                host: dest.host.clone(),
                subset: dest.subset.clone().unwrap_or_default(),
            })
    }
}

fn is_http_route(t: &RouteTable) -> bool {
    t.object.kind == "HTTPRoute"
}

/// A VirtualService host that HTTPRoutes also route: the VirtualService is not used for it.
fn shadowed_virtual_services(virtual_services: &[Arc<RouteTable>], route_tables: &[RouteTable]) -> Vec<String> {
    let mut out = Vec::new();
    for vs in virtual_services {
        for (i, h) in vs.hosts.iter().enumerate() {
            let HostPattern::Exact(host) = h else { continue };
            if route_tables.iter().any(|t| t.hosts.contains(h)) && vs.gateways.iter().any(|g| g == "mesh") {
                out.push(format!(
                    "{}: spec.hosts[{i}]: `{host}` is also routed by HTTPRoutes, which take precedence; this VirtualService is not used for it",
                    vs.object
                ));
            }
        }
    }
    out
}

/// Istio prefers the client's namespace, then the service's; then name order.
fn choose_rule(rules: &mut BTreeMap<String, CompiledRule>, c: CompiledRule, namespace: &str) {
    let rank = |r: &CompiledRule| {
        (
            r.namespace != namespace,
            !r.host.contains(&format!(".{}.", r.namespace)),
            r.object.clone(),
        )
    };
    match rules.get(&c.host) {
        Some(old) if rank(old) <= rank(&c) => {}
        _ => {
            rules.insert(c.host.clone(), c);
        }
    }
}

fn build_backends(
    d: &Discovery,
    rules: &BTreeMap<String, CompiledRule>,
    prev: Option<&Snapshot>,
    connector: &Arc<dyn Connector>,
) -> HashMap<BackendKey, Arc<Backend>> {
    let mut out = HashMap::new();
    for svc in d.services.values() {
        let rule = rules.get(&svc.fqdn);
        for port in &svc.ports {
            let mut variants = vec![(None, None)];
            if let Some(rule) = rule {
                variants.extend(rule.subsets.iter().map(|s| (Some(s.name.clone()), Some(s))));
            }
            for (subset, sub) in variants {
                let mut parts = PolicyParts::default();
                if let Some(rule) = rule {
                    rule.policy.apply_to(&mut parts, port.port);
                }
                if let Some(s) = sub {
                    s.policy.apply_to(&mut parts, port.port);
                }
                let empty = BTreeMap::new();
                let labels = sub.map_or(&empty, |s| &s.labels);
                let addrs: Vec<SocketAddr> = discovery::subset_pods(svc, labels)
                    .filter_map(|p| Some(SocketAddr::new(p.ip.into(), p.port(&port.target_port)?)))
                    .collect();
                let key = BackendKey {
                    host: svc.fqdn.clone(),
                    subset,
                    port: port.port,
                };
                let backend = carry_over(
                    key.clone(),
                    Policy::from(parts),
                    addrs,
                    prev.and_then(|p| p.backends.get(&key)),
                    connector,
                )
                .with_protocol(port.protocol);
                out.insert(key, Arc::new(backend));
            }
        }
    }
    out
}

fn carry_over(
    key: BackendKey,
    policy: Policy,
    addrs: Vec<SocketAddr>,
    old: Option<&Arc<Backend>>,
    connector: &Arc<dyn Connector>,
) -> Backend {
    let endpoints = addrs
        .into_iter()
        .map(|a| {
            old.and_then(|o| o.endpoints.iter().find(|e| e.addr == a).cloned())
                .unwrap_or_else(|| Arc::new(Endpoint::new(a)))
        })
        .collect();
    let pool = match old {
        Some(o) if o.pool.limits() == &policy.pool => o.pool.clone(),
        _ => Arc::new(Pool::new(policy.pool.clone(), connector.clone())),
    };
    Backend::new(key, policy, endpoints, pool, old.map(|o| o.as_ref()))
}

/// Route destinations naming a subset no DestinationRule defines, or a host that is
/// not a Service: flagged with the object and field path (requests to them get 503).
fn dangling_references(resources: &[Resource], snap: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for r in resources {
        let Resource::VirtualService(v) = r else { continue };
        let ns = v.metadata.namespace_or_default();
        let object = r.object_ref();
        for (i, http) in v.spec.http.iter().enumerate() {
            let dests = http
                .route
                .iter()
                .enumerate()
                .map(|(j, d)| (format!("spec.http[{i}].route[{j}].destination"), &d.destination));
            let mirror = http.mirror.iter().map(|m| (format!("spec.http[{i}].mirror"), m));
            for (path, d) in dests.chain(mirror) {
                let host = qualify(&d.host, ns);
                if snap.service(&host).is_none() {
                    out.push(format!(
                        "{object}: {path}.host: `{host}` is not a known Service; requests routed there get 503"
                    ));
                    continue;
                }
                if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) {
                    let defined = snap
                        .rules
                        .get(&host)
                        .is_some_and(|rule| rule.subsets.iter().any(|s| s.name == subset));
                    if !defined {
                        out.push(format!("{object}: {path}.subset: subset `{subset}` of `{host}` is not defined by any DestinationRule; requests routed there get 503"));
                    }
                }
            }
        }
    }
    out
}

/// HTTPRoute parents and backends naming no known Service (a parent that is not a
/// Service is reported as unsupported instead).
fn dangling_http_route_references(resources: &[Resource], snap: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for r in resources {
        let Resource::HttpRoute(h) = r else { continue };
        let ns = h.metadata.namespace_or_default();
        let object = r.object_ref();
        for (i, p) in h.spec.parent_refs.iter().enumerate().filter(|(_, p)| p.is_service()) {
            let host = qualify(&p.name, p.namespace.as_deref().unwrap_or(ns));
            if snap.service(&host).is_none() {
                out.push(format!(
                    "{object}: spec.parentRefs[{i}].name: `{host}` is not a known Service; the route applies to no traffic"
                ));
            }
        }
        for (i, rule) in h.spec.rules.iter().enumerate() {
            let mirrors = rule.filters.iter().enumerate().filter_map(|(j, f)| {
                let m = f.request_mirror.as_ref()?;
                Some((
                    format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef"),
                    m.backend_ref.name.clone(),
                ))
            });
            let backends = rule
                .backend_refs
                .iter()
                .enumerate()
                .map(|(j, b)| (format!("spec.rules[{i}].backendRefs[{j}]"), b.name.clone()));
            for (path, name) in backends.chain(mirrors) {
                let host = qualify(&name, ns);
                if snap.service(&host).is_none() {
                    out.push(format!(
                        "{object}: {path}.name: `{host}` is not a known Service; requests routed there get 503"
                    ));
                }
            }
        }
    }
    out
}
