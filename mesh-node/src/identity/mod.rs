//! Workload identities. The node daemon holds no CA key: for each local enrolled
//! workload it generates a key pair in memory and asks the mesh CA (`mesh-ca`, Istio's
//! certificate API) to sign a CSR for the pod's identity, impersonating the pod as
//! ztunnel does. The CA signs only identities of pods scheduled on this node. The
//! [`CertManager`] keeps certificates fresh and fails closed when one is missing.

pub mod manager;
pub mod source;

pub use manager::{CertManager, ManagerConfig};
pub use mesh_hbone::SpiffeId;
pub use source::CertSource;

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
