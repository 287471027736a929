//! `ca`: what obtaining certificates from the mesh CA costs.
//!
//! 1. Certificates issued per second, 8 requests at a time: through `mesh-ca` over
//!    gRPC/TLS (token review, node scoping, the CSR path every node daemon, waypoint and
//!    gateway now takes), from the unenrolled pod `plain/client` on n1 with n1's daemon
//!    token, asking for the identity of `mesh/client` (scheduled on n1); against
//!    in-process signing, the way each daemon signed before the CA existed: the same key
//!    generation, CSR, signature and chain check with the root key in the calling process
//!    (one thread, no network, no authentication).
//! 2. Time from a pod's creation (harness: netns, veth, cgroup, config file written) to
//!    its first answered HTTP request to `mesh/remote` through HBONE, which needs the
//!    pod's certificate from the CA first; against the same for a pod of the `plain`
//!    namespace to `plain/remote` (no capture, no certificate). Namespace `mesh` is made
//!    STRICT first (and stays so: `ca` runs last), so that a request the new pod makes
//!    before its daemon captures it is refused instead of counting as an answer. The
//!    pre-CA daemons cannot be run any more, so this row's baseline is the unmeshed pod,
//!    not in-process signing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Args;
use mesh_hbone::SpiffeId;
use mesh_hbone::ca::{CaClient, CaClientConfig};

use super::lab::{HTTP_PORT, Lab, PodRef};
use super::report::{Better, Row, Stat};
use super::tool::{LoadResult, Tally};
use super::{BenchOptions, progress};

const CSR_CLIENT: PodRef = ("plain", "client");
const IDENTITY: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const CONC: &str = "8";

pub fn run(lab: &mut Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let mut rows = issued_per_second(lab, opts)?;
    rows.extend(first_connection(lab, opts)?);
    Ok(rows)
}

fn issued_per_second(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let secs = if opts.quick { "2" } else { "4" };
    let ca = &lab.mesh.ca;
    let token = ca.token_path("mesh-system", "mesh-node-n1");
    let (address, root) = (ca.address(), ca.root_cert().display().to_string());
    let remote: Vec<&str> = vec![
        "csr",
        "--address",
        &address,
        "--root-cert",
        &root,
        "--token-file",
        token.to_str().unwrap_or_default(),
        "--identity",
        IDENTITY,
        "--conc",
        CONC,
        "--secs",
        secs,
    ];
    let local = ["csr", "--identity", IDENTITY, "--secs", secs];
    let (mut rate, mut base, mut p50, mut base_p50, mut errors, mut first) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0, None);
    for rep in 0..opts.reps() {
        progress(&format!("ca rep {}/{}: CSRs to mesh-ca", rep + 1, opts.reps()));
        let r = lab.load(CSR_CLIENT, &remote)?;
        rate.push(r.per_sec);
        p50.push(r.p50_us);
        errors += r.errors;
        first = first.or(r.first_error);
        progress(&format!("ca rep {}/{}: in-process signing", rep + 1, opts.reps()));
        let b = lab.load(CSR_CLIENT, &local)?;
        base.push(b.per_sec);
        base_p50.push(b.p50_us);
    }
    let path = "mesh-ca over gRPC/TLS (token review, node scoping), 8 at a time";
    let baseline = "in-process signing (root key in the daemon, one thread)";
    let mut issued = Row::new(
        "ca",
        "certificates issued/s",
        path,
        "cert/s",
        Stat::of(&rate),
        Better::Higher,
    )
    .vs(baseline, &Stat::of(&base));
    if errors > 0 {
        issued = issued.note(format!("{errors} failed: {}", first.as_deref().unwrap_or("?")));
    }
    let latency = Row::new("ca", "one certificate, p50", path, "µs", Stat::of(&p50), Better::Lower)
        .vs(baseline, &Stat::of(&base_p50));
    Ok(vec![issued, latency])
}

/// Pod YAML for the `n`-th new pod of `namespace` on n1.
fn new_pod(namespace: &str, n: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: new{n}, namespace: {namespace}}}\n\
         spec: {{nodeName: n1, serviceAccountName: fresh{n}}}\n"
    )
}

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
     metadata: {name: bench-strict, namespace: mesh}\nspec: {mtls: {mode: STRICT}}\n";

