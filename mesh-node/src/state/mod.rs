//! The daemon's view of the mesh: the shared cluster view ([`ClusterView`], kept current
//! change by change) plus what only the node daemon reads (its node, PeerAuthentication,
//! AuthorizationPolicies), published as one immutable [`MeshState`] through a `watch`
//! channel.

use std::net::Ipv4Addr;
use std::sync::Arc;

use mesh_common::authz::PolicySet;
use mesh_common::model::store::{Changes, ConfigStore};
pub use mesh_common::view::{ClusterView, ServiceEntry, Workload};
use serde::Serialize;

/// What a daemon's view depends on besides the store (its flags).
#[derive(Clone, Debug)]
pub struct StateParams {
    /// The node this daemon serves.
    pub node: String,
    pub trust_domain: String,
    /// Istio's root namespace: its policies apply mesh-wide (`--root-namespace`).
    pub root_namespace: String,
}

impl StateParams {
    /// Defaults as the flags have them.
    #[cfg(test)]
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            trust_domain: "cluster.local".to_owned(),
            root_namespace: mesh_common::model::istio::security::ROOT_NAMESPACE.to_owned(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct MeshState {
    /// The node this daemon serves.
    pub node: String,
    pub trust_domain: String,
    pub view: ClusterView,
    /// Store generation this view was built from.
    pub generation: u64,
    /// Objects currently rejected (they keep their last good version), one line each.
    pub config_errors: Vec<String>,
    /// PeerAuthentication policies in force.
    pub peer_authn: Arc<crate::policy::PeerAuthn>,
    /// AuthorizationPolicies in force (compiled), with the root namespace.
    pub authz: Arc<PolicySet>,
}

impl MeshState {
    /// The state after `changes` to `store`, from `prev` (the last published one):
    /// the view is updated incrementally, policies are recompiled only when an object
    /// the view does not hold changed.
    pub fn next(prev: &MeshState, store: &ConfigStore, changes: &Changes, params: &StateParams) -> Self {
        let (mut view, changes) = match prev.generation {
            0 => (ClusterView::new(&params.trust_domain), &Changes::All),
            _ => (prev.view.clone(), changes),
        };
        view.apply(store, changes);
        let policies_changed = changes.any(|r| !is_view_kind(&r.kind));
        let (peer_authn, authz) = if policies_changed {
            (
                Arc::new(crate::policy::PeerAuthn::from_store(store)),
                Arc::new(PolicySet::from_store(store, &params.root_namespace)),
            )
        } else {
            (prev.peer_authn.clone(), prev.authz.clone())
        };
        Self {
            node: params.node.clone(),
            trust_domain: params.trust_domain.clone(),
            view,
            generation: store.generation(),
            peer_authn,
            authz,
            config_errors: store.errors().flat_map(|(_, e)| e.iter().cloned()).collect(),
        }
    }

    /// The state of everything in `store`.
    #[cfg(test)]
    pub fn build(store: &ConfigStore, params: &StateParams) -> Self {
        Self::next(&MeshState::default(), store, &Changes::All, params)
    }

    /// Enrolled pods scheduled on this node: the ones whose traffic this daemon captures.
    pub fn local_enrolled(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.view.workloads().filter(|w| w.enrolled && w.node == self.node)
    }

    pub fn workload(&self, ip: Ipv4Addr) -> Option<&Arc<Workload>> {
        self.view.workload(ip)
    }

    pub fn service(&self, vip: Ipv4Addr) -> Option<&Arc<ServiceEntry>> {
        self.view.service(vip)
    }
}

/// Kinds the cluster view holds; any other change may be a policy.
fn is_view_kind(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Pod" | "Service")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mesh_common::model::parse_documents;
    use mesh_common::model::store::ConfigStore;

    pub(crate) fn state_from(yaml: &str, node: &str) -> MeshState {
        let mut store = ConfigStore::default();
        let report = store.apply_source("t", parse_documents("t", yaml), &|_| Ok(()));
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        MeshState::build(&store, &StateParams::new(node))
    }

    /// Selection and enrollment themselves are mesh-common's (view::tests); what is
    /// the daemon's: which pods are its own, and when policies are recompiled.
    const TOPOLOGY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n1, serviceAccountName: web}
status: {podIP: 198.18.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: shop}
spec: {nodeName: n2}
status: {podIP: 198.18.2.9}
";

    #[test]
    fn local_enrolled_is_this_nodes_pods_in_enrolled_namespaces() {
        let s = state_from(TOPOLOGY, "n1");
        let local: Vec<_> = s.local_enrolled().map(|w| w.name.as_str()).collect();
        assert_eq!(local, vec!["a"]);
        let a = s.workload("198.18.1.2".parse().unwrap()).unwrap();
        assert_eq!(a.identity(), "spiffe://cluster.local/ns/shop/sa/web");
    }

    #[test]
    fn policies_are_recompiled_only_when_a_policy_changes() {
        let params = StateParams::new("n1");
        let mut store = ConfigStore::default();
        store.apply_source("t", parse_documents("t", TOPOLOGY), &|_| Ok(()));
        let first = MeshState::build(&store, &params);
        let step = |store: &mut ConfigStore, prev: &MeshState, source: &str, yaml: &str| {
            let since = store.generation();
            store.apply_source(source, parse_documents(source, yaml), &|_| Ok(()));
            MeshState::next(prev, store, &store.changes_since(since), &params)
        };
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop}\nspec: {nodeName: n1}\nstatus: {podIP: 198.18.1.3}\n";
        let second = step(&mut store, &first, "pod", pod);
        assert!(
            Arc::ptr_eq(&first.authz, &second.authz),
            "a pod change recompiled the policies"
        );
        assert_eq!(second.local_enrolled().count(), 2);
        let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {action: DENY, rules: [{}]}\n";
        let third = step(&mut store, &second, "policy", policy);
        assert!(!Arc::ptr_eq(&second.authz, &third.authz));
        assert_eq!(third.authz.policies().len(), 1);
    }
}
