//! Configuration: Istio objects validated once into internal types, published as
//! immutable [`Snapshot`]s swapped atomically on reload. [`Config`] is the waypoint's
//! and gateway's [`Sink`] of mesh-common's source runner ([`feed`] for a directory,
//! [`crate::kubernetes`] for the API server).

pub mod destination_rule;
pub mod duration;
pub mod feed;
pub mod hosts;
pub mod http_route;
pub mod route_status;
pub mod snapshot;
pub mod virtual_service;

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use mesh_common::model::store::ConfigStore;
use mesh_common::model::{ConfigError, Resource};
use mesh_common::readiness::{Condition, Readiness};
use mesh_common::source::runner::Sink;
use mesh_common::source::status::SourceStatus;
use tokio::sync::watch;

pub use snapshot::Snapshot;

use crate::authn::attach::{AuthnPolicies, ProxyScope};
use crate::authn::jwks::JwksCache;
use crate::endpoint::connector::Connector;
use crate::gateway::{GatewayIdentity, GatewayState};
use mesh_common::model::istio::security::ROOT_NAMESPACE;

/// Istio's waypoint name when none is given (`istioctl waypoint apply` default).
pub const DEFAULT_WAYPOINT_NAME: &str = "waypoint";
/// The pod label naming the Gateway a waypoint or gateway pod implements.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Semantic validation on top of decoding: a VirtualService or DestinationRule that
/// does not compile is rejected here, alone, and keeps its last good version.
pub fn validate(r: &Resource) -> Result<(), ConfigError> {
    let invalid = |error| ConfigError::Invalid {
        object: r.object_ref(),
        error,
    };
    match r {
        Resource::VirtualService(v) => virtual_service::compile(v).map(drop).map_err(invalid),
        Resource::DestinationRule(d) => destination_rule::compile(d).map(drop).map_err(invalid),
        Resource::HttpRoute(h) => http_route::compile(h).map(drop).map_err(invalid),
        Resource::Secret(s) => crate::gateway::secret::validate(s).map_err(invalid),
        _ => Ok(()),
    }
}

/// The live configuration of one waypoint.
pub struct Config {
    current: ArcSwap<Snapshot>,
    namespace: String,
    connector: Arc<dyn Connector>,
    /// Ingress gateway mode: whose Gateways to serve, and the listeners' state.
    gateway: Option<GatewayState>,
    /// The generation of every published snapshot (listeners follow it).
    changes: watch::Sender<u64>,
    /// What policy attachment sees of this proxy (waypoint name, or gateway labels).
    scope: ProxyScope,
    /// `jwksUri` keys, shared by every snapshot.
    jwks: Arc<JwksCache>,
    /// Where mesh-wide AuthorizationPolicy / RequestAuthentication live (`--root-namespace`).
    root_namespace: String,
    /// The `config` readiness line (and the proxy's other conditions, see [`crate::readiness`]).
    readiness: Readiness,
    /// What the configuration is read from, for the readiness detail.
    source: OnceLock<String>,
}

impl Config {
    pub fn new(namespace: &str, connector: Arc<dyn Connector>) -> Arc<Self> {
        Self::for_waypoint(namespace, DEFAULT_WAYPOINT_NAME, ROOT_NAMESPACE, connector)
    }

    /// A waypoint named `name` (its Gateway's name, what `targetRefs` kind Gateway names).
    pub fn for_waypoint(namespace: &str, name: &str, root_namespace: &str, connector: Arc<dyn Connector>) -> Arc<Self> {
        let scope = ProxyScope::Waypoint {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        };
        Self::with_mode(namespace, root_namespace, connector, None, scope)
    }

    /// Ingress gateway mode: snapshots also carry the plan of the Gateways selecting `identity`.
    pub fn for_gateway(identity: GatewayIdentity, root_namespace: &str, connector: Arc<dyn Connector>) -> Arc<Self> {
        let namespace = identity.namespace.clone();
        let scope = ProxyScope::Gateway {
            name: identity.labels.get(GATEWAY_NAME_LABEL).cloned(),
            namespace: namespace.clone(),
            labels: identity.labels.clone(),
        };
        Self::with_mode(
            &namespace,
            root_namespace,
            connector,
            Some(GatewayState {
                identity,
                listeners: Default::default(),
            }),
            scope,
        )
    }

