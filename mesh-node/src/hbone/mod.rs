//! HBONE lives in the `mesh-hbone` crate (shared with the waypoint); the node daemon
//! uses it through these paths.

pub use mesh_hbone::{client, reexec_with_glibc_tunable, relay, server};

#[cfg(test)]
mod tests;
