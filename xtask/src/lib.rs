//! `cargo xtask` as a library: the local cluster harness used by the demo and by
//! the e2e tests of every crate (through a dev-dependency on `xtask`).

pub mod apiserver;
pub mod bench;
pub mod bookinfo;
pub mod harness;
pub mod mesh;
pub mod otlp;
pub mod traffic_map;
