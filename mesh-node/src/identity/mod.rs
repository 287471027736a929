//! Workload identities: the mesh root CA, node-scoped signing, and the per-node
//! certificate manager that keeps each local workload's certificate fresh.

pub mod ca;
pub mod manager;

pub use ca::{CaError, LocalCa, NodeScopedCa, Signer};
pub use manager::{CertManager, ManagerConfig};
pub use mesh_hbone::SpiffeId;

/// Two pods of one namespace on two nodes: the identity tests' shared cluster.
#[cfg(test)]
pub(crate) mod test_fixture {
    pub const TOPOLOGY: &str = "
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
metadata: {name: b, namespace: shop}
spec: {nodeName: n2, serviceAccountName: db}
status: {podIP: 198.18.2.2}
";
}
