//! Start-up and shutdown of the node daemon: wires configuration, eBPF, and the
//! admin/readiness/metrics endpoints, then hands [`ProxyInputs`] to the data path.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::admin::{Admin, Sections};
use crate::cli::RunArgs;
use crate::config::StateRx;
use crate::drain::Drain;
use crate::handoff::{Predecessor, Takeover};
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
    /// Started when a new daemon takes over: stop accepting, finish what is open.
    pub drain: Drain,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let readiness = Readiness::default();
    readiness.set("config", Condition::Pending("not read yet".into()));
    readiness.set("capture", Condition::Pending("waiting for the configuration".into()));
    let metrics = Metrics::default();
    let sections = Sections::default();
    let predecessor = Predecessor::find(&args.state_dir()).await;
    if let Some(p) = &predecessor {
        tracing::info!(socket = %p.path().display(), "a daemon is running on this node: taking over from it");
    }

    let state = start_config(&args, &readiness, &metrics).await?;
    let inputs = ProxyInputs {
        args: Arc::new(args),
        state,
        metrics,
        readiness,
        admin_sections: sections,
        drain: Drain::default(),
    };
    let kubernetes = inputs.args.kubernetes;
    let mut endpoints = None;
    if kubernetes {
        // Endpoints first: readiness and metrics explain a wait for the API server.
        // (A running predecessor still holds their ports until it hands over.)
        if predecessor.is_none() {
            endpoints = Some(serve_endpoints(&inputs).await?);
        }
        tokio::select! {
            _ = first_state(inputs.state.clone()) => {}
            _ = wait_for_shutdown() => return Ok(()),
        }
    }
    let handler = crate::proxy::select_handler(&inputs).context("mesh data path")?;
    if predecessor.is_some() {
        ready_to_take_over(&inputs).await?;
    }
    let capture = crate::capture::start(&inputs, handler).await.context("capture")?;
    if let Some(p) = predecessor {
        // Both daemons accept on the same listeners now; the old one stops here.
        match p.stop(inputs.args.upgrade.handoff_timeout()).await? {
            Some(answer) => tracing::info!(%answer, "took over from the running daemon"),
            None => tracing::info!("the running daemon exited before the hand-over"),
        }
    }
    let endpoints = match endpoints {
        Some(e) => e,
        // Local mode: 15021 accepting means capture is attached (the harness waits on it).
        None => serve_endpoints(&inputs).await?,
    };
    let mut takeovers = crate::handoff::listen(&inputs.args.state_dir()).context("hand-over socket")?;
    if let Some(f) = &inputs.args.upgrade.started_file {
        std::fs::write(f, std::process::id().to_string()).with_context(|| format!("--started-file {}", f.display()))?;
    }
    tracing::info!(node = %inputs.args.node, "mesh-node started");
    tokio::select! {
        _ = wait_for_shutdown() => {
            tracing::info!("shutting down");
            capture.shutdown().await;
        }
        Some(t) = takeovers.recv() => hand_over(t, &inputs, endpoints).await,
    }
    Ok(())
}

/// A successor has taken over: stop accepting, free the endpoint ports, confirm, and
/// keep relaying until the open connections end or the drain timeout passes. SIGTERM
/// (the old pod being deleted) does not cut this short: the handler is installed.
async fn hand_over(t: Takeover, p: &ProxyInputs, endpoints: Endpoints) {
    p.drain.start();
    endpoints.close().await;
    let open = p.drain.active();
    t.confirm(open);
    let timeout = p.args.upgrade.drain_timeout();
    tracing::info!(open, ?timeout, "handed over to a new daemon; draining");
    match p.drain.until_idle(timeout).await {
        0 => tracing::info!("drained: every connection finished"),
        left => tracing::warn!(left, "drain timeout passed: closing the connections still open"),
    }
}

/// Before a new daemon accepts anything, its configuration and certificates must be
/// in place; otherwise it leaves the running daemon alone.
async fn ready_to_take_over(p: &ProxyInputs) -> anyhow::Result<()> {
    let timeout = p.args.upgrade.handoff_timeout();
    let ready = || {
        p.readiness
            .snapshot()
            .iter()
            .filter(|(name, _)| matches!(**name, "config" | "certificates"))
            .all(|(_, c)| matches!(c, Condition::Ok(_)))
    };
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let waited = tokio::time::timeout(timeout, async {
        while !ready() {
            every.tick().await;
        }
    });
    waited.await.map_err(|_| {
        anyhow::anyhow!(
            "not ready to take over within {timeout:?} (--handoff-timeout-secs); the running daemon keeps serving:\n{}",
            p.readiness.report()
        )
    })
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

/// The admin, readiness and metrics servers, stopped on hand-over to free their ports.
struct Endpoints(Vec<tokio::task::JoinHandle<()>>);

impl Endpoints {
    async fn close(self) {
        for t in &self.0 {
            t.abort();
        }
        for t in self.0 {
            let _ = t.await;
        }
    }
}

async fn serve_endpoints(p: &ProxyInputs) -> anyhow::Result<Endpoints> {
    let admin = Admin {
        state: p.state.clone(),
        readiness: p.readiness.clone(),
        sections: p.admin_sections.clone(),
    };
    let mut tasks = Vec::new();
    let l = http_server::bind(p.args.admin_addr, "admin").await?;
    tasks.push(tokio::spawn(http_server::serve(l, "admin", move |req| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    })));
    let readiness = p.readiness.clone();
    let l = http_server::bind(p.args.readiness_addr, "readiness").await?;
    tasks.push(tokio::spawn(http_server::serve(l, "readiness", move |req| {
        let r = readiness.clone();
        async move { crate::readiness::handle(&r, req).await }
    })));
    let metrics = p.metrics.clone();
    let l = http_server::bind(p.args.metrics_addr, "metrics").await?;
    tasks.push(tokio::spawn(http_server::serve(l, "metrics", move |req| {
        let m = metrics.clone();
        async move { m.handle(req).await }
    })));
    Ok(Endpoints(tasks))
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
