//! Effective PeerAuthentication mode for a workload and port, resolved like Istio:
//! workload-scoped policy (port-level first) over namespace policy over mesh policy;
//! UNSET inherits from the next scope up, and the default is PERMISSIVE.

use std::sync::Arc;

use mesh_common::model::Resource;
use mesh_common::model::istio::security::{MtlsMode, PeerAuthnPolicy, PeerAuthnScope};
use mesh_common::model::store::ConfigStore;
use serde::Serialize;

use crate::state::Workload;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Plaintext on 15006 is forwarded.
    Permissive,
    /// Only HBONE (mutual TLS) is accepted.
    Strict,
}

/// All valid PeerAuthentications, ordered by object name so a tie resolves the same way on every node.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerAuthn {
    policies: Vec<Arc<PeerAuthnPolicy>>,
}

impl PeerAuthn {
    pub fn from_store(store: &ConfigStore) -> Self {
        let mut policies: Vec<Arc<PeerAuthnPolicy>> = store
            .iter()
            .filter_map(|r| match r {
                // Decoding already validated; an error here would be a bug, so skip the object.
                Resource::PeerAuthentication(pa) => pa.validate().ok().map(Arc::new),
                _ => None,
            })
            .collect();
        policies.sort_by(|a, b| a.object.cmp(&b.object));
        Self { policies }
    }

    pub fn mode(&self, w: &Workload, port: u16) -> Mode {
        let workload = self.policies.iter().find(|p| match &p.scope {
            PeerAuthnScope::Workload {
                namespace,
                match_labels,
            } => *namespace == w.namespace && w.has_labels(match_labels),
            _ => false,
        });
        let namespace = self
            .policies
            .iter()
            .find(|p| matches!(&p.scope, PeerAuthnScope::Namespace(ns) if *ns == w.namespace));
        let mesh = self.policies.iter().find(|p| p.scope == PeerAuthnScope::Mesh);
        let chain = [
            workload.and_then(|p| p.ports.get(&port)).copied(),
            workload.map(|p| p.mode),
            namespace.map(|p| p.mode),
            mesh.map(|p| p.mode),
        ];
        match chain.into_iter().flatten().find(|m| *m != MtlsMode::Unset) {
            Some(MtlsMode::Strict) => Mode::Strict,
            _ => Mode::Permissive,
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_common::model::parse_documents;

    use super::*;

    fn policies(yaml: &str) -> PeerAuthn {
        let mut store = ConfigStore::default();
        let report = store.apply_source("t", parse_documents("t", yaml), &|_| Ok(()));
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        PeerAuthn::from_store(&store)
    }

    fn workload(ns: &str, app: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            name: format!("{app}-0"),
            service_account: "default".into(),
            node: "n1".into(),
            ip: "198.18.1.2".parse().unwrap(),
            labels: [("app".to_owned(), app.to_owned())].into(),
            ready: true,
            enrolled: true,
            proxy: false,
            trust_domain: "cluster.local".into(),
            netns: None,
            cgroup: None,
            uid: None,
            named_ports: Vec::new(),
        }
    }

    fn pa(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn default_is_permissive() {
        assert_eq!(policies("").mode(&workload("shop", "web"), 80), Mode::Permissive);
    }

    #[test]
    fn scopes_nest_and_unset_inherits() {
        let yaml = [
            pa("istio-system", "mesh", "{mtls: {mode: STRICT}}"),
            pa("legacy", "ns", "{mtls: {mode: PERMISSIVE}}"),
            pa("legacy", "db", "{selector: {matchLabels: {app: db}}, mtls: {mode: UNSET}, portLevelMtls: {5432: {mode: STRICT}}}"),
            pa("shop", "web", "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {9090: {mode: STRICT}}}"),
        ]
        .concat();
        let p = policies(&yaml);
        assert_eq!(p.mode(&workload("other", "x"), 80), Mode::Strict, "mesh-wide");
        assert_eq!(
            p.mode(&workload("legacy", "x"), 80),
            Mode::Permissive,
            "namespace over mesh"
        );
        assert_eq!(
            p.mode(&workload("legacy", "db"), 80),
            Mode::Permissive,
            "UNSET inherits the namespace"
        );
        assert_eq!(p.mode(&workload("legacy", "db"), 5432), Mode::Strict, "port level");
        assert_eq!(
            p.mode(&workload("shop", "web"), 80),
            Mode::Permissive,
            "workload over mesh"
        );
        assert_eq!(p.mode(&workload("shop", "web"), 9090), Mode::Strict);
    }
}
