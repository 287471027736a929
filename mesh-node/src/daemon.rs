//! Start-up and shutdown of the node daemon: wires configuration, eBPF, and the
//! admin/readiness/metrics endpoints, then hands [`ProxyInputs`] to the data path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::admin::{Admin, Sections};
use crate::cli::RunArgs;
use crate::config::StateRx;
use crate::http_server;
use crate::metrics::Metrics;
use crate::readiness::{Condition, Readiness};

/// Everything the data path (capture listeners, HBONE, policy) needs, in one bundle.
#[derive(Clone)]
pub struct ProxyInputs {
    pub args: Arc<RunArgs>,
    pub state: StateRx,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub admin_sections: Sections,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let readiness = Readiness::default();
    readiness.set("config", Condition::Pending("not read yet".into()));
    readiness.set("capture", Condition::Pending("waiting for the configuration".into()));
    let metrics = Metrics::default();
    let sections = Sections::default();

    let state = start_config(&args, &readiness, &metrics).await?;
    let inputs = ProxyInputs {
        args: Arc::new(args),
        state,
        metrics,
        readiness,
        admin_sections: sections,
    };
    let kubernetes = inputs.args.kubernetes;
    if kubernetes {
        // Endpoints first: readiness and metrics explain a wait for the API server.
        serve_endpoints(&inputs).await?;
        tokio::select! {
            _ = first_state(inputs.state.clone()) => {}
            _ = wait_for_shutdown() => return Ok(()),
        }
    }
    let handler = crate::proxy::select_handler(&inputs).context("mesh data path")?;
    let capture = crate::capture::start(&inputs, handler).await.context("capture")?;
    if !kubernetes {
        // Local mode: 15021 accepting means capture is attached (the harness waits on it).
        serve_endpoints(&inputs).await?;
    }
    tracing::info!(node = %inputs.args.node, "mesh-node started");
    wait_for_shutdown().await;
    tracing::info!("shutting down");
    capture.shutdown().await;
    Ok(())
}

/// The configuration source: a directory, or the API server with `--kubernetes`.
async fn start_config(args: &RunArgs, readiness: &Readiness, metrics: &Metrics) -> anyhow::Result<StateRx> {
    if args.kubernetes {
        return start_kubernetes(args, readiness, metrics).await;
    }
    let dir = args
        .config_dir
        .as_ref()
        .context("--config-dir is required without --kubernetes")?;
    let every = Duration::from_millis(args.config_poll_ms);
    Ok(crate::config::start_dir(
        dir,
        every,
        args.state_params(),
        readiness,
        metrics,
    ))
}

#[cfg(feature = "kubernetes")]
async fn start_kubernetes(args: &RunArgs, readiness: &Readiness, metrics: &Metrics) -> anyhow::Result<StateRx> {
    tracing::info!(node = %args.node, "configuration from the Kubernetes API server (this node's pods only)");
    crate::kubernetes::start(args.state_params(), readiness, metrics).await
}

#[cfg(not(feature = "kubernetes"))]
async fn start_kubernetes(_: &RunArgs, _: &Readiness, _: &Metrics) -> anyhow::Result<StateRx> {
    anyhow::bail!(
        "--kubernetes: this mesh-node was built without the `kubernetes` feature; rebuild with default features"
    )
}

/// Capture starts from a complete model: on an empty one, a restarted daemon would
/// detach every pod it had captured.
async fn first_state(mut state: StateRx) {
    tracing::info!("waiting for the first complete list from the Kubernetes API server");
    let _ = state.changed().await;
}

async fn serve_endpoints(p: &ProxyInputs) -> anyhow::Result<()> {
    let admin = Admin {
        state: p.state.clone(),
        readiness: p.readiness.clone(),
        sections: p.admin_sections.clone(),
    };
    let l = http_server::bind(p.args.admin_addr, "admin").await?;
    tokio::spawn(http_server::serve(l, "admin", move |req| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    }));
    let readiness = p.readiness.clone();
    let l = http_server::bind(p.args.readiness_addr, "readiness").await?;
    tokio::spawn(http_server::serve(l, "readiness", move |req| {
        let r = readiness.clone();
        async move { crate::readiness::handle(&r, req).await }
    }));
    let metrics = p.metrics.clone();
    let l = http_server::bind(p.args.metrics_addr, "metrics").await?;
    tokio::spawn(http_server::serve(l, "metrics", move |req| {
        let m = metrics.clone();
        async move { m.handle(req).await }
    }));
    Ok(())
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
}
