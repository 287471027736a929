//! Workload identities: the mesh root CA, node-scoped signing, and the per-node
//! certificate manager that keeps each local workload's certificate fresh.

pub mod ca;
pub mod manager;
pub mod spiffe;

pub use ca::{CaError, LocalCa, NodeScopedCa, Signer};
pub use manager::{CertManager, ManagerConfig, WorkloadCert};
pub use spiffe::SpiffeId;
