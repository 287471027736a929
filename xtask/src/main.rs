//! `cargo xtask`: everything beyond `cargo build` — toolchain bootstrap, the test
//! suite, the local demo, cleanup, benchmarks. Run `cargo xtask --help`.

mod bootstrap;
mod demo;
mod test;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and demo the mesh on this machine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build and the tests need (Debian packages, bpf-linker, ...).
    /// Does nothing when everything is present.
    Bootstrap,
    /// Bootstrap, build the workspace once, then run every test (unit and e2e; needs root).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the local mesh with Bookinfo until Ctrl-C (needs root).
    Demo {
        #[command(subcommand)]
        action: Option<DemoCmd>,
    },
    /// Remove namespaces, cgroups, bpffs pins and processes left by a killed demo or test.
    Clean,
}

#[derive(Subcommand)]
enum DemoCmd {
    /// Apply Istio/Kubernetes YAML to the running demo (like `kubectl apply -f FILE`).
    Apply { file: PathBuf },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bootstrap => bootstrap::run(),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo { action: None } => demo::run(),
        Cmd::Demo { action: Some(DemoCmd::Apply { file }) } => demo::apply(&file),
        Cmd::Clean => clean(),
    }
}

fn clean() -> Result<()> {
    let report = xtask::harness::clean_leftovers()?;
    println!("{report}");
    Ok(())
}
