//! `cargo xtask test`: bootstrap, one `cargo build` of the whole workspace (the e2e
//! tests start the daemons from target/), then `cargo test` over every crate.

use std::process::Command;

use anyhow::{Result, bail};

use crate::bootstrap::{self, sh};

pub fn run(extra: &[String]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the test suite creates network namespaces, cgroups and eBPF programs: run it as root");
    }
    bootstrap::run()?;
    eprintln!("[test] building the workspace (binaries are used by the e2e tests)");
    sh(cargo().args(["build", "--workspace", "--all-targets"]))?;
    eprintln!("[test] running the tests");
    sh(cargo().args(["test", "--workspace"]).args(extra))
}

/// The cargo that runs us, with rustup's proxies ahead of Debian's /usr/bin/rustc
/// (EBPF.md pitfall 7: otherwise host crates silently build with Debian's rustc).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if let (Some(home), Ok(path)) = (std::env::var_os("HOME"), std::env::var("PATH")) {
        let bin = std::path::Path::new(&home).join(".cargo/bin");
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    cmd
}
