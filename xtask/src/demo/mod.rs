//! `cargo xtask demo`: the mesh and a Bookinfo-shaped application on this machine,
//! over network namespaces. See README.md "Demo".

mod manifests;
mod status;
mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use xtask::bookinfo::publish::{publish, publish_to};
use xtask::bookinfo::supervise::Supervisor;
use xtask::bookinfo::{Lab, LabOptions};
use xtask::harness::{Cluster, Shutdown, install_shutdown_handler};
use xtask::mesh::LocalMesh;

pub use manifests::ManifestArgs;

/// Where a running demo says where its watched directory is (for `demo apply`).
const CURRENT: &str = "/run/mesh-demo/config-dir";
/// Where a running demo says where its token issuer's key is (for `demo token`).
const ISSUER_DIR: &str = "/run/mesh-demo/issuer-dir";
/// Host address the demo publishes Bookinfo on (loopback only).
const PUBLISHED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9080);
/// Host address the demo publishes Prometheus on (loopback only).
const PROMETHEUS: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
/// Host address the demo serves the traffic map on (loopback only; Kiali's usual port).
const MAP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 20001);
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
    let mut lab = Lab::start(
        &cluster,
        LabOptions {
            log_dir: Some(log_dir.clone()),
            prometheus: true,
            ..LabOptions::default()
        },
    )?;
    print_readiness(&lab.mesh, &cluster)?;
    publish_current(lab.mesh.config_dir())?;
    std::fs::write(ISSUER_DIR, lab.issuer.dir.display().to_string())?;
    let published = publish(&cluster, PUBLISHED).with_context(|| format!("publishing Bookinfo on {PUBLISHED}"))?;
    let prometheus = xtask::bookinfo::prometheus::address(&cluster)?;
    // A Prometheus of the host's own (Debian's package may start one) can hold 9090:
    // then any free loopback port, printed below.
    let published_prometheus = publish_to(&cluster, PROMETHEUS, prometheus)
        .or_else(|e| {
            eprintln!("[demo] {PROMETHEUS} is taken ({e}); publishing Prometheus on a free loopback port");
            publish_to(&cluster, SocketAddr::new(PROMETHEUS.ip(), 0), prometheus)
        })
        .context("publishing Prometheus on the host's loopback")?;
    let map = xtask::traffic_map::serve(MAP, published_prometheus.addr())
        .or_else(|e| {
            eprintln!("[demo] {MAP} is taken ({e}); serving the traffic map on a free loopback port");
            xtask::traffic_map::serve(SocketAddr::new(MAP.ip(), 0), published_prometheus.addr())
        })
        .context("serving the traffic map on the host's loopback")?;
    let info = status::Info {
        url: published.url(),
        prometheus: format!("http://{}/", published_prometheus.addr()),
        map: map.url(),
        config_dir: lab.mesh.config_dir().display().to_string(),
        log_dir: log_dir.display().to_string(),
    };
    println!("\nlogs: {}\nwatched config: {}", info.log_dir, info.config_dir);
    println!("Open {} in a browser on this machine.", info.url);
    println!(
        "Prometheus (scraping the waypoint and the gateway): {}",
        info.prometheus
    );
    println!("Traffic map (live, from Prometheus): {}", info.map);
    println!("Press Ctrl-C to stop and clean up.\n");
    live(&cluster, &mut lab, &info, &shutdown)?;
    eprintln!("\n[demo] stopping: daemons, apps, namespaces, cgroups, pins");
    drop((map, published, published_prometheus));
    let _ = std::fs::remove_file(CURRENT);
    let _ = std::fs::remove_file(ISSUER_DIR);
    drop(lab);
    cluster.shutdown().context("cleaning up the demo cluster")?;
    eprintln!("[demo] clean");
    Ok(())
}

/// Until Ctrl-C (or [`MAX_RUN`]): traffic on its own thread; here, once a second,
/// the supervisor restarts what exited and the status is redrawn.
fn live(cluster: &Cluster, lab: &mut Lab, info: &status::Info, stop: &Shutdown) -> Result<()> {
    let started = Instant::now();
    let entry = xtask::bookinfo::entry(cluster)?;
    let window = Mutex::new(traffic::Window::default());
    let done = AtomicBool::new(false);
    let mut supervisor = Supervisor::new(lab);
    let mut screen = status::Screen::new(started);
    std::thread::scope(|s| {
        s.spawn(|| traffic::run(cluster, entry, &window, &done));
        while !stop.requested() && started.elapsed() < MAX_RUN {
            for event in supervisor.tick(lab, cluster, Instant::now()) {
                screen.event(&event.to_string());
            }
            let w = window.lock().unwrap_or_else(|p| p.into_inner());
            screen.draw(info, &w, supervisor.status());
            drop(w);
            stop.wait(Duration::from_secs(1));
        }
        done.store(true, Ordering::SeqCst);
    });
    Ok(())
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

/// `cargo xtask demo apply [-n NS] FILE…`.
pub fn apply(args: &ManifestArgs) -> Result<()> {
    manifests::apply(&running_config_dir()?, args)
}

/// `cargo xtask demo delete [-n NS] FILE…`.
pub fn delete(args: &ManifestArgs) -> Result<()> {
    manifests::delete(&running_config_dir()?, args)
}

/// `cargo xtask demo token USER`: a JWT from the running demo's issuer, on stdout.
pub fn token(user: &str, groups: &[String], ttl_secs: u64) -> Result<()> {
    let dir = std::fs::read_to_string(ISSUER_DIR).context("no demo is running (start one with `cargo xtask demo`)")?;
    let issuer = xtask::bookinfo::jwt::Issuer::load(Path::new(dir.trim()))?;
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let claims = xtask::bookinfo::jwt::Issuer::claims(user, &groups, Duration::from_secs(ttl_secs));
    println!("{}", issuer.sign(&claims)?);
    Ok(())
}
