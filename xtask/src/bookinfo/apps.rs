//! Bookinfo's processes, one per pod, each told where its downstream Services are.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{Cluster, HarnessError, ProcessGuard, bin_path};

/// Service VIPs from samples/bookinfo/platform/services.yaml.
const DETAILS: &str = "details=198.19.0.11:9080";
const REVIEWS: &str = "reviews=198.19.0.12:9080";
const RATINGS: &str = "ratings=198.19.0.13:9080";

pub fn start(cluster: &Cluster, log_dir: Option<&Path>) -> Result<Vec<ProcessGuard>, HarnessError> {
    let mut guards = Vec::new();
    for pod in cluster.pods().into_iter().filter(|p| p.namespace == super::NAMESPACE) {
        let Some(app) = pod.labels.get("app") else { continue };
        let version = pod.labels.get("version").map_or("v1", String::as_str);
        let mut cmd = Command::new(bin_path("bookinfo")?);
        cmd.args(["--service", app, "--version", version]).stdin(Stdio::null());
        log_to(&mut cmd, log_dir, &pod.name);
        match app.as_str() {
            "productpage" => cmd.args(["--upstream", DETAILS, "--upstream", REVIEWS]),
            "reviews" => cmd.args(["--upstream", RATINGS]),
            _ => &mut cmd,
        };
        guards.push(cluster.spawn_in_pod(&pod.namespace, &pod.name, cmd)?);
    }
    Ok(guards)
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
