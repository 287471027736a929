//! `cargo xtask`: everything beyond `cargo build` — toolchain bootstrap, the test
//! suite, the local demo, cleanup, benchmarks. Run `cargo xtask --help`.

mod bootstrap;
mod demo;
mod fuzz;
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
    /// Full runs use release binaries (built first); `--quick` uses the debug build.
    Bench {
        /// Which benchmarks (default: all). Available: tunnel, latency, waypoint, resources, connect.
        names: Vec<String>,
        /// One repetition of short runs, debug binaries: a smoke check (< 2 minutes).
        #[arg(long)]
        quick: bool,
        /// Internal: the binaries next to this executable are already built.
        #[arg(long, hide = true)]
        prebuilt: bool,
    },
    /// Build the fuzz targets of fuzz/ (cargo-fuzz, nightly; installed when missing) and run
    /// each for a bounded time from its committed seeds. Fails on any crash.
    Fuzz {
        /// Which targets (default: all), e.g. hbone_connect config_yaml.
        targets: Vec<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
    },
    /// Internal: the load generator / HTTP server that benchmarks start inside pods.
    #[command(hide = true)]
    BenchTool {
        #[command(subcommand)]
        cmd: xtask::bench::tool::ToolCmd,
    },
}

#[derive(Subcommand)]
enum DemoCmd {
    /// Apply Istio/Kubernetes YAML to the running demo, like `kubectl apply -f FILE…`
    /// (objects without a namespace go to `-n`, default `bookinfo`).
    Apply(demo::ManifestArgs),
    /// Remove the objects of YAML files from the running demo, like `kubectl delete -f FILE…`.
    Delete(demo::ManifestArgs),
    /// Take a misbehaving version out of rotation: rewrites the Service's VirtualService
    /// to route over its other subsets (e.g. `demo block reviews v3`).
    Block { service: String, version: String },
    /// Undo `demo block`: put the Service's previous VirtualService back.
    Restore { service: String },
    /// Print a JWT for USER signed by the running demo's issuer (the key the demo
    /// generated; its JWKS is served in the lab and trusted by
    /// samples/bookinfo/policy/request-authentication-gateway.yaml).
    Token {
        user: String,
        /// Values of the `groups` claim (repeatable).
        #[arg(long = "group", default_value = "readers")]
        groups: Vec<String>,
        /// Lifetime of the token in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bootstrap => bootstrap::run(),
        Cmd::Test { args } => test::run(&args),
        Cmd::Demo { action: None } => demo::run(),
        Cmd::Demo {
            action: Some(DemoCmd::Apply(args)),
        } => demo::apply(&args),
        Cmd::Demo {
            action: Some(DemoCmd::Delete(args)),
        } => demo::delete(&args),
        Cmd::Demo {
            action: Some(DemoCmd::Block { service, version }),
        } => demo::block(&service, &version),
        Cmd::Demo {
            action: Some(DemoCmd::Restore { service }),
        } => demo::restore(&service),
        Cmd::Demo {
            action: Some(DemoCmd::Token { user, groups, ttl_secs }),
        } => demo::token(&user, &groups, ttl_secs),
        Cmd::Clean => clean(),
        Cmd::Bench { names, quick, prebuilt } => bench(&names, quick, prebuilt),
        Cmd::Fuzz { targets, seconds } => fuzz::run(&fuzz::FuzzOptions { targets, seconds }, &target_dir()),
        Cmd::BenchTool { cmd } => xtask::bench::tool::run(cmd),
    }
}

fn bench(names: &[String], quick: bool, prebuilt: bool) -> Result<()> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let target_dir = target_dir();
    if !prebuilt {
        bootstrap::run()?;
        if !quick {
            // Figures come from release binaries; the tool and the daemons share one profile dir.
            eprintln!("bench: building release binaries (mesh-node, mesh-waypoint, mesh-ca, xtask)");
            bootstrap::sh(test::cargo().args([
                "build",
                "--release",
                "-p",
                "mesh-node",
                "-p",
                "mesh-waypoint",
                "-p",
                "mesh-ca",
                "-p",
                "xtask",
            ]))?;
            let release = target_dir.join("release").join("xtask");
            let mut cmd = std::process::Command::new(release);
            cmd.arg("bench").args(names).arg("--prebuilt");
            let status = cmd.status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        // The same build as `cargo xtask test`, so that after the tests (CI) this is a no-op.
        test::build_workspace()?;
    }
    let profile = bin_dir.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
    let binaries = if profile == "release" {
        "release".to_owned()
    } else {
        format!("{profile} (opt-level 1, dependencies 2; --quick skips the release build)")
    };
    let opts = xtask::bench::BenchOptions { quick, binaries };
    xtask::bench::run(names, &opts, &target_dir.join("bench"))?;
    Ok(())
}

/// The target dir this xtask was built in (`<target>/debug/xtask`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|d| d.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| "target".into())
}

fn clean() -> Result<()> {
    let report = xtask::harness::clean_leftovers()?;
    println!("{report}");
    Ok(())
}
