//! A real Prometheus (Debian's package, a plain process) in the lab's `outside/prometheus`
//! pod, scraping the waypoint's and the ingress gateway's stats ports (15020) every
//! second, so Istio's queries (`istio_requests_total{destination_service=~"reviews.*"}`)
//! answer with the live traffic. The node daemons' metrics listen on their node's
//! loopback in the lab and are not scraped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{GATEWAY_POD, LabError, NAMESPACE, STATS_PORT, WAYPOINT_POD, apps};
use crate::harness::{Cluster, HarnessError, ProcessGuard};
use crate::mesh::http_get_from_pod;

pub const POD: (&str, &str) = ("outside", "prometheus");
pub const PORT: u16 = 9090;
/// Short, so tests and the demo see a change within seconds.
pub const SCRAPE_INTERVAL: &str = "1s";

/// Writes the configuration and starts Prometheus; returns once its HTTP API answers.
pub fn start(cluster: &Cluster, log_dir: Option<&Path>) -> Result<ProcessGuard, LabError> {
    let dir = cluster.state_dir().join("prometheus");
    let io = |what: &str, e| LabError::Harness(HarnessError::sys(format!("{what} {}", dir.display()), e));
    std::fs::create_dir_all(dir.join("data")).map_err(|e| io("creating", e))?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, scrape_config(cluster)?).map_err(|e| io("writing the config in", e))?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=0.0.0.0:{PORT}"))
        .stdin(Stdio::null());
    apps::log_to(&mut cmd, log_dir, POD.1);
    let guard = cluster.spawn_in_pod(POD.0, POD.1, cmd)?;
    let waited = Duration::from_secs(30);
    cluster
        .wait_tcp_in_pod(POD.0, POD.1, address(cluster)?, waited)
        .map_err(|_| LabError::NotUp {
            what: "Prometheus (apt install prometheus; `cargo xtask bootstrap` does)".into(),
            waited,
        })?;
    Ok(guard)
}

/// Where Prometheus listens (inside the lab; [`super::publish::publish_to`] brings it
/// to the host's loopback).
pub fn address(cluster: &Cluster) -> Result<SocketAddr, LabError> {
    Ok(SocketAddr::from((cluster.pod(POD.0, POD.1)?.ip, PORT)))
}

fn scrape_config(cluster: &Cluster) -> Result<String, LabError> {
    let target = |(ns, pod): (&str, &str)| -> Result<String, LabError> {
        Ok(format!("'{}:{STATS_PORT}'", cluster.pod(ns, pod)?.ip))
    };
    Ok(format!(
        "global: {{scrape_interval: {SCRAPE_INTERVAL}, evaluation_interval: {SCRAPE_INTERVAL}}}\n\
         scrape_configs:\n\
         - job_name: waypoint\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: [{}]}}]\n\
         - job_name: ingress-gateway\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: [{}]}}]\n",
        target((NAMESPACE, WAYPOINT_POD))?,
        target(GATEWAY_POD)?,
    ))
}

/// Runs an instant PromQL query through the HTTP API (`/api/v1/query`), as Kiali does.
pub fn query(cluster: &Cluster, promql: &str) -> Result<serde_json::Value, LabError> {
    let q = percent_encoding::utf8_percent_encode(promql, percent_encoding::NON_ALPHANUMERIC);
    let r = http_get_from_pod(
        cluster,
        super::CLIENT,
        address(cluster)?,
        &format!("/api/v1/query?query={q}"),
        &[],
        Duration::from_secs(10),
    )?;
    serde_json::from_str(&r.body).map_err(|e| {
        LabError::Harness(HarnessError::sys(
            format!("parsing Prometheus' answer ({}): {}", r.status, r.body),
            std::io::Error::other(e),
        ))
    })
}

/// The samples of a vector result as (label value of `by`, value).
pub fn samples(answer: &serde_json::Value, by: &str) -> Vec<(String, f64)> {
    answer["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let key = s["metric"][by].as_str().unwrap_or("").to_owned();
            let value = s["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((key, value))
        })
        .collect()
}
