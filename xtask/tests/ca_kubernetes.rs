//! `mesh-ca run --kubernetes` against the workspace's test API server (issue 15): the
//! CA verifies each caller's token by a real TokenReview (`POST
//! /apis/authentication.k8s.io/v1/tokenreviews`) and reads the caller's pod and the
//! pods of its node (pods get, and list with `spec.nodeName`) over kube-rs. A node
//! daemon's token obtains the identities of pods on its node and is refused (and the
//! refusal logged with its reason) for a pod on another node; a gateway's or a
//! waypoint's token gets its own identity only. Loopback only; real gRPC/TLS.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use xtask::apiserver::{ApiServer, TokenSubject};
use xtask::harness::{ProcessGuard, bin_path, wait_for};

/// (namespace, name, node, service account)
const PODS: &[(&str, &str, &str, &str)] = &[
    ("mesh-system", "mesh-node-n1", "n1", "mesh-node"),
    ("shop", "web-1", "n1", "web"),
    ("shop", "db-1", "n2", "db"),
    ("istio-system", "istio-ingressgateway-1", "n1", "istio-ingressgateway"),
    ("shop", "waypoint-1", "n2", "waypoint"),
];

const NAMESPACES: &[&str] = &["mesh-system", "shop", "istio-system"];

fn namespaces_yaml(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn pods_yaml() -> String {
    PODS.iter()
        .map(|(ns, name, node, sa)| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\n\
                 spec: {{nodeName: {node}, serviceAccountName: {sa}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

const ROOT_CONFIGMAP: &str = "mesh-ca-root-cert";
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";
const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway";
const WAYPOINT: &str = "spiffe://cluster.local/ns/shop/sa/waypoint";

struct Lab {
    api: ApiServer,
    dir: tempfile::TempDir,
    address: String,
    _ca: ProcessGuard,
}

impl Lab {
    fn start() -> Lab {
        let api = ApiServer::start(|| TcpListener::bind("127.0.0.1:0")).expect("test API server");
        api.apply_yaml("pods.yaml", &pods_yaml()).expect("apply pods");
        api.apply_yaml("namespaces.yaml", &namespaces_yaml(NAMESPACES))
            .expect("apply namespaces");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("probe");
            l.local_addr().expect("probe addr").port()
        };
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let ca = ProcessGuard::adopt(
            Command::new(bin_path("mesh-ca").expect("mesh-ca is built"))
                .args(["run", "--kubernetes", "--create-root", "--listen", &listen.to_string()])
                .args([
                    "--publish-root-configmap",
                    ROOT_CONFIGMAP,
                    "--root-configmap-resync-secs",
                    "1",
                ])
                .arg("--cacerts-dir")
                .arg(dir.path().join("cacerts"))
                .env("KUBECONFIG", &kubeconfig)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("ca.log")).expect("log file"))
                .spawn()
                .expect("mesh-ca starts"),
            "mesh-ca",
        );
        let lab = Lab {
            api,
            address: format!("https://{listen}"),
            dir,
            _ca: ca,
        };
        wait_for("mesh-ca listens", Duration::from_secs(30), || {
            std::net::TcpStream::connect(listen).ok()
        })
        .unwrap_or_else(|e| panic!("{e}\nCA log:\n{}", lab.log()));
        lab
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.log")).unwrap_or_default()
    }

    /// Registers `token` with the API server for a pod's ServiceAccount, and writes it
    /// to a file as a projected token volume would.
    fn token(&self, name: &str, namespace: &str, service_account: &str, pod: &str, audience: &str) -> PathBuf {
        let token = format!("token-{name}");
        self.api.add_token(
            &token,
            TokenSubject {
                namespace: namespace.into(),
                service_account: service_account.into(),
                pod: Some(pod.into()),
                audiences: vec![audience.into()],
            },
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, token).expect("write token");
        path
    }

    /// `mesh-ca request`: (exit code, output).
    fn request(&self, token: &Path, identity: &str, impersonate: bool) -> (i32, String) {
        let mut cmd = Command::new(bin_path("mesh-ca").expect("mesh-ca is built"));
        cmd.args(["request", "--address", &self.address, "--identity", identity])
            .arg("--root-cert")
            .arg(self.dir.path().join("cacerts/root-cert.pem"))
            .arg("--token-file")
            .arg(token);
        if impersonate {
            cmd.arg("--impersonate");
        }
        let out = cmd.output().expect("mesh-ca request runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text.trim().to_owned())
    }

    /// The `root-cert.pem` of the root ConfigMap in each namespace that has one.
    fn published_roots(&self) -> std::collections::BTreeMap<String, String> {
        self.api
            .objects("ConfigMap")
            .iter()
            .filter(|c| c["metadata"]["name"] == ROOT_CONFIGMAP)
            .map(|c| {
                let ns = c["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
                (ns, c["data"]["root-cert.pem"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// Waits until every namespace in `namespaces` holds exactly `root` in the ConfigMap.
    fn wait_published(&self, namespaces: &[&str], root: &str) {
        wait_for("the root ConfigMap in every namespace", Duration::from_secs(20), || {
            let roots = self.published_roots();
            namespaces
                .iter()
                .all(|ns| roots.get(*ns).is_some_and(|r| r == root))
                .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}\nCA log:\n{}", self.published_roots(), self.log()));
    }

    /// The CA's log line refusing `identity`, once it is written.
    fn refusal(&self, identity: &str) -> String {
        wait_for("the refusal in the CA's log", Duration::from_secs(10), || {
            self.log()
                .lines()
                .find(|l| l.contains("certificate refused") && l.contains(identity))
                .map(str::to_owned)
        })
        .unwrap_or_else(|e| panic!("{e}\nCA log:\n{}", self.log()))
    }
}

#[test]
fn kubernetes_mode_scopes_node_tokens_to_their_node_and_proxies_to_themselves() {
    let lab = Lab::start();
    let node1 = lab.token("node1", "mesh-system", "mesh-node", "mesh-node-n1", "mesh-ca");
    let gateway = lab.token(
        "gateway",
        "istio-system",
        "istio-ingressgateway",
        "istio-ingressgateway-1",
        "mesh-ca",
    );
    let waypoint = lab.token("waypoint", "shop", "waypoint", "waypoint-1", "mesh-ca");

    // node1's daemon: web runs on n1, so its identity is issued.
    let (code, out) = lab.request(&node1, WEB, true);
    assert_eq!(code, 0, "{out}\nCA log:\n{}", lab.log());
    assert!(out.starts_with(&format!("issued {WEB}")), "{out}");

    // db runs on n2 only: refused, and the CA logs why.
    let (code, out) = lab.request(&node1, DB, true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("result=denied"), "{out}");
    let line = lab.refusal(DB);
    assert!(line.contains("not_on_node"), "{line}");
    assert!(line.contains("on node n1"), "{line}");

    // The gateway and the waypoint: their own identity, nothing else.
    for (token, own) in [(&gateway, GATEWAY), (&waypoint, WAYPOINT)] {
        let (code, out) = lab.request(token, own, false);
        assert_eq!(code, 0, "{own}: {out}\nCA log:\n{}", lab.log());
        assert!(out.starts_with(&format!("issued {own}")), "{out}");
        let (code, out) = lab.request(token, WEB, true);
        assert_eq!(code, 1, "{own} obtained {WEB}: {out}");
    }
    let line = lab.refusal(WEB);
    assert!(line.contains("not_node_agent"), "{line}");

    // A token for another audience, and one the API server never issued.
    let wrong_audience = lab.token("node1-api", "mesh-system", "mesh-node", "mesh-node-n1", "api");
    let (code, out) = lab.request(&wrong_audience, WEB, true);
    assert_eq!(code, 1, "{out}");
    let forged = lab.dir.path().join("forged");
    std::fs::write(&forged, "not-a-token").expect("write forged token");
    let (code, out) = lab.request(&forged, WEB, true);
    assert_eq!(code, 1, "{out}");
    let bad_tokens = lab.log().lines().filter(|l| l.contains("bad_token")).count();
    assert_eq!(bad_tokens, 2, "CA log:\n{}", lab.log());
}

#[test]
fn kubernetes_mode_publishes_the_root_alone_in_every_namespace_and_keeps_it() {
    let lab = Lab::start();
    let root = std::fs::read_to_string(lab.dir.path().join("cacerts/root-cert.pem")).expect("root-cert.pem");
    assert!(root.contains("BEGIN CERTIFICATE"), "{root}");
    lab.wait_published(NAMESPACES, &root);
    for c in lab.api.objects("ConfigMap") {
        let data = c["data"].as_object().expect("data");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["root-cert.pem"], "{c}");
        assert!(!c.to_string().contains("PRIVATE KEY"), "{c}");
    }

    // A namespace created later gets it; an edited copy is put back.
    lab.api
        .apply_yaml("late.yaml", &namespaces_yaml(&["late"]))
        .expect("apply namespace");
    let tampered = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {ROOT_CONFIGMAP}, namespace: shop}}\n\
         data: {{root-cert.pem: not-the-root}}\n"
    );
    lab.api
        .apply_yaml("tampered.yaml", &tampered)
        .expect("apply tampered copy");
    let mut all = NAMESPACES.to_vec();
    all.push("late");
    lab.wait_published(&all, &root);
}
