//! Bookinfo's processes, one per pod, each told where its downstream Services are.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{Cluster, HarnessError, PodInfo, ProcessGuard, bin_path};

/// Service VIPs from samples/bookinfo/platform/services.yaml.
const DETAILS: &str = "details=198.19.0.11:9080";
const REVIEWS: &str = "reviews=198.19.0.12:9080";
const RATINGS: &str = "ratings=198.19.0.13:9080";

/// Starts one `bookinfo` process per app pod of the namespace, keyed by pod name.
pub fn start(cluster: &Cluster, log_dir: Option<&Path>) -> Result<Vec<(String, ProcessGuard)>, HarnessError> {
    let mut guards = Vec::new();
    for pod in pods(cluster) {
        guards.push((pod.name.clone(), start_one(cluster, &pod, log_dir)?));
    }
    Ok(guards)
}

/// The namespace's pods that run an app (labelled `app`).
pub fn pods(cluster: &Cluster) -> Vec<PodInfo> {
    cluster
        .pods()
        .into_iter()
        .filter(|p| p.namespace == super::NAMESPACE && p.labels.contains_key("app"))
        .collect()
}

/// Starts the app of `pod` (its `app` and `version` labels), told where its downstream Services are.
pub fn start_one(cluster: &Cluster, pod: &PodInfo, log_dir: Option<&Path>) -> Result<ProcessGuard, HarnessError> {
    let app = pod.labels.get("app").map_or("productpage", String::as_str);
    let version = pod.labels.get("version").map_or("v1", String::as_str);
    let mut cmd = Command::new(bin_path("bookinfo")?);
    cmd.args(["--service", app, "--version", version]).stdin(Stdio::null());
    log_to(&mut cmd, log_dir, &pod.name);
    match app {
        "productpage" => cmd.args(["--upstream", DETAILS, "--upstream", REVIEWS, "--upstream", RATINGS]),
        "reviews" => cmd.args(["--upstream", RATINGS]),
        _ => &mut cmd,
    };
    cluster.spawn_in_pod(&pod.namespace, &pod.name, cmd)
}

/// Appends the process's stdout and stderr to `<log_dir>/<name>.log`, or discards them.
pub fn log_to(cmd: &mut Command, log_dir: Option<&Path>, name: &str) {
    let file = log_dir.and_then(|d| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join(format!("{name}.log")))
            .ok()
    });
    match file.and_then(|f| f.try_clone().ok().map(|g| (f, g))) {
        Some((out, err)) => cmd.stdout(out).stderr(err),
        None => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
    };
}
