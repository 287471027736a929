//! `cargo xtask demo`: the mesh and a Bookinfo-shaped application on this machine,
//! over network namespaces. See README.md "Demo".

mod traffic;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use xtask::bookinfo::{Lab, LabOptions};
use xtask::harness::{Cluster, install_shutdown_handler};
use xtask::mesh::LocalMesh;

/// Where a running demo says where its watched directory is (for `demo apply`).
const CURRENT: &str = "/run/mesh-demo/config-dir";
/// The demo stops by itself after this long, so a forgotten terminal does not run forever.
const MAX_RUN: Duration = Duration::from_secs(8 * 3600);

pub fn run() -> Result<()> {
    crate::bootstrap::run()?;
    eprintln!("[demo] building the workspace");
    crate::test::build_workspace()?;
    let shutdown = install_shutdown_handler()?;
    eprintln!("[demo] creating nodes and pods (network namespaces, veths, cgroups)");
    let cluster = xtask::bookinfo::cluster()?;
    let log_dir = cluster.state_dir().join("logs");
    std::fs::create_dir_all(&log_dir)?;
    print_cluster(&cluster);
    eprintln!("[demo] starting the node daemons, Bookinfo and its waypoint");
    let lab = Lab::start(
        &cluster,
        LabOptions {
            log_dir: Some(log_dir.clone()),
            ..LabOptions::default()
        },
    )?;
    print_readiness(&lab.mesh, &cluster)?;
    publish_current(lab.mesh.config_dir())?;
    let cluster = std::sync::Arc::new(cluster);
    let entry = entry_point(&cluster)?;
    traffic::publish(std::sync::Arc::downgrade(&cluster), entry.clone())?;
    println!(
        "\nlogs: {}\nwatched config: {}",
        log_dir.display(),
        lab.mesh.config_dir().display()
    );
    println!(
        "Open http://{}/productpage in a browser on this machine.",
        traffic::PUBLISHED
    );
    println!("Press Ctrl-C to stop and clean up.\n");
    traffic::live(&cluster, &entry, &shutdown, MAX_RUN);
    let Ok(cluster) = std::sync::Arc::try_unwrap(cluster) else {
        anyhow::bail!("a forwarder still holds the cluster; run `cargo xtask clean`");
    };
    eprintln!("\n[demo] stopping: daemons, apps, namespaces, cgroups, pins");
    let _ = std::fs::remove_file(CURRENT);
    drop(lab);
    cluster.shutdown().context("cleaning up the demo cluster")?;
    eprintln!("[demo] clean");
    Ok(())
}

/// Requests enter at the ingress gateway's pod, from the non-enrolled `outside` pod.
fn entry_point(cluster: &Cluster) -> Result<traffic::Entry> {
    Ok(traffic::Entry {
        cluster_pod: (xtask::bookinfo::CLIENT.0.into(), xtask::bookinfo::CLIENT.1.into()),
        target: xtask::bookinfo::entry(cluster)?,
    })
}

fn print_readiness(mesh: &LocalMesh, cluster: &Cluster) -> Result<()> {
    for node in cluster.nodes() {
        let r = mesh.readiness(cluster, &node.name)?;
        println!(
            "mesh-node {:<8} ready: {}",
            node.name,
            r.body.trim().replace('\n', "; ")
        );
    }
    Ok(())
}

fn print_cluster(cluster: &Cluster) {
    println!("\n{:<10} {:<16} PODS", "NODE", "FABRIC IP");
    for node in cluster.nodes() {
        println!("{:<10} {:<16} 198.18.{}.0/24", node.name, node.ip, node.index);
    }
    println!("\n{:<14} {:<22} {:<8} {:<15}", "NAMESPACE", "POD", "NODE", "IP");
    for pod in cluster.pods() {
        println!("{:<14} {:<22} {:<8} {:<15}", pod.namespace, pod.name, pod.node, pod.ip);
    }
    println!();
}

fn publish_current(config_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(Path::new(CURRENT).parent().unwrap_or(Path::new("/run")))?;
    std::fs::write(CURRENT, config_dir.display().to_string())?;
    Ok(())
}

fn running_config_dir() -> Result<PathBuf> {
    let dir = std::fs::read_to_string(CURRENT).context("no demo is running (start one with `cargo xtask demo`)")?;
    Ok(PathBuf::from(dir.trim()))
}

/// `cargo xtask demo block SERVICE VERSION`.
pub fn block(service: &str, version: &str) -> Result<()> {
    let keep = xtask::bookinfo::block::block(&running_config_dir()?, xtask::bookinfo::NAMESPACE, service, version)?;
    let routes: Vec<String> = keep.iter().map(|(s, w)| format!("{s} {w}%")).collect();
    println!(
        "VirtualService bookinfo/{service}: {version} blocked, now {}",
        routes.join(", ")
    );
    println!("undo with: cargo xtask demo restore {service}");
    Ok(())
}

/// `cargo xtask demo restore SERVICE`.
pub fn restore(service: &str) -> Result<()> {
    xtask::bookinfo::block::restore(&running_config_dir()?, xtask::bookinfo::NAMESPACE, service)?;
    println!("VirtualService bookinfo/{service} restored");
    Ok(())
}

/// `cargo xtask demo apply FILE`: writes each object of FILE into the running demo's
/// watched directory, replacing objects with the same kind/namespace/name.
pub fn apply(file: &Path) -> Result<()> {
    let dir = std::fs::read_to_string(CURRENT).context("no demo is running (start one with `cargo xtask demo`)")?;
    let yaml = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let refs = xtask::mesh::objects::apply_objects(Path::new(dir.trim()), &file.display().to_string(), &yaml)?;
    for r in refs {
        println!("{r} configured");
    }
    Ok(())
}
