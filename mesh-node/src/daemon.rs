//! Start-up and shutdown of the node daemon: wires configuration, eBPF, and the
//! admin/readiness/metrics endpoints, then hands [`ProxyInputs`] to the data path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mesh_common::source::dir::DirSource;

use crate::admin::{Admin, Sections};
use crate::cli::RunArgs;
use crate::config::{ConfigLoop, StateRx};
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
    let metrics = Metrics::default();
    let sections = Sections::default();

    let (mut config, state) = ConfigLoop::new(DirSource::new(&args.config_dir), &args.node, &args.trust_domain);
    config.poll_once(&readiness);
    tokio::spawn(config.run(Duration::from_millis(args.config_poll_ms), readiness.clone()));

    let inputs = ProxyInputs { args: Arc::new(args), state, metrics, readiness, admin_sections: sections };
    let handler = crate::proxy::select_handler(&inputs).context("mesh data path")?;
    let capture = crate::capture::start(&inputs, handler).await.context("capture")?;
    serve_endpoints(&inputs).await?;
    tracing::info!(node = %inputs.args.node, "mesh-node started");
    wait_for_shutdown().await;
    tracing::info!("shutting down");
    capture.shutdown().await;
    Ok(())
}

async fn serve_endpoints(p: &ProxyInputs) -> anyhow::Result<()> {
    let admin = Admin { state: p.state.clone(), readiness: p.readiness.clone(), sections: p.admin_sections.clone() };
    let l = http_server::bind(p.args.admin_addr, "admin").await?;
    tokio::spawn(http_server::serve(l, "admin", move |req| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    }));
    let readiness = p.readiness.clone();
    let l = http_server::bind(p.args.readiness_addr, "readiness").await?;
    tokio::spawn(http_server::serve(l, "readiness", move |req| {
        let r = readiness.clone();
        async move { r.handle(req).await }
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
