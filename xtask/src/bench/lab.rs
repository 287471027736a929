//! The one local cluster every benchmark runs in: 2 nodes, an ambient namespace `mesh`
//! and a plain namespace `plain` with the same pods, servers in the server pods, and
//! the waypoint in its own ambient pod. Built once per `cargo xtask bench` run.
//!
//! ```text
//! n1: mesh/client  mesh/local   plain/client  plain/lab (loopback lab for `waypoint`)
//! n2: mesh/remote  plain/remote  wpmesh/server  wpmesh/waypoint (HBONE waypoint of `wpmesh`)
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::tool::LoadResult;
use crate::harness::{Cluster, ProcessGuard, bin_path};
use crate::mesh::{LocalMesh, MeshOptions};

/// HTTP server port (1 kB answers) in every server pod.
pub const HTTP_PORT: u16 = 8080;
pub const IPERF_PORT: u16 = 5201;
/// stunnel: client side listens here in plain/client, server side on STUNNEL_TLS_PORT in plain/remote.
pub const STUNNEL_LOCAL_PORT: u16 = 15201;
pub const STUNNEL_TLS_PORT: u16 = 15443;
/// Excluded from eBPF capture so that an iptables REDIRECT can take it (connect bench).
pub const IPTABLES_PORT: u16 = 10;
/// Captured by eBPF; nothing listens there (connect bench: capture cost only).
pub const CAPTURED_CLOSED_PORT: u16 = 9;

const TOPOLOGY: &str = "
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: mesh}
spec: {nodeName: n1, serviceAccountName: client}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: mesh, labels: {app: bench-server}}
spec: {nodeName: n2, serviceAccountName: server}
---
apiVersion: v1
kind: Pod
metadata: {name: local, namespace: mesh}
spec: {nodeName: n1, serviceAccountName: server}
---
apiVersion: v1
kind: Namespace
metadata:
  name: wpmesh
  annotations: {mesh.io/dataplane-mode: ambient}
  labels: {istio.io/use-waypoint: waypoint}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: wpmesh, labels: {app: bench-server}}
spec: {nodeName: n2, serviceAccountName: server}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint, namespace: wpmesh, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: n2, serviceAccountName: waypoint}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: plain}
spec: {nodeName: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: remote, namespace: plain}
spec: {nodeName: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: lab, namespace: plain}
spec: {nodeName: n1}
";