    fn with_mode(
        namespace: &str,
        root_namespace: &str,
        connector: Arc<dyn Connector>,
        gateway: Option<GatewayState>,
        scope: ProxyScope,
    ) -> Arc<Self> {
        let mut empty = Snapshot::build(&[], namespace, Vec::new(), 0, None, connector.clone());
        if let Some(g) = &gateway {
            crate::gateway::attach(&mut empty, &[], &g.identity, None);
        }
        Arc::new_cyclic(|me: &std::sync::Weak<Self>| Self {
            current: ArcSwap::from_pointee(empty),
            namespace: namespace.to_owned(),
            connector,
            gateway,
            changes: watch::channel(0).0,
            scope,
            jwks: JwksCache::new(service_resolver(me.clone())),
            root_namespace: root_namespace.to_owned(),
            readiness: {
                let r = Readiness::default();
                r.set(
                    "config",
                    Condition::Ok("no configuration source: empty configuration".into()),
                );
                r
            },
            source: OnceLock::new(),
        })
    }

    /// Announces the source about to feed this configuration (`what`, as the readiness
    /// detail names it): not ready until it has been read completely once.
    pub fn follow_source(&self, what: String) {
        self.readiness.set(
            "config",
            Condition::Pending(format!("waiting for the first complete list from {what}")),
        );
        let _ = self.source.set(what);
    }

    /// This proxy's readiness conditions.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    pub fn scope(&self) -> &ProxyScope {
        &self.scope
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    pub fn gateway_state(&self) -> Option<&GatewayState> {
        self.gateway.as_ref()
    }

    /// Notified with the generation of each snapshot published from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The snapshot a request should use from start to finish.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}

impl Sink for Config {
    /// Publishes a snapshot of `store`.
    fn publish(&self, store: &ConfigStore) {
        let resources: Vec<Resource> = store.iter().cloned().collect();
        let rejected = store.errors().flat_map(|(_, lines)| lines.iter().cloned()).collect();
        let prev = self.current.load();
        let mut snap = Snapshot::build(
            &resources,
            &self.namespace,
            rejected,
            prev.generation + 1,
            Some(&prev),
            self.connector.clone(),
        );
        if let Some(g) = &self.gateway {
            crate::gateway::attach(&mut snap, &resources, &g.identity, prev.gateway.as_deref());
        }
        let authn = AuthnPolicies::build(&resources, &self.root_namespace);
        // `check` publishes without a runtime: it fetches nothing.
        if tokio::runtime::Handle::try_current().is_ok() {
            self.jwks.track(&authn.jwks_uris());
        }
        snap.authn = Arc::new(authn);
        let authz = mesh_common::authz::PolicySet::from_store(store, &self.root_namespace);
        for w in crate::authz::warnings::warnings(&authz, &snap.discovery) {
            tracing::warn!("{w}");
            snap.warnings.push(w);
        }
        snap.authz = Arc::new(authz);
        tracing::info!(
            generation = snap.generation,
            objects = resources.len(),
            rejected = snap.rejected.len(),
            warnings = snap.warnings.len(),
            "configuration applied"
        );
        let generation = snap.generation;
        self.current.store(Arc::new(snap));
        self.changes.send_replace(generation);
    }

    fn status(&self, status: &SourceStatus, objects: usize) {
        let what = self.source.get().map_or("the configuration source", String::as_str);
        self.readiness.set("config", status.condition(objects, what));
    }
}

/// `jwksUri` hosts that name a Service of this configuration (or its ClusterIP) go to
/// one of its ready endpoints at the port's `targetPort`, as cluster DNS plus the node
/// daemon would deliver them.
fn service_resolver(config: std::sync::Weak<Config>) -> crate::authn::jwks::Resolver {
    Box::new(move |host, port| {
        let snap = config.upgrade()?.load();
        let fqdn = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => snap.discovery.by_cluster_ip.get(&ip)?.clone(),
            Err(_) => hosts::canonical_request_host(host, &snap.namespace),
        };
        let svc = snap.service(&fqdn)?;
        let target = &svc.port(Some(port), port)?.target_port;
        // A named targetPort resolves per pod: the first pod that has it.
        svc.pods
            .iter()
            .find_map(|pod| Some(std::net::SocketAddr::new(pod.ip.into(), pod.port(target)?)))
    })
}
