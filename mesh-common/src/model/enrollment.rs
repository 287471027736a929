//! Which pods the mesh captures: those on this node whose namespace is enrolled,
//! except pods that opt out and the mesh's own proxies (waypoints, gateways).

use std::collections::BTreeMap;

use super::Resource;
use super::k8s::{Namespace, Pod};
use super::store::ConfigStore;

/// The enrollment rule, the only copy: the pod's namespace opts in
/// ([`Namespace::is_enrolled`]) and the pod does not opt out ([`Pod::opts_out`]).
/// Which node captures it is the caller's concern.
pub fn is_enrolled(pod: &Pod, namespace: Option<&Namespace>) -> bool {
    namespace.is_some_and(Namespace::is_enrolled) && !pod.opts_out()
}

/// Pods scheduled on `node` (`spec.nodeName`) that [`is_enrolled`], in store order
/// (namespace, name).
pub fn enrolled_pods(store: &ConfigStore, node: &str) -> Vec<Pod> {
    let namespaces: BTreeMap<&str, &Namespace> = store
        .iter()
        .filter_map(|r| match r {
            Resource::Namespace(ns) => Some((ns.metadata.name.as_str(), ns)),
            _ => None,
        })
        .collect();
    store
        .iter()
        .filter_map(|r| match r {
            Resource::Pod(p)
                if p.spec.node_name.as_deref() == Some(node)
                    && is_enrolled(p, namespaces.get(p.metadata.namespace_or_default()).copied()) =>
            {
                Some(p.clone())
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_documents;

    #[test]
    fn only_this_nodes_pods_of_enrolled_namespaces() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: in, annotations: {mesh.io/dataplane-mode: ambient}}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: out}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: in}\nspec: {nodeName: n1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: in}\nspec: {nodeName: n2}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: out}\nspec: {nodeName: n1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: d, namespace: in, labels: {istio.io/dataplane-mode: none}}\nspec: {nodeName: n1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: wp, namespace: in, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}\nspec: {nodeName: n1}\n";
        let mut store = ConfigStore::default();
        store.apply_source("f", parse_documents("f", text), &|_| Ok(()));
        let names: Vec<_> = enrolled_pods(&store, "n1")
            .into_iter()
            .map(|p| p.metadata.name)
            .collect();
        assert_eq!(names, vec!["a".to_string()]);
    }
}
