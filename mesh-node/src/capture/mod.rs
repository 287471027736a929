//! eBPF capture of enrolled pods: listeners inside each pod's netns, programs attached
//! to each pod's cgroup and netns, maps and links pinned so capture outlives the daemon.
//!
//! [`start`] loads (or re-opens) the pinned object, then runs the enrollment loop on
//! the state watch. Connections accepted on the capture listeners go to a
//! [`ConnectionHandler`] (the seam to the HBONE data path).

pub mod bpf;
pub mod client_ip;
pub mod enroll;
pub mod fdstore;
pub mod handler;
pub mod listeners;
pub mod pins;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::oneshot;

use crate::daemon::ProxyInputs;
use crate::readiness::Condition;
use bpf::CaptureBpf;
use enroll::Enroller;
use listeners::{ConnCounter, LoopCtx};

#[allow(unused_imports)] // the seam is used by the HBONE data path as it lands
pub use handler::{CapturedPod, ConnectionHandler, DirectHandler};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Pins(#[from] pins::PinsError),
    #[error(transparent)]
    Bpf(#[from] bpf::BpfError),
}

/// Running capture; [`Capture::shutdown`] stops it (and with `--detach-on-exit`
/// removes every pin).
pub struct Capture {
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

impl Capture {
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let (tx, rx) = oneshot::channel();
            if stop.send(tx).is_ok() {
                let _ = rx.await;
            }
        }
    }
}

pub async fn start(p: &ProxyInputs, handler: Arc<dyn ConnectionHandler>) -> Result<Capture, CaptureError> {
    p.readiness.set("capture", Condition::Pending("loading eBPF".into()));
    raise_fd_limit();
    let bpffs = p.args.bpffs_dir();
    pins::prepare(&bpffs)?;
    let mut bpf = CaptureBpf::load(&bpffs, &p.args.capture)?;
    let client_ip = client_ip(&p.args.capture, &mut bpf);
    // The loader's parsed kernel BTF is gone now; without this an idle daemon keeps it.
    crate::allocator::release_freed_memory();
    tokio::spawn(crate::allocator::trim_while_running());
    let connections = ConnCounter::default();
    let enrolled = prometheus_client::metrics::gauge::Gauge::default();
    p.metrics.register(|r| {
        r.register(
            "mesh_capture_connections",
            "Connections accepted on capture listeners",
            connections.clone(),
        );
        r.register(
            "mesh_capture_enrolled_pods",
            "Pods of this node currently captured",
            enrolled.clone(),
        );
    });
    let lookups = bpf.lookups.clone();
    let ctx = Arc::new(LoopCtx {
        handler,
        lookups: lookups.clone(),
        connections,
        enrolled,
        drain: p.drain.clone(),
        client_ip,
    });
    let fdstore = if p.args.capture.no_fd_store {
        None
    } else {
        open_fd_store(&p.args.state_dir(), p.args.capture.fd_holder_spawn)
    };
    let mut enroller = Enroller::new(bpf, bpffs.clone(), p.args.capture.listen_backlog, ctx, fdstore);
    if p.args.kubernetes {
        enroller.discover_pods();
    }
    let view = enroller.view.clone();
    p.admin_sections.add("capture", move || {
        let v = view.lock().map(|v| v.clone()).unwrap_or_default();
        let counters: serde_json::Map<String, serde_json::Value> =
            lookups.counters().into_iter().map(|(k, n)| (k.to_owned(), json!(n))).collect();
        json!({ "bpffs": bpffs, "pods": v.pods, "errors": v.errors, "maps": v.maps,
                "last_reconcile_ms": v.last_reconcile_ms, "first_reconcile_ms": v.first_reconcile_ms, "counters": counters, "fd_store": v.fd_store })
    });

    // First pass before reporting ready: a restarted daemon re-adopts its pins here
    // and then removes what belongs to pods that are gone.
    let mut state = p.state.clone();
    let first = state.borrow_and_update().clone();
    enroller.reconcile(&first).await;
    enroller.clean_stale();
    report(p, &enroller);
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(run(enroller, p.clone(), stop_rx));
    Ok(Capture { stop: Some(stop_tx) })
}

