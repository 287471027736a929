//! Which pods the mesh captures: those whose namespace is enrolled, except pods that
//! opt out and the mesh's own proxies (waypoints, gateways). The cluster view marks
//! each workload with it; the node daemon captures the marked ones on its node.

use super::k8s::{Namespace, Pod};

/// The enrollment rule, the only copy: the pod's namespace opts in
/// ([`Namespace::is_enrolled`]) and the pod does not opt out ([`Pod::opts_out`]).
/// Which node captures it is the caller's concern.
pub fn is_enrolled(pod: &Pod, namespace: Option<&Namespace>) -> bool {
    namespace.is_some_and(Namespace::is_enrolled) && !pod.opts_out()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::store::ConfigStore;
    use crate::model::{Resource, parse_documents};

    #[test]
    fn pods_of_enrolled_namespaces_except_opt_outs_and_proxies() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: in, annotations: {mesh.io/dataplane-mode: ambient}}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: out}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: in}\nspec: {nodeName: n1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: in}\nspec: {nodeName: n2}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: out}\nspec: {nodeName: n1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: d, namespace: in, labels: {istio.io/dataplane-mode: none}}\nspec: {nodeName: n1}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: wp, namespace: in, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}\nspec: {nodeName: n1}\n";
        let mut store = ConfigStore::default();
        store.apply_source("f", parse_documents("f", text), &|_| Ok(()));
        let namespace = |name: &str| {
            store.iter().find_map(|r| match r {
                Resource::Namespace(ns) if ns.metadata.name == name => Some(ns),
                _ => None,
            })
        };
        let names: Vec<_> = store
            .iter()
            .filter_map(|r| match r {
                Resource::Pod(p) if is_enrolled(p, namespace(p.metadata.namespace_or_default())) => {
                    Some(p.metadata.name.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
