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
    /// Measure the mesh against baselines in the same run (prints figures; never fails on a number).
    Bench {
        /// Which benchmarks (default: all). Available: tunnel.
        names: Vec<String>,
        /// Short runs, for a smoke check.
        #[arg(long)]
        quick: bool,
    },
}

#[derive(Subcommand)]
enum DemoCmd {
    /// Apply Istio/Kubernetes YAML to the running demo (like `kubectl apply -f FILE`).
    Apply { file: PathBuf },
    /// Take a misbehaving version out of rotation: rewrites the Service's VirtualService
    /// to route over its other subsets (e.g. `demo block reviews v3`).
    Block { service: String, version: String },
    /// Undo `demo block`: put the Service's previous VirtualService back.
    Restore { service: String },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bootstrap => bootstrap::run(),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo { action: None } => demo::run(),
        Cmd::Demo { action: Some(DemoCmd::Apply { file }) } => demo::apply(&file),
        Cmd::Demo { action: Some(DemoCmd::Block { service, version }) } => demo::block(&service, &version),
        Cmd::Demo { action: Some(DemoCmd::Restore { service }) } => demo::restore(&service),
        Cmd::Clean => clean(),
        Cmd::Bench { names, quick } => bench(&names, quick),
    }
}

fn bench(names: &[String], quick: bool) -> Result<()> {
    bootstrap::run()?;
    bootstrap::sh(test::cargo().args(["build", "--workspace"]))?;
    for name in names.iter().map(String::as_str).chain(names.is_empty().then_some("tunnel")) {
        match name {
            "tunnel" => {
                let mut opts = xtask::bench::TunnelBenchOptions::default();
                if quick {
                    opts.secs = 2;
                    opts.round_trips = 1000;
                }
                xtask::bench::run_tunnel_bench(&opts)?;
            }
            other => anyhow::bail!("unknown benchmark {other:?}; available: tunnel"),
        }
    }
    Ok(())
}

fn clean() -> Result<()> {
    let report = xtask::harness::clean_leftovers()?;
    println!("{report}");
    Ok(())
}