/// The shared client-IP state, unless `--preserve-client-ip=false`.
fn client_ip(args: &crate::cli::CaptureArgs, bpf: &mut CaptureBpf) -> Option<Arc<client_ip::ClientIp>> {
    if !args.preserve_client_ip {
        tracing::info!("--preserve-client-ip=false: applications see their pod's own IP as every inbound peer");
        return None;
    }
    let routing = client_ip::Routing {
        mark: args.client_ip_mark,
        table: args.client_ip_table,
    };
    let map = bpf.take_daemon_connects()?;
    let c = Arc::new(client_ip::ClientIp::new(routing, map));
    // A predecessor's connections are established by now (or died with it): their
    // tuples are no longer needed, and stale ones would let a forged SYN past steering.
    let stale = c.clear_stale();
    if stale > 0 {
        tracing::info!(
            entries = stale,
            "cleared client-IP connect registrations left by the previous daemon"
        );
    }
    Some(c)
}

fn open_fd_store(state_dir: &std::path::Path, spawn: bool) -> Option<fdstore::FdStore> {
    if let Err(e) = std::fs::create_dir_all(state_dir) {
        tracing::warn!(dir = %state_dir.display(), "no fd store (listeners will not survive a crash): {e}");
        return None;
    }
    match fdstore::FdStore::connect_or_spawn(&state_dir.join("fdstore.sock"), spawn) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no fd store (listeners will not survive a crash): {e}");
            None
        }
    }
}

fn report(p: &ProxyInputs, e: &Enroller) {
    let msg = format!("{} pods enrolled", e.enrolled());
    // Failed pods are retried and shown in /config_dump; the node itself is serving.
    p.readiness.set("capture", Condition::Ok(msg));
}

async fn run(mut e: Enroller, p: ProxyInputs, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
    let mut state = p.state.clone();
    let mut retry = tokio::time::interval(Duration::from_millis(p.args.capture.enroll_retry_ms));
    loop {
        tokio::select! {
            changed = state.changed() => if changed.is_err() { break },
            _ = retry.tick() => if e.prune_dead() == 0 && !e.has_errors() { continue },
            // The successor enrolls from now on; the pins stay as they are.
            _ = p.drain.started() => return,
            done = &mut stop => {
                if p.args.capture.detach_on_exit {
                    e.detach_all();
                    tracing::info!("capture detached and pins removed (--detach-on-exit)");
                }
                if let Ok(done) = done { let _ = done.send(()); }
                return;
            }
        }
        let s = state.borrow_and_update().clone();
        e.reconcile(&s).await;
        report(&p, &e);
    }
}

/// Open files below which the daemon warns: every relayed connection holds one
/// descriptor on each side the daemon owns (10,000 tunneled connections: 10,000 on the
/// sending and on the receiving node), each enrolled pod three listeners.
const WANTED_OPEN_FILES: u64 = 65_536;

/// Each enrolled pod holds three listeners plus accepted connections: the default
/// soft limit of 1024 fds would cap a node at a few hundred pods. Raises the soft
/// limit to the hard one, and says so when that is still low.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        tracing::warn!("cannot read the open-file limit: {}", std::io::Error::last_os_error());
        return;
    }
    if r.rlim_cur < r.rlim_max {
        let soft = r.rlim_cur;
        r.rlim_cur = r.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            r.rlim_cur = soft;
            tracing::warn!(
                "cannot raise the open-file limit from {soft} to {}: {}",
                r.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    if r.rlim_cur < WANTED_OPEN_FILES {
        tracing::warn!(
            open_files = r.rlim_cur,
            "open-file limit below {WANTED_OPEN_FILES}: this daemon can hold at most about that many connections \
             (one descriptor per relayed connection and side); raise the hard limit (systemd LimitNOFILE, ulimit -Hn, \
             the container runtime's nofile)"
        );
    }
}
