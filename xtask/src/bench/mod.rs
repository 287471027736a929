//! `cargo xtask bench ...`: measurements, not tests (numbers vary with the machine).

pub mod tunnel;

pub use tunnel::{TunnelBenchOptions, run_tunnel_bench};
