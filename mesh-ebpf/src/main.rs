//! Kernel programs of the mesh. Built for `bpfel-unknown-none` by `mesh-node/build.rs`
//! and embedded into the daemon; on the host this crate is an empty binary so that
//! `cargo build --workspace` keeps working.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod prog;
