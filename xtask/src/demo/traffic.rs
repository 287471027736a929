//! What the user sees of the demo: productpage published on the host's loopback like
//! `kubectl port-forward` (the upstream socket is opened inside the `outside` pod's
//! netns, so no route is added to the host), and a live line per second saying which
//! reviews versions served the last requests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Weak;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use xtask::harness::{Cluster, Shutdown as Stop};

/// Host address the demo publishes (loopback only).
pub const PUBLISHED: &str = "127.0.0.1:9080";
/// Requests the live line sends per second: small, so the demo stays light.
const PER_SECOND: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(15);

/// Where the client pod's requests go: the ingress entry point of the demo.
#[derive(Clone)]
pub struct Entry {
    pub cluster_pod: (String, String),
    pub target: SocketAddr,
}

/// Accepts on the host's 127.0.0.1 and relays each connection through a socket
/// created in the client pod. Runs until the process exits.
/// Holds the cluster weakly: teardown must not wait for the forwarder.
pub fn publish(cluster: Weak<Cluster>, entry: Entry) -> Result<()> {
    let listener = TcpListener::bind(PUBLISHED).with_context(|| format!("cannot listen on {PUBLISHED}"))?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let upstream = cluster.upgrade().map(|c| connect(&c, &entry));
            if let Some(Ok(up)) = upstream {
                thread::spawn(move || splice(conn, up));
            }
        }
    });
    Ok(())
}

fn connect(cluster: &Cluster, entry: &Entry) -> Result<TcpStream> {
    let (ns, pod) = &entry.cluster_pod;
    Ok(cluster.connect_from_pod(ns, pod, entry.target, TIMEOUT)?)
}

fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = thread::spawn(move || copy(a2, b2));
    copy(b, a);
    let _ = t.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Prints one line per second until `stop`: which reviews versions served the last
/// requests (or what failed).
pub fn live(cluster: &Cluster, entry: &Entry, stop: &Stop, max: Duration) {
    let started = std::time::Instant::now();
    while !stop.requested() && started.elapsed() < max {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..PER_SECOND {
            *seen.entry(one_request(cluster, entry)).or_default() += 1;
        }
        let line: Vec<String> = seen.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("last {PER_SECOND} requests to /productpage: {}", line.join(" | "));
        stop.wait(Duration::from_secs(1));
    }
}

fn one_request(cluster: &Cluster, entry: &Entry) -> String {
    match get_page(cluster, entry) {
        Ok(page) => served_by(&page),
        Err(e) => format!("error ({e})"),
    }
}

fn get_page(cluster: &Cluster, entry: &Entry) -> Result<String> {
    let mut s = connect(cluster, entry)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    write!(s, "GET /productpage HTTP/1.0\r\nHost: productpage:9080\r\n\r\n")?;
    let mut page = String::new();
    s.take(1 << 20).read_to_string(&mut page)?;
    Ok(page)
}

/// The reviews version named in the page, or why there is none.
pub fn served_by(page: &str) -> String {
    if let Some(rest) = page.split("Reviews served by: <b>").nth(1) {
        return rest.split('<').next().unwrap_or("?").to_owned();
    }
    if page.contains("product reviews are currently unavailable") {
        return "reviews unavailable".into();
    }
    page.lines().next().unwrap_or("empty reply").to_owned()
}
