//! mesh-node: the per-node daemon. See README.md for what it does and how to run it.

mod admin;
mod allocator;
mod capture;
mod cli;
mod config;
mod daemon;
#[allow(dead_code, unused_imports)] // Kubernetes mode: the daemon wires pod discovery in
mod discovery;
mod drain;
mod ebpf;
mod handoff;
mod hbone;
mod http_server;
mod identity;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod metrics;
mod netns;
mod policy;
mod proxy;
mod readiness;
mod state;
mod waypoint_render;
use mesh_hbone::tls;

use clap::Parser;

use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    hbone::reexec_with_glibc_tunable();
    match cli.command {
        cli::Command::Run(args) => {
            init_tracing(&args.log)?;
            // One thread carries the data path: on 2 vCPUs a current_thread runtime
            // moved more bytes than a work-stealing one (docs/tunnel-tuning.md, step 11).
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let ran = rt.block_on(daemon::run(args));
            // The JSON access log's queued lines go out before the process ends.
            mesh_common::telemetry::access_log::flush();
            ran
        }
        cli::Command::FdHolder(a) => capture::fdstore::run_holder(&a.socket),
        cli::Command::Started(a) => match a.file.exists() {
            true => Ok(()),
            false => anyhow::bail!("{} does not exist yet: the daemon is not serving", a.file.display()),
        },
        cli::Command::Waypoint(cmd) => waypoint_render::run(cmd),
    }
}

fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("invalid --log filter {filter:?}: {e}"))?;
    // `init` also installs the log->tracing bridge, which carries aya-log's records.
    // Plain text when redirected to a file: operators and tests grep `reason=`.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(true)
        .init();
    Ok(())
}