/// Applies STRICT to namespace `mesh` and waits until plaintext from `plain/client` to
/// `mesh/remote` is refused.
fn make_mesh_strict(lab: &Lab) -> anyhow::Result<()> {
    lab.mesh.apply("bench-strict", STRICT)?;
    let target = format!("{}:{HTTP_PORT}", lab.ip(("mesh", "remote"))?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let r = lab.load(
            ("plain", "client"),
            &["first", "--target", &target, "--timeout-secs", "0.3"],
        )?;
        if r.ok == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("PeerAuthentication STRICT on namespace mesh not in force after 20 s")
}

fn first_connection(lab: &mut Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    make_mesh_strict(lab)?;
    let (mut mesh, mut plain) = (Vec::new(), Vec::new());
    for rep in 0..opts.reps() {
        for (namespace, server, out) in [
            ("mesh", ("mesh", "remote"), &mut mesh),
            ("plain", ("plain", "remote"), &mut plain),
        ] {
            progress(&format!(
                "ca rep {}/{}: new pod in {namespace} to first answer",
                rep + 1,
                opts.reps()
            ));
            let target = format!("{}:{HTTP_PORT}", lab.ip(server)?);
            let name = format!("new{rep}");
            let started = Instant::now();
            lab.cluster.add_pods_yaml(&new_pod(namespace, rep))?;
            lab.cluster.write_config(lab.mesh.config_dir())?;
            let r = lab.load(
                (namespace, leak(name)),
                &["first", "--target", &target, "--timeout-secs", "30"],
            )?;
            anyhow::ensure!(r.ok == 1, "no answer from {target} within 30 s: {:?}", r.first_error);
            out.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(vec![
        Row::new(
            "ca",
            "pod creation → first answered request",
            "mesh pod (capture + certificate by CSR + HBONE)",
            "ms",
            Stat::of(&mesh),
            Better::Lower,
        )
        .vs("plain pod (no mesh)", &Stat::of(&plain)),
    ])
}

/// Pod names live as long as the bench's cluster; a handful per run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[derive(Args, Debug, Clone)]
pub struct CsrArgs {
    /// The CA, `https://host:port`; without it, signs in process (the baseline).
    #[arg(long)]
    pub address: Option<String>,
    #[arg(long)]
    pub root_cert: Option<PathBuf>,
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Asked for on behalf of a pod (node-agent impersonation) when `--address` is set.
    #[arg(long)]
    pub identity: SpiffeId,
    #[arg(long, default_value_t = 8)]
    pub conc: usize,
    #[arg(long, default_value_t = 4.0)]
    pub secs: f64,
}

/// `bench-tool csr`: certificates obtained per second, with a fresh key each.
pub async fn csr_loop(a: CsrArgs) -> anyhow::Result<LoadResult> {
    match &a.address {
        Some(address) => remote(&a, address).await,
        None => in_process(&a),
    }
}

async fn remote(a: &CsrArgs, address: &str) -> anyhow::Result<LoadResult> {
    let root = a.root_cert.as_ref().context("--root-cert is required with --address")?;
    let client = Arc::new(CaClient::new(CaClientConfig {
        address: address.to_owned(),
        server_name: "mesh-ca.mesh-system.svc".into(),
        root_pem: std::fs::read_to_string(root).with_context(|| format!("read {}", root.display()))?,
        token_file: a
            .token_file
            .clone()
            .context("--token-file is required with --address")?,
        cluster_id: "Kubernetes".into(),
        timeout: Duration::from_secs(5),
    })?);
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.conc.max(1) {
        let (client, identity) = (client.clone(), a.identity.clone());
        tasks.spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < end {
                let t = Instant::now();
                match client.fetch(&identity, true, Duration::from_secs(3600), 1).await {
                    Ok(_) => tally.record(t.elapsed()),
                    Err(e) => {
                        tally.error(&anyhow::Error::from(e));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        });
    }
    let mut all = Tally::new();
    while let Some(t) = tasks.join_next().await {
        all.merge(&t?);
    }
    Ok(all.result(started.elapsed().as_secs_f64()))
}

fn in_process(a: &CsrArgs) -> anyhow::Result<LoadResult> {
    let dir = std::env::temp_dir().join(format!("mesh-bench-ca-{}", std::process::id()));
    mesh_ca::authority::create_root(&dir, &a.identity.trust_domain)?;
    let authority = mesh_ca::authority::Authority::load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let authority = authority?;
    let roots = mesh_hbone::ca::client::root_store_pem(authority.root_pem())?;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.secs);
    let mut tally = Tally::new();
    while Instant::now() < end {
        let t = Instant::now();
        let csr = mesh_hbone::ca::csr::generate(&a.identity)?;
        let chain = authority.sign_csr(&csr.pem, &a.identity, Duration::from_secs(3600))?;
        mesh_hbone::ca::client::assemble(&csr.key, &chain, &roots, &a.identity, SystemTime::now(), 1)?;
        tally.record(t.elapsed());
    }
    Ok(tally.result(started.elapsed().as_secs_f64()))
}

#[derive(Args, Debug, Clone)]
pub struct FirstArgs {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value_t = 30.0)]
    pub timeout_secs: f64,
}

/// `bench-tool first`: one HTTP request after another until one is answered; `ok` is 1
/// when one was, `p50_us` the time until then, `errors` the failed attempts.
pub async fn first_answer(a: FirstArgs) -> anyhow::Result<LoadResult> {
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(a.timeout_secs);
    let mut tally = Tally::new();
    while Instant::now() < end {
        match super::tool::one_connection(a.target, true).await {
            Ok(()) => {
                tally.record(started.elapsed());
                break;
            }
            Err(e) => {
                tally.error(&e);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    Ok(tally.result(started.elapsed().as_secs_f64()))
}
