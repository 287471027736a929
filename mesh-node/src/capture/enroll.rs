//! Enrollment: makes the set of captured pods follow the enrolled local pods of the
//! current [`MeshState`]. Per pod: listeners in its netns, map entries, programs
//! attached to its cgroup and netns with pinned links. Un-enrolling detaches and
//! closes everything for that pod; open connections are separate tasks and go on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mesh_common::abi::{PORT_HBONE, PORT_INBOUND_PLAINTEXT, PORT_OUTBOUND};
use serde::Serialize;
use tokio::task::JoinHandle;

use std::os::fd::OwnedFd;

use super::bpf::{BpfError, CaptureBpf, PROGRAMS, Target};
use super::client_ip::{ClientIp, ClientIpState};
use super::fdstore::FdStore;
use super::handler::CapturedPod;
use super::listeners::{Kind, LoopCtx, accept_loop};
use super::pins;
use crate::netns::{NetnsError, PodNetns};
use crate::state::{MeshState, Workload};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("pod has no {0} path (local mode needs the mesh.io/local-netns and mesh.io/local-cgroup annotations)")]
    NoPlacement(&'static str),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    #[error("cannot listen on {addr} in the pod's netns: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("cannot create pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: std::io::Error },
}

/// One pod in `/config_dump` → `capture.pods`.
#[derive(Debug, Clone, Serialize)]
pub struct PodView {
    pub ip: Ipv4Addr,
    pub netns: PathBuf,
    pub netns_cookie: u64,
    pub cgroup: PathBuf,
    pub listeners: Vec<SocketAddr>,
    pub pin_dir: PathBuf,
    pub programs: Vec<&'static str>,
    /// Links found pinned by a previous daemon and re-adopted (not attached again).
    pub adopted: usize,
    pub attached: usize,
    /// Listeners taken back from the fd store (kept open across a daemon restart).
    pub listeners_from_fd_store: usize,
    /// Whether the application sees its callers' addresses.
    pub client_ip: ClientIpState,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureView {
    pub pods: BTreeMap<String, PodView>,
    /// Last enrollment error per pod key (retried periodically).
    pub errors: BTreeMap<String, String>,
    pub last_reconcile_ms: u128,
    /// The start-up pass (attach or re-adopt every pod), for sizing expectations.
    pub first_reconcile_ms: Option<u128>,
    /// Entries of the per-pod maps as the kernel has them.
    pub maps: serde_json::Value,
    /// The listener fd store: socket path and holder PID.
    pub fd_store: serde_json::Value,
}

struct Enrolled {
    pod: Arc<CapturedPod>,
    view: PodView,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Enrolled {
    fn drop(&mut self) {
        // Aborting the accept loops drops the listeners; accepted connections live in
        // their own tasks and are not cut.
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct Enroller {
    bpf: CaptureBpf,
    bpffs: PathBuf,
    backlog: u32,
    ctx: Arc<LoopCtx>,
    pods: BTreeMap<String, Enrolled>,
    fdstore: Option<FdStore>,
    /// Listeners a previous daemon left in the fd store, by name, until enrolled or dropped.
    held: BTreeMap<String, OwnedFd>,
    pub view: Arc<Mutex<CaptureView>>,
    /// Find pods without placement annotations on the host (Kubernetes mode).
    discover: bool,
}

fn fd_name(pin_dir: &Path, port: u16) -> String {
    format!(
        "{}:{port}",
        pin_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    )
}

fn fd_prefix(pin_dir: &Path) -> String {
    format!("{}:", pin_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default())
}

fn same_placement(a: &Workload, b: &Workload) -> bool {
    a.ip == b.ip && a.netns == b.netns && a.cgroup == b.cgroup
}

impl Enroller {
    pub fn new(bpf: CaptureBpf, bpffs: PathBuf, backlog: u32, ctx: Arc<LoopCtx>, mut fdstore: Option<FdStore>) -> Self {
        let held = match fdstore.as_ref().map(FdStore::list) {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                // A holder that does not answer (hung) is
                // not used at all: listeners then do not survive a crash.
                tracing::warn!("fd store unusable, listeners will not survive a crash: {e}");
                fdstore = None;
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        if !held.is_empty() {
            tracing::info!(
                listeners = held.len(),
                "listeners kept by the fd store across the restart"
            );
        }
        let fd_store = fdstore
            .as_ref()
            .map(|s| serde_json::json!({ "holder_pid": s.holder_pid() }))
            .unwrap_or_default();
        let view = Arc::new(Mutex::new(CaptureView {
            fd_store,
            ..CaptureView::default()
        }));
        Self {
            bpf,
            bpffs,
            backlog,
            ctx,
            pods: BTreeMap::new(),
            fdstore,
            held,
            view,
            discover: false,
        }
    }

    async fn listener(&mut self, e: &mut Enrolled, addr: SocketAddr) -> Result<tokio::net::TcpListener, EnrollError> {
        let name = fd_name(&e.view.pin_dir, addr.port());
        let lerr = |source| EnrollError::Listen { addr, source };
        if let Some(fd) = self.held.remove(&name) {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true).map_err(lerr)?;
            e.view.listeners_from_fd_store += 1;
            return tokio::net::TcpListener::from_std(l).map_err(lerr);
        }
        let l = e.pod.netns.listen(addr, self.backlog).await.map_err(lerr)?;
        if let Some(store) = &self.fdstore
            && let Err(err) = store.put(&name, &l)
        {
            tracing::warn!(listener = %name, "fd store: {err}; this listener will not survive a crash");
        }
        Ok(l)
    }

    pub fn enrolled(&self) -> usize {
        self.pods.len()
    }

    pub fn has_errors(&self) -> bool {
        self.view.lock().is_ok_and(|v| !v.errors.is_empty())
    }

    pub async fn reconcile(&mut self, state: &MeshState) {
        let started = Instant::now();
        let desired: BTreeMap<String, Arc<Workload>> = state.local_enrolled().map(|w| (w.key(), w.clone())).collect();
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(k, e)| desired.get(*k).is_none_or(|w| !same_placement(w, &e.pod.workload)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.unenroll(&k);
        }
        let mut errors = BTreeMap::new();
        for (k, w) in desired {
            if self.pods.contains_key(&k) {
                continue;
            }
            match self.enroll(w).await {
                Ok(e) => {
                    tracing::info!(pod = %k, ip = %e.view.ip, adopted = e.view.adopted, attached = e.view.attached, "pod enrolled");
                    self.pods.insert(k, e);
                }
                Err(e) => {
                    tracing::warn!(pod = %k, "enrollment failed (will retry): {e}");
                    errors.insert(k, e.to_string());
                }
            }
        }
        self.publish(errors, started.elapsed().as_millis());
    }

    fn publish(&self, errors: BTreeMap<String, String>, ms: u128) {
        self.ctx
            .enrolled
            .set(i64::try_from(self.pods.len()).unwrap_or(i64::MAX));
        if let Ok(mut v) = self.view.lock() {
            v.pods = self.pods.iter().map(|(k, e)| (k.clone(), e.view.clone())).collect();
            v.errors = errors;
            v.last_reconcile_ms = ms;
            v.first_reconcile_ms.get_or_insert(ms);
            v.maps = self.map_summary();
        }
    }

    /// Kubernetes mode: pods without local-mode annotations are found on the host from
    /// their UID (cgroup, then a process's netns).
    pub fn discover_pods(&mut self) {
        self.discover = true;
    }

    fn placement(&self, w: &Workload) -> Result<(PathBuf, PathBuf), EnrollError> {
        if let (Some(netns), Some(cgroup)) = (&w.netns, &w.cgroup) {
            return Ok((netns.clone(), cgroup.clone()));
        }
        match (&w.uid, self.discover) {
            (Some(uid), true) => {
                let p = crate::discovery::locate(uid, Path::new("/proc/mounts"), Path::new("/proc"))?;
                Ok((p.netns, p.cgroup))
            }
            _ => Err(EnrollError::NoPlacement(if w.netns.is_none() {
                "netns"
            } else {
                "cgroup"
            })),
        }
    }

    async fn enroll(&mut self, w: Arc<Workload>) -> Result<Enrolled, EnrollError> {
        let (netns_path, cgroup) = self.placement(&w)?;
        let netns = PodNetns::open(&netns_path)?;
        let cookie = netns.cookie();
        let pin_dir = pins::pod_dir(&self.bpffs, &w.namespace, &w.name, cookie);
        let steering_current = self
            .bpf
            .pinned_runs_current("steer_inbound", &pin_dir.join("steer_inbound"));
        let (client_ip, client_ip_state) = self.prepare_client_ip(&w, &netns, steering_current).await;
        let pod = Arc::new(CapturedPod {
            workload: w.clone(),
            netns,
            client_ip,
        });
        let view = PodView {
            ip: w.ip,
            netns: pod.netns.path().to_owned(),
            netns_cookie: cookie,
            cgroup: cgroup.clone(),
            listeners: Vec::new(),
            pin_dir: pin_dir.clone(),
            programs: Vec::new(),
            adopted: 0,
            attached: 0,
            listeners_from_fd_store: 0,
            client_ip: client_ip_state,
        };
        let mut e = Enrolled {
            pod,
            view,
            tasks: Vec::new(),
        };
        // Order matters: listeners and map entries exist before the programs redirect
        // anything to them, so no connect is ever refused during enrollment.
        if let Err(err) = self.enroll_steps(&mut e, &netns_path, &cgroup).await {
            self.teardown(&e);
            return Err(err);
        }
        Ok(e)
    }

    /// Prepares the pod's netns for connects from the client's address. A netns that
    /// refuses leaves the pod meshed with its own IP as the peer its application sees.
    /// `steering_current`: the pod's sk_lookup program is this daemon's; an older one
    /// adopted across an upgrade ignores DAEMON_CONNECTS and would steer the daemon's
    /// connects back to 15006 (a loop), so the pod keeps its own IP until re-enrolled.
    async fn prepare_client_ip(
        &self,
        w: &Workload,
        netns: &PodNetns,
        steering_current: bool,
    ) -> (Option<Arc<ClientIp>>, ClientIpState) {
        let Some(c) = &self.ctx.client_ip else {
            return (None, ClientIpState::Disabled);
        };
        if !steering_current {
            let why = "the pod's sk_lookup program was adopted from an older daemon and does not know \
                       DAEMON_CONNECTS; the application sees the pod's own IP until the pod is re-enrolled";
            tracing::warn!(pod = %w.key(), "client IP not preserved: {why}");
            return (None, ClientIpState::Unavailable(why.into()));
        }
        match c.prepare(netns).await {
            Ok(()) => (Some(c.clone()), ClientIpState::Preserved),
            Err(e) => {
                tracing::warn!(pod = %w.key(), "client IP not preserved, the application sees the pod's own IP: {e}");
                (None, ClientIpState::Unavailable(e.to_string()))
            }
        }
    }

    async fn enroll_steps(&mut self, e: &mut Enrolled, netns_path: &Path, cgroup: &Path) -> Result<(), EnrollError> {
        let ip = e.pod.workload.ip;
        let specs = [
            (SocketAddr::from(([127, 0, 0, 1], PORT_OUTBOUND)), Kind::Outbound),
            (
                SocketAddr::from(([0, 0, 0, 0], PORT_INBOUND_PLAINTEXT)),
                Kind::InboundPlaintext,
            ),
            (SocketAddr::from(([0, 0, 0, 0], PORT_HBONE)), Kind::Hbone),
        ];
        let mut listeners = Vec::new();
        for (addr, kind) in specs {
            let l = self.listener(e, addr).await?;
            listeners.push((l, kind));
        }
        self.bpf.set_pod(e.view.netns_cookie, ip)?;
        self.bpf.register_listener(ip, &listeners[1].0)?;
        for (l, kind) in listeners {
            e.view
                .listeners
                .push(l.local_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))));
            e.tasks
                .push(tokio::spawn(accept_loop(l, kind, e.pod.clone(), self.ctx.clone())));
        }
        std::fs::create_dir_all(&e.view.pin_dir).map_err(|source| EnrollError::PinDir {
            path: e.view.pin_dir.clone(),
            source,
        })?;
        for (prog, target) in PROGRAMS {
            let at = if target == Target::Cgroup { cgroup } else { netns_path };
            let adopted = self.bpf.attach_pinned(prog, target, at, &e.view.pin_dir.join(prog))?;
            if adopted {
                e.view.adopted += 1
            } else {
                e.view.attached += 1
            }
            e.view.programs.push(prog);
        }
        Ok(())
    }

    fn unenroll(&mut self, key: &str) {
        if let Some(e) = self.pods.remove(key) {
            self.teardown(&e);
            tracing::info!(pod = %key, "pod un-enrolled");
        }
    }

    /// Detach first (new connects stop being redirected), then drop map entries; the
    /// listeners close when `e` is dropped.
    fn teardown(&mut self, e: &Enrolled) {
        if let Some(c) = &e.pod.client_ip {
            c.forget(&e.pod.netns);
        }
        if let Some(store) = &self.fdstore
            && let Err(err) = store.del(&fd_prefix(&e.view.pin_dir))
        {
            tracing::warn!("fd store: {err}");
        }
        if let Err(err) = pins::remove_dir(&e.view.pin_dir) {
            tracing::warn!(dir = %e.view.pin_dir.display(), "cannot remove pinned links: {err}");
        }
        let ip_still_used = self.pods.values().any(|o| o.view.ip == e.view.ip);
        if !ip_still_used {
            self.bpf.remove_pod(e.view.netns_cookie, e.view.ip);
        }
    }

    /// Un-enrolls pods whose netns has disappeared while the configuration still lists
    /// them (the kernel already detached their sk_lookup; this drops pins, map entries
    /// and listeners). Returns how many went.
    pub fn prune_dead(&mut self) -> usize {
        let dead: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| !e.view.netns.exists())
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            tracing::info!(pod = %k, "netns is gone; un-enrolling");
            self.unenroll(k);
        }
        dead.len()
    }

    /// After the first reconcile of a (re)started daemon: pins and map entries of pods
    /// that are no longer enrolled, or whose netns is gone, are removed.
    pub fn clean_stale(&mut self) {
        let live_dirs: BTreeSet<PathBuf> = self.pods.values().map(|e| e.view.pin_dir.clone()).collect();
        for d in pins::pinned_pods(&self.bpffs) {
            if !live_dirs.contains(&d) {
                match pins::remove_dir(&d) {
                    Ok(n) => tracing::info!(dir = %d.display(), links = n, "removed stale pinned links"),
                    Err(e) => tracing::warn!(dir = %d.display(), "cannot remove stale pins: {e}"),
                }
            }
        }
        for name in std::mem::take(&mut self.held).into_keys() {
            if let Some(store) = &self.fdstore {
                let _ = store.del(&name);
            }
            tracing::info!(listener = %name, "closed a stale listener from the fd store");
        }
        let live: BTreeSet<u64> = self.pods.values().map(|e| e.view.netns_cookie).collect();
        let live_ips: BTreeSet<Ipv4Addr> = self.pods.values().map(|e| e.view.ip).collect();
        for (cookie, ip) in self.bpf.pod_cookies() {
            if !live.contains(&cookie) {
                self.bpf.remove_pod(
                    cookie,
                    if live_ips.contains(&ip) {
                        Ipv4Addr::UNSPECIFIED
                    } else {
                        ip
                    },
                );
                tracing::info!(netns_cookie = cookie, %ip, "removed stale pod entry");
            }
        }
    }

    /// `--detach-on-exit`: everything goes, pins included.
    pub fn detach_all(&mut self) {
        let keys: Vec<String> = self.pods.keys().cloned().collect();
        for k in keys {
            self.unenroll(&k);
        }
        if let Some(store) = self.fdstore.take() {
            let _ = store.quit();
        }
        if let Err(e) = pins::remove_all(&self.bpffs) {
            tracing::warn!(dir = %self.bpffs.display(), "cannot remove all pins: {e}");
        }
    }

    pub fn map_summary(&self) -> serde_json::Value {
        let pods: Vec<String> = self
            .bpf
            .pod_cookies()
            .iter()
            .map(|(c, ip)| format!("{c}={ip}"))
            .collect();
        let listeners: Vec<String> = self.bpf.listener_ips().iter().map(Ipv4Addr::to_string).collect();
        serde_json::json!({ "pod_self": pods, "inbound_listeners": listeners })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(ip: [u8; 4], netns: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "a".into(),
            service_account: "default".into(),
            node: "n1".into(),
            ip: ip.into(),
            labels: BTreeMap::new(),
            ready: true,
            enrolled: true,
            proxy: false,
            trust_domain: "cluster.local".into(),
            netns: Some(netns.into()),
            cgroup: Some("/sys/fs/cgroup/pod-a".into()),
            uid: None,
            named_ports: Vec::new(),
        }
    }

    #[test]
    fn a_pod_moved_to_another_netns_or_ip_is_re_enrolled() {
        let a = workload([198, 18, 1, 2], "/run/netns/a");
        assert!(same_placement(&a, &a.clone()));
        let mut relabelled = a.clone();
        relabelled.labels.insert("v".into(), "2".into());
        assert!(same_placement(&a, &relabelled), "label changes do not re-attach");
        assert!(!same_placement(&a, &workload([198, 18, 1, 3], "/run/netns/a")));
        assert!(!same_placement(&a, &workload([198, 18, 1, 2], "/run/netns/a2")));
    }

    #[test]
    fn fd_store_names_are_scoped_to_the_pod_pin_dir() {
        let d = pins::pod_dir(Path::new("/sys/fs/bpf/mesh/n1"), "shop", "a", 7);
        assert_eq!(fd_name(&d, PORT_OUTBOUND), "shop_a_7:15001");
        assert!(fd_name(&d, PORT_HBONE).starts_with(&fd_prefix(&d)));
        let other = pins::pod_dir(Path::new("/sys/fs/bpf/mesh/n1"), "shop", "a", 70);
        assert!(
            !fd_name(&other, PORT_HBONE).starts_with(&fd_prefix(&d)),
            "a re-created pod is not matched by prefix"
        );
    }
}
