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
pub mod readiness;
#[cfg(feature = "std")]
pub mod source;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "std")]
pub mod view;

/// A time as RFC 3339 (UTC), as every log line, dump and readiness detail shows it
/// (Envoy's `%START_TIME%` in access logs).
#[cfg(feature = "std")]
pub fn rfc3339(t: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(all(test, feature = "std"))]
mod tests {
    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(
            super::rfc3339(std::time::SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }
}
