//! The mesh CA of a local cluster: `mesh-ca` in the first node's netns (as a
//! host-network pod would run), listening on that node's fabric address so every node
//! and pod reaches it. The harness plays the API server's part for authentication: it
//! issues one token per node daemon and per waypoint/gateway pod and writes what a
//! TokenReview would answer for each (ServiceAccount, bound pod, its node) to the file
//! the CA reads (`--token-review-file`). Pods come from the same configuration
//! directory the daemons read. The root is self-signed on first start, in Istio's
//! `cacerts` layout, in a directory only the CA reads; the daemons and proxies get the
//! root certificate alone (a copy, like the `mesh-ca-root-cert` ConfigMap).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Cluster, ProcessGuard, Signal, bin_path};

use super::MeshError;

pub const CA_PORT: u16 = 15012;
pub const SERVER_NAME: &str = "mesh-ca.mesh-system.svc";

/// What a TokenReview says about one issued token.
#[derive(Clone, Debug)]
pub struct TokenGrant {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub node: String,
}

pub struct LocalCa {
    dir: PathBuf,
    node: String,
    ip: Ipv4Addr,
    config_dir: PathBuf,
    grants: Vec<(String, TokenGrant)>,
    process: Option<ProcessGuard>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> MeshError + '_ {
    move |source| MeshError::Config {
        path: path.to_owned(),
        source,
    }
}

impl LocalCa {
    /// Prepares the CA's directory (no process yet).
    pub fn new(cluster: &Cluster, config_dir: &Path) -> Result<Self, MeshError> {
        let first = cluster
            .nodes()
            .into_iter()
            .next()
            .ok_or_else(|| MeshError::NoDaemon("(the cluster has no node for the CA)".into()))?;
        let dir = cluster.state_dir().join("mesh-ca");
        std::fs::create_dir_all(dir.join("tokens")).map_err(io_err(&dir))?;
        Ok(Self {
            dir,
            node: first.name,
            ip: first.ip,
            config_dir: config_dir.to_owned(),
            grants: Vec::new(),
            process: None,
        })
    }

    pub fn address(&self) -> String {
        format!("https://{}:{CA_PORT}", self.ip)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, CA_PORT))
    }

    /// The root certificate alone (what the ConfigMap holds), readable by everyone.
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("root-cert.pem")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("mesh-ca.log")
    }

    fn cacerts(&self) -> PathBuf {
        self.dir.join("cacerts")
    }

    fn review_file(&self) -> PathBuf {
        self.dir.join("token-reviews.yaml")
    }

    /// Where the token of `namespace/pod` is written (the last one issued for it).
    pub fn token_path(&self, namespace: &str, pod: &str) -> PathBuf {
        self.dir.join("tokens").join(format!("{namespace}_{pod}"))
    }

    /// Issues a token for `grant`, records its review, and returns the token file (0600)
    /// to hand to the process, as a projected token volume would.
    pub fn issue_token(&mut self, grant: TokenGrant) -> Result<PathBuf, MeshError> {
        let token = random_token().map_err(io_err(Path::new("/dev/urandom")))?;
        let file = self.token_path(&grant.namespace, &grant.pod);
        write_private(&file, &token).map_err(io_err(&file))?;
        self.grants.push((token, grant));
        self.write_reviews()?;
        Ok(file)
    }

    /// Token of a node daemon: ServiceAccount mesh-system/mesh-node, bound to a pod on `node`.
    pub fn issue_node_token(&mut self, node: &str) -> Result<PathBuf, MeshError> {
        self.issue_token(TokenGrant {
            namespace: "mesh-system".into(),
            service_account: "mesh-node".into(),
            pod: format!("mesh-node-{node}"),
            node: node.into(),
        })
    }

    fn write_reviews(&self) -> Result<(), MeshError> {
        let mut text = String::from("tokens:\n");
        for (token, g) in &self.grants {
            text.push_str(&format!(
                "- {{token: {token}, namespace: {}, serviceAccount: {}, podName: {}, nodeName: {}}}\n",
                g.namespace, g.service_account, g.pod, g.node
            ));
        }
        super::objects::write_atomic(&self.review_file(), &text)?;
        Ok(())
    }

    /// Starts `mesh-ca` and waits until it accepts connections; copies the root out.
    pub fn start(&mut self, cluster: &Cluster) -> Result<(), MeshError> {
        self.write_reviews()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io_err(&self.dir))?;
        let err = log.try_clone().map_err(io_err(&self.dir))?;
        let mut cmd = Command::new(bin_path("mesh-ca")?);
        cmd.arg("run")
            .arg("--listen")
            .arg(self.socket_addr().to_string())
            .arg("--cacerts-dir")
            .arg(self.cacerts())
            .arg("--create-root")
            .arg("--token-review-file")
            .arg(self.review_file())
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(["--server-name", SERVER_NAME])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        self.process = Some(cluster.spawn_on_node(&self.node, cmd)?);
        cluster.wait_tcp_on_node(&self.node, self.socket_addr(), Duration::from_secs(30))?;
        let root = self.cacerts().join("root-cert.pem");
        std::fs::copy(&root, self.root_cert()).map_err(io_err(&root))?;
        Ok(())
    }

    /// SIGKILL (an outage); `start` brings it back with the same root.
    pub fn kill(&mut self) -> Result<(), MeshError> {
        if let Some(mut p) = self.process.take() {
            p.signal(Signal::SIGKILL)?;
            p.wait_timeout(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// The CA's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
