//! The mesh on top of a harness [`Cluster`]: a watched configuration directory, one
//! `mesh-node` per node (in the node's netns and cgroup), the mesh CA ([`ca`]) that
//! issues their pods' certificates, readiness polling, and
//! admin/metrics reads. Shared by the demo and the e2e tests so that every test
//! starts the mesh the same way.

pub mod ca;
mod http;
pub mod objects;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::{ApiServer, ApiServerError};
use crate::harness::{Cluster, HarnessError, ProcessGuard, Signal, bin_path};

pub use http::{HttpReply, http_get, http_get_from_pod, http_get_here, run_helper_in_pod};

/// How the daemons are started. Defaults suit tests and the demo.
#[derive(Clone, Debug, Default)]
pub struct MeshOptions {
    /// Extra `mesh-node run` flags for every node.
    pub node_args: Vec<String>,
    /// `RUST_LOG`-style filter for the daemons (`--log`); default `info`.
    pub log: Option<String>,
    /// Write daemon logs here (one file per node) instead of discarding them.
    pub log_dir: Option<PathBuf>,
    /// Kubernetes mode: the daemons run `--kubernetes` against this test API server
    /// (a kubeconfig under the cluster's state dir points at it), which gets the
    /// topology and every object applied; the directory keeps a copy of what was applied.
    pub api_server: Option<Arc<ApiServer>>,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("cannot write configuration {path}: {source}")]
    Config { path: PathBuf, source: std::io::Error },
    #[error("mesh-node on {node} is not ready after {waited:?}; last answer: {last}")]
    NotReady {
        node: String,
        waited: Duration,
        last: String,
    },
    #[error("mesh-node on {node} exited: {status}")]
    Exited { node: String, status: String },
    #[error(transparent)]
    Apply(#[from] objects::ApplyError),
    #[error("no daemon runs on node {0}")]
    NoDaemon(String),
    #[error(transparent)]
    ApiServer(#[from] ApiServerError),
}

/// The daemons' configuration source in Kubernetes mode.
struct KubeSource {
    api: Arc<ApiServer>,
    kubeconfig: PathBuf,
}

/// Daemons of a running local mesh and its CA; dropping it stops them by PID.
pub struct LocalMesh {
    config_dir: PathBuf,
    options: MeshOptions,
    daemons: BTreeMap<String, ProcessGuard>,
    pub ca: ca::LocalCa,
    kube: Option<KubeSource>,
}

impl LocalMesh {
    /// Writes the cluster's topology into a fresh config directory under the cluster's
    /// state dir and starts `mesh-node` on every node (without waiting for readiness).
    pub fn start(cluster: &Cluster, options: MeshOptions) -> Result<Self, MeshError> {
        let config_dir = cluster.state_dir().join("config");
        std::fs::create_dir_all(&config_dir).map_err(|source| MeshError::Config {
            path: config_dir.clone(),
            source,
        })?;
        cluster.write_config(&config_dir)?;
        let mut ca = ca::LocalCa::new(cluster, &config_dir)?;
        ca.start(cluster)?;
        let kube = match &options.api_server {
            Some(api) => {
                let kubeconfig = cluster.state_dir().join("kubeconfig");
                api.write_kubeconfig(&kubeconfig)?;
                Some(KubeSource {
                    api: api.clone(),
                    kubeconfig,
                })
            }
            None => None,
        };
        let mut mesh = Self {
            config_dir,
            options,
            daemons: BTreeMap::new(),
            ca,
            kube,
        };
        mesh.sync_api_topology(cluster)?;
        for node in cluster.nodes() {
            mesh.start_node(cluster, &node.name)?;
        }
        Ok(mesh)
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The kubeconfig of the test API server in Kubernetes mode.
    pub fn kubeconfig(&self) -> Option<&Path> {
        self.kube.as_ref().map(|k| k.kubeconfig.as_path())
    }

    /// Rewrites the topology file (after pods were added/removed or namespaces annotated);
    /// in Kubernetes mode applies it to the API server and deletes removed pods there.
    pub fn sync_topology(&self, cluster: &Cluster) -> Result<(), MeshError> {
        cluster.write_config(&self.config_dir)?;
        self.sync_api_topology(cluster)
    }

    fn sync_api_topology(&self, cluster: &Cluster) -> Result<(), MeshError> {
        let Some(kube) = &self.kube else { return Ok(()) };
        let rendered = crate::harness::render_config(cluster)?;
        let applied = kube.api.apply_yaml(crate::harness::TOPOLOGY_FILE, &rendered)?;
        let name = |o: &serde_json::Value| {
            let m = &o["metadata"];
            format!(
                "{}/{}",
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or("")
            )
        };
        let live: std::collections::BTreeSet<String> =
            applied.iter().filter(|o| o["kind"] == "Pod").map(name).collect();
        for pod in kube.api.objects("Pod").into_iter().filter(|p| !live.contains(&name(p))) {
            let text = serde_json::to_string(&pod).unwrap_or_default();
            kube.api.delete_yaml("removed pod", &text)?;
        }
        Ok(())
    }

    /// Writes `yaml` as `<name>.yaml` in the watched directory (replacing that file).
    /// Written to a temp file and renamed, so the daemons never read half a file.
    /// In Kubernetes mode the objects also go to the API server.
    pub fn apply(&self, name: &str, yaml: &str) -> Result<PathBuf, MeshError> {
        let path = self.config_dir.join(format!("{name}.yaml"));
        objects::write_atomic(&path, yaml)?;
        if let Some(kube) = &self.kube {
            kube.api.apply_yaml(name, yaml)?;
        }
        Ok(path)
    }

    /// `kubectl apply` for the watched directory: each object of `yaml` replaces the
    /// object with the same kind/namespace/name.
    pub fn apply_objects(
        &self,
        source_name: &str,
        yaml: &str,
    ) -> Result<Vec<mesh_common::model::ObjectRef>, MeshError> {
        let refs = objects::apply_objects(&self.config_dir, source_name, yaml)?;
        if let Some(kube) = &self.kube {
            kube.api.apply_yaml(source_name, yaml)?;
        }
        Ok(refs)
    }

    /// `kubectl apply -f` with kubectl's namespace rules ([`objects::apply`]): one file
    /// per object in the watched directory and, in Kubernetes mode, the same objects
    /// (namespace settled) on the API server.
    pub fn apply_kubectl(
        &self,
        source_name: &str,
        yaml: &str,
        ns: &objects::Namespace,
    ) -> Result<Vec<objects::Change>, MeshError> {
        let changes = objects::apply(&self.config_dir, source_name, yaml, ns)?;
        if let Some(kube) = &self.kube {
            for c in &changes {
                let path = self.config_dir.join(objects::file_name(&c.object));
                let text = std::fs::read_to_string(&path).map_err(|source| MeshError::Config { path, source })?;
                kube.api.apply_yaml(source_name, &text)?;
            }
        }
        Ok(changes)
    }

    /// `kubectl delete` of one object: its file in the watched directory and, in
    /// Kubernetes mode, the object on the API server.
    pub fn delete_object(&self, object: &mesh_common::model::ObjectRef) -> Result<(), MeshError> {
        let path = self.config_dir.join(objects::file_name(object));
        let text = std::fs::read_to_string(&path).map_err(|source| MeshError::Config {
            path: path.clone(),
            source,
        })?;
        if let Some(kube) = &self.kube {
            kube.api.delete_yaml(&object.to_string(), &text)?;
        }
        std::fs::remove_file(&path).map_err(|source| MeshError::Config { path, source })
    }

    /// Removes `<name>.yaml` from the watched directory (in Kubernetes mode, its
    /// objects from the API server).
    pub fn delete(&self, name: &str) -> Result<(), MeshError> {
        let path = self.config_dir.join(format!("{name}.yaml"));
        if let (Some(kube), Ok(text)) = (&self.kube, std::fs::read_to_string(&path)) {
            kube.api.delete_yaml(name, &text)?;
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(MeshError::Config { path, source: e }),
            _ => Ok(()),
        }
    }

    /// Flags that point a waypoint or gateway pod at the CA, with a token bound to that pod.
    pub fn proxy_ca_args(&mut self, cluster: &Cluster, namespace: &str, pod: &str) -> Result<Vec<String>, MeshError> {
        let info = cluster.pod(namespace, pod)?;
        let token = self.ca.issue_token(ca::TokenGrant {
            namespace: namespace.into(),
            service_account: info.service_account.clone(),
            pod: pod.into(),
            node: info.node.clone(),
        })?;
        Ok(vec![
            "--ca-address".into(),
            self.ca.address(),
            "--ca-root-cert".into(),
            self.ca.root_cert().display().to_string(),
            "--ca-token-file".into(),
            token.display().to_string(),
            "--service-account".into(),
            info.service_account.clone(),
        ])
    }

    pub fn start_node(&mut self, cluster: &Cluster, node: &str) -> Result<(), MeshError> {
        let guard = self.spawn_node(cluster, node, &[])?;
        self.daemons.insert(node.to_owned(), guard);
        Ok(())
    }

    /// Starts a new daemon on `node` beside the running one, which hands over to it
    /// (README.md, "Upgrades"), and returns the old one's guard once the new one serves
    /// (it wrote its `--started-file`). The old one drains and exits by itself.
    pub fn upgrade_node(
        &mut self,
        cluster: &Cluster,
        node: &str,
        timeout: Duration,
    ) -> Result<ProcessGuard, MeshError> {
        self.upgrade_node_with(cluster, node, timeout, &[])
    }

    /// [`Self::upgrade_node`] to a daemon started with `extra` flags as well.
    pub fn upgrade_node_with(
        &mut self,
        cluster: &Cluster,
        node: &str,
        timeout: Duration,
        extra: &[String],
    ) -> Result<ProcessGuard, MeshError> {
        let old = self
            .daemons
            .remove(node)
            .ok_or_else(|| MeshError::NoDaemon(node.into()))?;
        let marker = cluster
            .node(node)?
            .state_dir
            .join(format!("started-after-{}", old.pid()));
        let _ = std::fs::remove_file(&marker);
        let mut args = vec!["--started-file".into(), marker.display().to_string()];
        args.extend_from_slice(extra);
        let new = self.spawn_node(cluster, node, &args)?;
        self.daemons.insert(node.to_owned(), new);
        crate::harness::wait_until("the new daemon to take over", timeout, || marker.exists()).map_err(|_| {
            MeshError::NotReady {
                node: node.into(),
                waited: timeout,
                last: format!("{} was not written", marker.display()),
            }
        })?;
        Ok(old)
    }

    /// Stops the node's daemon (SIGTERM, no successor) and starts it again.
    pub fn restart_node(&mut self, cluster: &Cluster, node: &str, timeout: Duration) -> Result<(), MeshError> {
        let mut old = self
            .daemons
            .remove(node)
            .ok_or_else(|| MeshError::NoDaemon(node.into()))?;
        old.stop()?;
        self.start_node(cluster, node)?;
        self.wait_node_ready(cluster, node, timeout)
    }

    fn spawn_node(&mut self, cluster: &Cluster, node: &str, extra: &[String]) -> Result<ProcessGuard, MeshError> {
        let info = cluster.node(node)?;
        let token = self.ca.issue_node_token(node)?;
        let mut cmd = Command::new(bin_path("mesh-node")?);
        cmd.arg("run");
        match &self.kube {
            Some(kube) => cmd.arg("--kubernetes").env("KUBECONFIG", &kube.kubeconfig),
            None => cmd.arg("--config-dir").arg(&self.config_dir),
        };
        cmd.args(["--node", node])
            .arg("--bpffs-dir")
            .arg(&info.bpf_dir)
            .arg("--state-dir")
            .arg(&info.state_dir)
            .args(["--log", self.options.log.as_deref().unwrap_or("info")])
            .args(["--ca-address", &self.ca.address()])
            .arg("--ca-root-cert")
            .arg(self.ca.root_cert())
            .arg("--ca-token-file")
            .arg(&token)
            .args(["--cluster-cidrs", crate::harness::CLUSTER_CIDRS])
            .args(&self.options.node_args)
            .args(extra)
            .stdin(Stdio::null());
        match &self.options.log_dir {
            Some(dir) => {
                let path = dir.join(format!("mesh-node-{node}.log"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| MeshError::Config { path, source })?;
                let err = file.try_clone().map_err(|source| MeshError::Config {
                    path: dir.clone(),
                    source,
                })?;
                cmd.stdout(file).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        Ok(cluster.spawn_on_node(node, cmd)?)
    }

    /// SIGKILL, like a crash: pinned programs and maps stay behind.
    pub fn kill_node(&mut self, node: &str) -> Result<(), MeshError> {
        let mut guard = self
            .daemons
            .remove(node)
            .ok_or_else(|| MeshError::NoDaemon(node.into()))?;
        guard.signal(Signal::SIGKILL)?;
        guard.wait_timeout(Duration::from_secs(10))?;
        Ok(())
    }

    /// How the node's daemon ended (reaping it), or `None` while it runs.
    pub fn exited(&mut self, node: &str) -> Result<Option<std::process::ExitStatus>, MeshError> {
        let guard = self
            .daemons
            .get_mut(node)
            .ok_or_else(|| MeshError::NoDaemon(node.into()))?;
        Ok(guard.try_wait()?)
    }

    /// The nodes this mesh started a daemon on.
    pub fn nodes(&self) -> Vec<String> {
        self.daemons.keys().cloned().collect()
    }

    pub fn pid(&self, node: &str) -> Option<u32> {
        self.daemons.get(node).map(ProcessGuard::pid)
    }

    /// Polls every daemon's readiness endpoint until all answer 200, or fails with
    /// the last readiness report.
    pub fn wait_ready(&mut self, cluster: &Cluster, timeout: Duration) -> Result<(), MeshError> {
        let nodes: Vec<String> = self.daemons.keys().cloned().collect();
        for node in nodes {
            self.wait_node_ready(cluster, &node, timeout)?;
        }
        Ok(())
    }

    pub fn wait_node_ready(&mut self, cluster: &Cluster, node: &str, timeout: Duration) -> Result<(), MeshError> {
        let mut last = String::from("no answer yet");
        let mut exited = None;
        let ready = crate::harness::wait_until("readiness", timeout, || {
            match self.daemons.get_mut(node).map(ProcessGuard::try_wait) {
                Some(Ok(Some(status))) => exited = Some(status.to_string()),
                None => exited = Some("not started".into()),
                _ => {}
            }
            match self.readiness(cluster, node) {
                _ if exited.is_some() => return true,
                Ok(r) if r.status == 200 => return true,
                Ok(r) => last = format!("{} {}", r.status, r.body.trim()),
                Err(e) => last = e.to_string(),
            }
            false
        });
        match (exited, ready) {
            (Some(status), _) => Err(MeshError::Exited {
                node: node.into(),
                status,
            }),
            (None, Ok(())) => Ok(()),
            (None, Err(_)) => Err(MeshError::NotReady {
                node: node.into(),
                waited: timeout,
                last,
            }),
        }
    }

    pub fn readiness(&self, cluster: &Cluster, node: &str) -> Result<HttpReply, MeshError> {
        Ok(http_get(cluster, node, "127.0.0.1:15021", "/healthz/ready")?)
    }

    /// The daemon's `/config_dump` as JSON.
    pub fn config_dump(&self, cluster: &Cluster, node: &str) -> Result<serde_json::Value, MeshError> {
        let r = http_get(cluster, node, "127.0.0.1:15000", "/config_dump")?;
        Ok(serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body)))
    }

    /// The daemon's Prometheus metrics text.
    pub fn metrics(&self, cluster: &Cluster, node: &str) -> Result<String, MeshError> {
        Ok(http_get(cluster, node, "127.0.0.1:15020", "/metrics")?.body)
    }
}
