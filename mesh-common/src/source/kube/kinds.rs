//! What the Kubernetes source watches, and which API version it reads each kind at.

use kube::core::ApiResource;

/// One watched kind. Core and Istio kinds go through the same `DynamicObject` path:
/// the model decodes them from YAML exactly like the directory source does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedKind {
    pub group: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Versions we accept, preferred first. Only Istio's CRDs have more than one; the
    /// API server converts between them, so one version shows every object.
    pub versions: &'static [&'static str],
}

const fn core(kind: &'static str, plural: &'static str) -> WatchedKind {
    WatchedKind {
        group: "",
        kind,
        plural,
        versions: &["v1"],
    }
}

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];
const GATEWAY_API: &[&str] = &["v1", "v1beta1"];

const fn istio(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
) -> WatchedKind {
    WatchedKind {
        group,
        kind,
        plural,
        versions,
    }
}

/// Everything the mesh reads from the API server (the RBAC in `deploy/` grants
/// list/watch on exactly these).
///
/// Every pod of the cluster, not only this node's: traffic to a pod on another node
/// must find that pod (its identity, its Services) to be tunnelled; an unknown pod IP
/// would leave as plain TCP. Endpoints come from Service selectors over these pods
/// (named `targetPort`s resolved per pod), so EndpointSlices are not watched: they would
/// repeat what the pods say and cost more memory than the trimmed pods themselves.
pub const WATCHED: &[WatchedKind] = &[
    core("Namespace", "namespaces"),
    core("Pod", "pods"),
    core("Service", "services"),
    core("ServiceAccount", "serviceaccounts"),
    istio("networking.istio.io", "VirtualService", "virtualservices", NETWORKING),
    istio("networking.istio.io", "DestinationRule", "destinationrules", NETWORKING),
    istio("networking.istio.io", "Gateway", "gateways", NETWORKING),
    istio(
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
        SECURITY,
    ),
    istio(
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        SECURITY,
    ),
    istio(
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
        SECURITY,
    ),
    istio("gateway.networking.k8s.io", "HTTPRoute", "httproutes", GATEWAY_API),
];

/// Secrets hold the ingress gateway's `credentialName` certificates. Not in [`WATCHED`]:
/// only the gateway reads them, and only in its own namespace (where Istio looks them
/// up, and all a namespace-scoped Role grants it); the node daemons and waypoints never
/// see a Secret. See [`watches`].
pub const SECRET: WatchedKind = core("Secret", "secrets");

/// One watch of the Kubernetes source: a kind, cluster-wide or in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub kind: WatchedKind,
    /// `None`: every namespace.
    pub namespace: Option<String>,
}

/// What a source watches: every kind of [`WATCHED`] cluster-wide, and with
/// `secrets_namespace` (the gateway's own namespace) the Secrets of that namespace.
pub fn watches(secrets_namespace: Option<&str>) -> Vec<Watch> {
    let all = WATCHED.iter().map(|k| Watch {
        kind: *k,
        namespace: None,
    });
    let secrets = secrets_namespace.map(|ns| Watch {
        kind: SECRET,
        namespace: Some(ns.to_owned()),
    });
    all.chain(secrets).collect()
}

impl WatchedKind {
    /// Needs API discovery to pick a version (a CRD group whose installed versions vary).
    pub fn needs_discovery(&self) -> bool {
        self.versions.len() > 1
    }

    /// The first of our versions that `served` (from `/apis/<group>`) lists.
    pub fn pick_version(&self, served: &[String]) -> Option<&'static str> {
        self.versions.iter().copied().find(|v| served.iter().any(|s| s == v))
    }

    pub fn api_resource(&self, version: &str) -> ApiResource {
        let api_version = if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        };
        ApiResource {
            group: self.group.to_owned(),
            version: version.to_owned(),
            api_version,
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_newest_served_version() {
        let vs = WATCHED.iter().find(|k| k.kind == "VirtualService").unwrap();
        let served = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(vs.pick_version(&served(&["v1alpha3", "v1beta1", "v1"])), Some("v1"));
        assert_eq!(vs.pick_version(&served(&["v1alpha3", "v1beta1"])), Some("v1beta1"));
        assert_eq!(vs.pick_version(&served(&["v2"])), None);
        assert_eq!(vs.api_resource("v1beta1").api_version, "networking.istio.io/v1beta1");
    }

    #[test]
    fn secrets_only_for_the_gateway_and_only_in_its_namespace() {
        let secrets = |w: &[Watch]| -> Vec<Option<String>> {
            w.iter()
                .filter(|w| w.kind.kind == "Secret")
                .map(|w| w.namespace.clone())
                .collect()
        };
        let node = watches(None);
        assert_eq!(node.len(), WATCHED.len());
        assert!(
            secrets(&node).is_empty(),
            "the node daemon and waypoints never watch Secrets"
        );
        assert!(node.iter().all(|w| w.namespace.is_none()));
        let gateway = watches(Some("istio-system"));
        assert_eq!(secrets(&gateway), vec![Some("istio-system".to_owned())]);
        assert_eq!(gateway.len(), WATCHED.len() + 1);
    }
}
