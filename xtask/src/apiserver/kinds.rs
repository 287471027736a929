//! The kinds the test API server serves: each with its group, version, plural and scope,
//! as the discovery endpoints announce them.

/// One served kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

const fn core(kind: &'static str, plural: &'static str, namespaced: bool) -> Kind {
    Kind {
        group: "",
        version: "v1",
        kind,
        plural,
        namespaced,
    }
}

const fn grouped(group: &'static str, version: &'static str, kind: &'static str, plural: &'static str) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced: true,
    }
}

/// Istio's CRDs at v1 only (the newest; the mesh picks it by discovery).
pub const KINDS: &[Kind] = &[
    core("Namespace", "namespaces", false),
    core("Node", "nodes", false),
    core("Pod", "pods", true),
    core("Service", "services", true),
    core("ServiceAccount", "serviceaccounts", true),
    core("Secret", "secrets", true),
    core("ConfigMap", "configmaps", true),
    grouped("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    grouped("events.k8s.io", "v1", "Event", "events"),
    grouped("networking.istio.io", "v1", "VirtualService", "virtualservices"),
    grouped("networking.istio.io", "v1", "DestinationRule", "destinationrules"),
    grouped("networking.istio.io", "v1", "Gateway", "gateways"),
    grouped("security.istio.io", "v1", "PeerAuthentication", "peerauthentications"),
    grouped(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    grouped(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
    ),
    grouped("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
];

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// By `apiVersion` and `kind` as written in YAML. Istio objects written at an older
    /// version are served at v1 (like the API server's conversion).
    pub fn of(api_version: &str, kind: &str) -> Option<&'static Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        KINDS.iter().find(|k| k.kind == kind && k.group == group)
    }

    pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
        KINDS
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// Every group (other than core) with its one version.
    pub fn groups() -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<(&str, &str)> = KINDS
            .iter()
            .filter(|k| !k.group.is_empty())
            .map(|k| (k.group, k.version))
            .collect();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_by_yaml_type_and_by_path() {
        let vs = Kind::of("networking.istio.io/v1beta1", "VirtualService").unwrap();
        assert_eq!(vs.api_version(), "networking.istio.io/v1");
        assert_eq!(Kind::of("v1", "Pod").unwrap().plural, "pods");
        assert_eq!(Kind::by_plural("", "v1", "namespaces").unwrap().kind, "Namespace");
        assert!(Kind::of("v1", "Frobnicator").is_none());
        assert!(Kind::groups().contains(&("security.istio.io", "v1")));
    }
}
