//! Shared between the kernel programs and userspace.
//!
//! Without features this crate is `no_std` and holds only the map ABI ([`abi`]), so
//! `mesh-ebpf` can depend on it. The `std` feature adds the mesh model that `mesh-node`,
//! `mesh-waypoint` and `xtask` share, and the AuthorizationPolicy evaluator ([`authz`])
//! both enforcement points use; `user` adds `aya::Pod` impls for the ABI structs.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod abi;

#[cfg(feature = "std")]
pub mod authz;
#[cfg(feature = "std")]
pub mod model;
#[cfg(feature = "std")]
pub mod source;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "std")]
pub mod view;
