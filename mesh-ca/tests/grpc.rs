//! `mesh-ca run` (the real CLI path) on loopback against the CA client the daemons and
//! proxies use: gRPC over TLS, bearer tokens, node-scoped impersonation, refusals.
//! Local mode: the token file and the Pods of a config directory, as the harness writes them.

use std::time::Duration;

use clap::Parser;
use mesh_ca::cli::{Cli, Command};
use mesh_hbone::SpiffeId;
use mesh_hbone::ca::{CaClient, CaClientConfig, CaClientError, CaResult};

const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop}
spec: {nodeName: n1, serviceAccountName: web}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop}
spec: {nodeName: n2, serviceAccountName: db}
";

const TOKENS: &str = "tokens:
- {token: node1-token, namespace: mesh-system, serviceAccount: mesh-node, podName: mesh-node-x, nodeName: n1}
- {token: pod-a-token, namespace: shop, serviceAccount: web, podName: a, nodeName: n1}
";

/// The refusal of a request that must fail.
/// Polls `check` every 50 ms until it yields a value; `None` when `limit` passes first.
async fn poll_until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let polled = tokio::time::timeout(limit, async {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if let Some(v) = check().await {
                return v;
            }
        }
    });
    polled.await.ok()
}

fn refused(r: Result<mesh_hbone::cert::Current, CaClientError>) -> CaClientError {
    match r {
        Ok(_) => panic!("the CA issued a certificate it must refuse"),
        Err(e) => e,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_issues_by_csr_only_what_the_token_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (cacerts, config, reviews) = (
        dir.path().join("cacerts"),
        dir.path().join("config"),
        dir.path().join("reviews.yaml"),
    );
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("pods.yaml"), PODS).unwrap();
    std::fs::write(&reviews, TOKENS).unwrap();
    let port = free_port();
    let cli = Cli::try_parse_from([
        "mesh-ca",
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cacerts-dir",
        cacerts.to_str().unwrap(),
        "--create-root",
        "--token-review-file",
        reviews.to_str().unwrap(),
        "--config-dir",
        config.to_str().unwrap(),
    ])
    .unwrap();
    let Command::Run(args) = cli.command else { panic!("run") };
    let server = tokio::spawn(mesh_ca::cli::run(args));
    let listening = poll_until(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    assert!(listening.is_some(), "mesh-ca did not listen");
    let root_pem = std::fs::read_to_string(cacerts.join("root-cert.pem")).unwrap();
    let client = |token: &str| {
        let path = dir.path().join(format!("token-{token}"));
        std::fs::write(&path, token).unwrap();
        CaClient::new(CaClientConfig {
            address: format!("https://127.0.0.1:{port}"),
            server_name: "mesh-ca.mesh-system.svc".into(),
            root_pem: root_pem.clone(),
            token_file: path,
            cluster_id: "Kubernetes".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    };
    let web = SpiffeId::new("cluster.local", "shop", "web");
    let db = SpiffeId::new("cluster.local", "shop", "db");
    let hour = Duration::from_secs(3600);

    let node1 = client("node1-token");
    let got = node1.fetch(&web, true, hour, 1).await.expect("web runs on n1");
    assert!(got.not_after > std::time::SystemTime::now() + Duration::from_secs(3000));
    let denied = refused(node1.fetch(&db, true, hour, 1).await);
    eprintln!("FIGURE node1 asks for {db}: {denied}");
    assert_eq!(denied.result(), CaResult::denied, "{denied}");
    assert!(
        denied
            .to_string()
            .contains("no pod with that service account is scheduled on n1"),
        "{denied}"
    );

    let pod_a = client("pod-a-token");
    pod_a
        .fetch(&web, false, hour, 1)
        .await
        .expect("a pod gets its own identity");
    let err = refused(pod_a.fetch(&db, true, hour, 1).await);
    assert!(err.to_string().contains("may only obtain its own identity"), "{err}");

    let err = refused(client("forged").fetch(&web, false, hour, 1).await);
    assert!(matches!(err, CaClientError::Denied { .. }), "{err}");

    // The CA gone: callers see `unreachable`, not a refusal.
    server.abort();
    let _ = server.await;
    let down = poll_until(Duration::from_secs(20), || async {
        match client("node1-token").fetch(&web, true, hour, 1).await {
            Err(e) if e.result() == CaResult::unreachable => Some(e),
            _ => None,
        }
    })
    .await
    .expect("the CA still answers after it stopped");
    eprintln!("FIGURE CA stopped: {down}");
}
