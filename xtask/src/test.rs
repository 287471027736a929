//! `cargo xtask test`: bootstrap, one `cargo build` of the whole workspace (the e2e
//! tests start the daemons from target/), then `cargo test` over every crate.
//!
//! Kubernetes mode is covered by the same single build: mesh-node's default feature
//! `kubernetes` enables `mesh-common/kube` (and its tests `kube-replay`), and cargo
//! unifies features across the workspace, so mesh-common's watcher tests and
//! mesh-node's daemon-level replay tests run without a second build.

use std::process::Command;

use anyhow::{Result, bail};

use crate::bootstrap::{self, sh};

pub fn run(extra: &[String]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the test suite creates network namespaces, cgroups and eBPF programs: run it as root");
    }
    bootstrap::run()?;
    eprintln!("[test] building the workspace (binaries are used by the e2e tests)");
    build_workspace()?;
    eprintln!("[test] running the tests");
    let before = xtask::harness::all_leftovers()?;
    let result = sh(cargo().args(["test", "--workspace"]).args(extra));
    check_nothing_left(&before)?;
    result
}

/// Every test cleans up after itself, even when it fails: prove it after the suite.
/// Leftovers that existed before the suite (another run in progress) are not ours.
fn check_nothing_left(before: &[String]) -> Result<()> {
    let left: Vec<String> = xtask::harness::all_leftovers()?
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    if !left.is_empty() {
        bail!(
            "the test suite left harness objects behind (remove them with `cargo xtask clean`):\n  {}",
            left.join("\n  ")
        );
    }
    eprintln!("[test] no network namespace, cgroup, bpffs pin or process of the harness remains");
    Ok(())
}

/// The one debug build that `test`, `demo` and `bench --quick` share: the same
/// selection, profile and features, so whichever runs second finds it built (cargo
/// unifies features per invocation; a different selection would rebuild dependencies).
pub fn build_workspace() -> Result<()> {
    sh(cargo().args(["build", "--workspace", "--all-targets"]))
}

/// The cargo that runs us, with rustup's proxies ahead of Debian's /usr/bin/rustc
/// (docs/ebpf-toolchain.md §3.6: otherwise host crates silently build with Debian's rustc).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if let (Some(home), Ok(path)) = (std::env::var_os("HOME"), std::env::var("PATH")) {
        let bin = std::path::Path::new(&home).join(".cargo/bin");
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    cmd
}