/// Namespace `wpmesh` uses its waypoint: Service `bench` (VIP WAYPOINT_VIP) and the
/// waypoint's own Service, as in Istio ambient.
const WAYPOINT_CONFIG: &str = "
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: wpmesh}
spec: {clusterIP: 198.19.0.40, selector: {app: bench-server}, ports: [{name: http, port: 8080, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: wpmesh, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: 198.19.0.41, selector: {gateway.networking.k8s.io/gateway-name: waypoint}, ports: [{name: mesh, port: 15008}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: wpmesh}
spec:
  hosts: [bench]
  http:
  - route:
    - destination: {host: bench}
";

/// ClusterIP of Service `wpmesh/bench`, whose traffic goes through the waypoint.
pub const WAYPOINT_VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 40);
pub const WAYPOINT_POD: PodRef = ("wpmesh", "waypoint");

/// A pod, by namespace and name.
pub type PodRef = (&'static str, &'static str);

pub struct Lab {
    pub cluster: Cluster,
    pub mesh: LocalMesh,
    pub waypoint: Option<ProcessGuard>,
    guards: Vec<ProcessGuard>,
    tool: PathBuf,
}

impl Lab {
    pub fn start() -> anyhow::Result<Lab> {
        Self::start_with(true)
    }

    /// The mesh, the HTTP servers and the waypoint, without the reference tools
    /// (iperf3, stunnel) that only the benchmarks compare against.
    pub fn start_mesh() -> anyhow::Result<Lab> {
        Self::start_with(false)
    }

    fn start_with(references: bool) -> anyhow::Result<Lab> {
        // The file on disk, not current_exe(): the bench's own `cargo build` may have just
        // replaced the running binary, whose /proc path then ends in " (deleted)".
        let tool = bin_path("xtask").context("finding the xtask binary")?;
        let cluster = Cluster::from_yaml(TOPOLOGY).context("creating the bench cluster")?;
        let options = MeshOptions {
            node_args: vec![
                "--capture-exclude-ports".into(),
                IPTABLES_PORT.to_string(),
                "--config-poll-ms".into(),
                "50".into(),
            ],
            // Per-connection warnings (e.g. resets in the capture bench) would cost CPU in one path only.
            log: Some("error".into()),
            log_dir: None,
            api_server: None,
        };
        let mut mesh = LocalMesh::start(&cluster, options).context("starting mesh-node")?;
        mesh.wait_ready(&cluster, Duration::from_secs(60))
            .context("mesh-node readiness")?;
        let mut lab = Lab {
            cluster,
            mesh,
            waypoint: None,
            guards: Vec::new(),
            tool,
        };
        lab.start_servers(references)?;
        if references {
            lab.start_stunnel()?;
        }
        if let Err(e) = lab.start_waypoint() {
            eprintln!("bench: the waypoint in the mesh did not start ({e:#}); its rows are skipped");
        }
        Ok(lab)
    }

    pub fn ip(&self, (ns, pod): PodRef) -> anyhow::Result<Ipv4Addr> {
        Ok(self.cluster.pod(ns, pod)?.ip)
    }

    pub fn gateway_ip(&self, (ns, pod): PodRef) -> anyhow::Result<Ipv4Addr> {
        Ok(self.cluster.pod(ns, pod)?.gateway_ip)
    }

    /// `xtask bench-tool ARGS...`
    pub fn tool(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.tool);
        c.arg("bench-tool").args(args);
        c
    }

    /// Runs a bench-tool load in `pod` and parses its JSON line.
    pub fn load(&self, (ns, pod): PodRef, args: &[&str]) -> anyhow::Result<LoadResult> {
        let out = self.cluster.run_in_pod(ns, pod, self.tool(args))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().last().map(serde_json::from_str::<LoadResult>) {
            Some(Ok(r)) if out.status.success() => Ok(r),
            _ => bail!(
                "bench-tool {} in {ns}/{pod} failed ({}): {}{}",
                args.join(" "),
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    pub fn spawn(&mut self, (ns, pod): PodRef, cmd: Command) -> anyhow::Result<()> {
        let guard = self
            .cluster
            .spawn_in_pod(ns, pod, cmd)
            .with_context(|| format!("starting a process in {ns}/{pod}"))?;
        self.guards.push(guard);
        Ok(())
    }

    pub fn wait_tcp(&self, (ns, pod): PodRef, addr: SocketAddr) -> anyhow::Result<()> {
        self.cluster
            .wait_tcp_in_pod(ns, pod, addr, Duration::from_secs(20))
            .with_context(|| format!("{addr} in {ns}/{pod}"))?;
        Ok(())
    }

    fn start_servers(&mut self, iperf: bool) -> anyhow::Result<()> {
        for pod in [
            ("plain", "remote"),
            ("mesh", "remote"),
            ("mesh", "local"),
            ("wpmesh", "server"),
        ] {
            if iperf {
                let mut cmd = Command::new("iperf3");
                cmd.args(["-s", "-p", &IPERF_PORT.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                self.spawn(pod, cmd).context("iperf3 -s (apt install iperf3)")?;
                self.wait_tcp(pod, SocketAddr::from(([127, 0, 0, 1], IPERF_PORT)))?;
            }
            let serve = self.tool(&["serve", "--listen", &format!("0.0.0.0:{HTTP_PORT}"), "--name", pod.1]);
            self.spawn(pod, serve)?;
            self.wait_tcp(pod, SocketAddr::from(([127, 0, 0, 1], HTTP_PORT)))?;
        }
        Ok(())
    }

    /// stunnel as a plain mutual-TLS tunnel reference (TLS 1.3, AES-256-GCM, P-256, like HBONE).
    fn start_stunnel(&mut self) -> anyhow::Result<()> {
        let dir = self.cluster.state_dir().join("stunnel");
        std::fs::create_dir_all(&dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=bench",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("openssl (certificate for stunnel)")?;
        if !status.success() {
            bail!("openssl req failed: {status}");
        }
        let remote = self.ip(("plain", "remote"))?;
        let common = format!(
            "foreground = yes\npid =\nsyslog = no\ncert = {}\nkey = {}\nCAfile = {}\nverifyPeer = yes\nsslVersionMin = TLSv1.3\nciphersuites = TLS_AES_256_GCM_SHA384\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
            cert.display(),
            key.display(),
            cert.display()
        );
        let server = format!("{common}[srv]\naccept = 0.0.0.0:{STUNNEL_TLS_PORT}\nconnect = 127.0.0.1:{IPERF_PORT}\n");
        let client = format!(
            "{common}[cli]\nclient = yes\naccept = 127.0.0.1:{STUNNEL_LOCAL_PORT}\nconnect = {remote}:{STUNNEL_TLS_PORT}\n"
        );
        for (name, text, pod, port) in [
            ("server", server, ("plain", "remote"), STUNNEL_TLS_PORT),
            ("client", client, ("plain", "client"), STUNNEL_LOCAL_PORT),
        ] {
            let path = dir.join(format!("{name}.conf"));
            std::fs::write(&path, text)?;
            let mut cmd = Command::new("stunnel4");
            cmd.arg(&path).stdout(Stdio::null()).stderr(Stdio::null());
            self.spawn(pod, cmd).context("stunnel4 (apt install stunnel4)")?;
            self.wait_tcp(pod, SocketAddr::from(([127, 0, 0, 1], port)))?;
        }
        Ok(())
    }

    /// mesh-waypoint in its own pod: HBONE on 15008 with the certificate it obtains from
    /// the mesh CA, HBONE to the endpoints (as in the Bookinfo lab).
    fn start_waypoint(&mut self) -> anyhow::Result<()> {
        self.mesh.apply("bench-waypoint", WAYPOINT_CONFIG)?;
        let pod = self.cluster.pod(WAYPOINT_POD.0, WAYPOINT_POD.1)?;
        let ca_args = self.mesh.proxy_ca_args(&self.cluster, WAYPOINT_POD.0, WAYPOINT_POD.1)?;
        let mut cmd = Command::new(bin_path("mesh-waypoint")?);
        cmd.arg("run")
            .arg("--config-dir")
            .arg(self.mesh.config_dir())
            .args([
                "--namespace",
                WAYPOINT_POD.0,
                "--listen",
                "127.0.0.1:15080",
                "--admin",
                "127.0.0.1:15000",
                "--config-poll-ms",
                "50",
            ])
            .args(&ca_args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = self.cluster.spawn_in_pod(WAYPOINT_POD.0, WAYPOINT_POD.1, cmd)?;
        self.waypoint = Some(guard);
        self.cluster
            .wait_tcp_in_pod(
                WAYPOINT_POD.0,
                WAYPOINT_POD.1,
                SocketAddr::from((pod.ip, 15008)),
                Duration::from_secs(60),
            )
            .context("the waypoint's HBONE port 15008")?;
        Ok(())
    }

    pub fn node_pids(&self) -> Vec<(String, u32)> {
        self.cluster
            .nodes()
            .iter()
            .filter_map(|n| Some((n.name.clone(), self.mesh.pid(&n.name)?)))
            .collect()
    }
}
