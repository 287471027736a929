//! Processes and sockets inside a cluster's pods and nodes.

use std::borrow::BorrowMut;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::super::process::{self, Placement, ProcessGuard};
use super::super::{HarnessError, netns};
use super::{Cluster, RUN_TIMEOUT};

impl Cluster {
    // ---- processes and sockets ----

    fn pod_place(&self, namespace: &str, name: &str) -> Result<Placement, HarnessError> {
        let pod = self.pod(namespace, name)?;
        Ok(Placement {
            netns_path: pod.netns_path,
            cgroup_dir: pod.cgroup,
            label: format!("pod {namespace}/{name}"),
        })
    }

    fn node_place(&self, node: &str) -> Result<Placement, HarnessError> {
        let n = self.node(node)?;
        Ok(Placement {
            netns_path: n.netns_path,
            cgroup_dir: n.cgroup,
            label: format!("node {node}"),
        })
    }

    /// Starts `cmd` inside the pod: in its cgroup and netns. `cmd` may be a
    /// `Command` or `&mut Command` (reusing one adds another pre-exec hook each time).
    pub fn spawn_in_pod(
        &self,
        namespace: &str,
        name: &str,
        cmd: impl BorrowMut<Command>,
    ) -> Result<ProcessGuard, HarnessError> {
        process::spawn(&self.pod_place(namespace, name)?, cmd)
    }

    /// Starts `cmd` on the node (its netns and cgroup): how daemons are run.
    pub fn spawn_on_node(&self, node: &str, cmd: impl BorrowMut<Command>) -> Result<ProcessGuard, HarnessError> {
        process::spawn(&self.node_place(node)?, cmd)
    }

    /// Runs `cmd` in the pod to completion (at most [`RUN_TIMEOUT`]) and returns its
    /// output. A non-zero exit is not an error: check `status`.
    pub fn run_in_pod(
        &self,
        namespace: &str,
        name: &str,
        cmd: impl BorrowMut<Command>,
    ) -> Result<Output, HarnessError> {
        process::run(&self.pod_place(namespace, name)?, cmd, RUN_TIMEOUT)
    }

    /// Runs `cmd` on the node to completion (at most [`RUN_TIMEOUT`]).
    pub fn run_on_node(&self, node: &str, cmd: impl BorrowMut<Command>) -> Result<Output, HarnessError> {
        process::run(&self.node_place(node)?, cmd, RUN_TIMEOUT)
    }

    /// Runs `f` on a thread inside the pod's netns (not its cgroup: sockets made
    /// there belong to the calling process's cgroup, so cgroup eBPF hooks of the
    /// pod do not apply to them; spawn a process for captured traffic).
    pub fn in_pod<T: Send>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T, HarnessError> {
        netns::in_netns(&self.pod(namespace, name)?.netns_path, f)
    }

    /// Runs `f` on a thread inside the node's netns.
    pub fn in_node<T: Send>(&self, node: &str, f: impl FnOnce() -> T + Send) -> Result<T, HarnessError> {
        netns::in_netns(&self.node(node)?.netns_path, f)
    }

    /// A TCP listener on `0.0.0.0:port` inside the pod's netns (port 0: any).
    pub fn listen_in_pod(&self, namespace: &str, name: &str, port: u16) -> Result<TcpListener, HarnessError> {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        self.in_pod(namespace, name, || TcpListener::bind(addr))?
            .map_err(|e| HarnessError::sys(format!("bind {addr} in pod {namespace}/{name}"), e))
    }

    /// A TCP connection to `addr` made from inside the pod's netns (source: the pod IP).
    pub fn connect_from_pod(
        &self,
        namespace: &str,
        name: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, HarnessError> {
        self.in_pod(namespace, name, || TcpStream::connect_timeout(&addr, timeout))?
            .map_err(|e| HarnessError::sys(format!("connect to {addr} from pod {namespace}/{name}"), e))
    }

    /// Polls until a TCP connect to `addr` from inside the netns at `netns_path`
    /// succeeds (e.g. a daemon's readiness port), or fails with a timeout error.
    fn wait_tcp(
        &self,
        netns_path: &Path,
        place: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let what = format!("waiting for {addr} to accept from {place}");
        let attempt = Duration::from_millis(200).min(timeout);
        netns::in_netns(netns_path, || {
            super::super::poll::wait_until(&what, timeout, || TcpStream::connect_timeout(&addr, attempt).is_ok())
        })?
    }

    /// Waits until `addr` accepts TCP connections from the node's netns (e.g. the
    /// node daemon's readiness port `127.0.0.1:15021`).
    pub fn wait_tcp_on_node(&self, node: &str, addr: SocketAddr, timeout: Duration) -> Result<(), HarnessError> {
        self.wait_tcp(&self.node(node)?.netns_path, &format!("node {node}"), addr, timeout)
    }

    /// Waits until `addr` accepts TCP connections from the pod's netns.
    pub fn wait_tcp_in_pod(
        &self,
        namespace: &str,
        name: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        self.wait_tcp(
            &self.pod(namespace, name)?.netns_path,
            &format!("pod {namespace}/{name}"),
            addr,
            timeout,
        )
    }
}
