//! Bookinfo's processes, one per pod, each told where its downstream Services are.

use std::process::{Command, Stdio};

use anyhow::Result;
use xtask::harness::{Cluster, ProcessGuard, bin_path};

/// Service VIPs from samples/bookinfo/platform/services.yaml.
const DETAILS: &str = "details=198.19.0.11:9080";
const REVIEWS: &str = "reviews=198.19.0.12:9080";
const RATINGS: &str = "ratings=198.19.0.13:9080";

pub fn start(cluster: &Cluster) -> Result<Vec<ProcessGuard>> {
    let mut guards = Vec::new();
    for pod in cluster.pods().into_iter().filter(|p| p.namespace == "bookinfo") {
        let Some(app) = pod.labels.get("app") else { continue };
        let version = pod.labels.get("version").map_or("v1", String::as_str);
        let mut cmd = Command::new(bin_path("bookinfo")?);
        cmd.args(["--service", app, "--version", version]).stdout(Stdio::null()).stderr(Stdio::null());
        match app.as_str() {
            "productpage" => cmd.args(["--upstream", DETAILS, "--upstream", REVIEWS]),
            "reviews" => cmd.args(["--upstream", RATINGS]),
            _ => &mut cmd,
        };
        guards.push(cluster.spawn_in_pod(&pod.namespace, &pod.name, cmd)?);
    }
    Ok(guards)
}
