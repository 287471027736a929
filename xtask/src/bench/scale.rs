//! `resources` rows at cluster scale: n1's daemon is handed a cluster of remote pods
//! and Services (pods on node n3, which runs no daemon, so nothing is captured; the
//! view still holds every one of them, as a daemon in Kubernetes mode does) and we
//! measure its RSS, the time until the whole set is in force, and the time one more
//! change takes once it is. Baselines come from the same daemon in the same run: RSS
//! and one change before the growth, and the full apply of the smallest size.
//!
//! Addresses: pods from `198.18.32.0` and VIPs from `198.19.173.176` upward, inside the
//! harness range and above every address the bench lab itself uses; they are
//! configuration only (nothing is routed to them).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::lab::Lab;
use super::procstat;
use super::report::{Better, Row, Stat, Target};
use super::{BenchOptions, progress};
use crate::harness::wait_for;

/// `(pods, services)` per size. 10k + 10k is the configuration of the first
/// measurement (36.7 s to apply); 100k pods + 20k Services is the scale goal
/// (under 300 MiB, one change in under 50 ms).
const FULL: &[(usize, usize)] = &[(10_000, 10_000), (50_000, 20_000), (100_000, 20_000)];
const QUICK: &[(usize, usize)] = &[(100, 100), (1_000, 1_000)];
/// Offsets inside 198.18.0.0/15 (131,072 addresses).
const POD_BASE: u32 = 8_192;
const VIP_BASE: u32 = 110_000;
/// One-change samples per size.
const CHANGES: usize = 5;
/// How long applying the largest set may take before the bench gives up.
const APPLY_DEADLINE: Duration = Duration::from_secs(600);

fn addr(offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + offset)
}

/// `pods` pods spread over `services` Services (pod i selected by Service i mod services).
fn cluster_yaml(pods: usize, services: usize) -> String {
    let mut y = String::with_capacity(pods * 200 + services * 200);
    y.push_str("apiVersion: v1\nkind: Namespace\nmetadata: {name: scale}\n");
    for i in 0..pods {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: scale, labels: {{app: s{}, pod: p{i}}}}}\nspec: {{nodeName: n3, serviceAccountName: s{}}}\nstatus: {{podIP: {}}}\n",
            i % services,
            i % services,
            addr(POD_BASE + i as u32)
        );
    }
    for j in 0..services {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{j}, namespace: scale}}\nspec: {{clusterIP: {}, selector: {{app: s{j}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n",
            addr(VIP_BASE + j as u32)
        );
    }
    y
}

/// One pod (its own file) whose label `rev` changes with each sample: a pod update that
/// moves it between Services' endpoint sets is the common change in a live cluster.
fn one_change_yaml(rev: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: mover, namespace: scale, labels: {{app: s{}, rev: r{rev}}}}}\nspec: {{nodeName: n3}}\nstatus: {{podIP: {}}}\n",
        rev % 2,
        addr(POD_BASE - 1)
    )
}

struct Summary {
    generation: u64,
    workloads: usize,
}

fn summary(lab: &Lab) -> anyhow::Result<Summary> {
    let r = crate::mesh::http_get(&lab.cluster, "n1", "127.0.0.1:15000", "/summary")?;
    let v: serde_json::Value = serde_json::from_str(&r.body).context("/summary JSON")?;
    let n = |k: &str| v[k].as_u64().with_context(|| format!("/summary has no {k}"));
    Ok(Summary {
        generation: n("generation")?,
        workloads: usize::try_from(n("workloads")?)?,
    })
}

/// `mesh_config_last_apply_seconds` of n1, in ms.
fn last_apply_ms(lab: &Lab) -> anyhow::Result<f64> {
    let r = crate::mesh::http_get(&lab.cluster, "n1", "127.0.0.1:15020", "/metrics")?;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("mesh_config_last_apply_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .context("n1 exports no mesh_config_last_apply_seconds")
}

/// Daemon-side time of `CHANGES` single-pod changes (each waited for by generation).
fn one_changes(lab: &Lab, first_rev: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::new();
    for rev in first_rev..first_rev + CHANGES {
        let before = summary(lab)?.generation;
        lab.mesh.apply("bench-scale-one", &one_change_yaml(rev))?;
        wait_for("one change applied", Duration::from_secs(60), || {
            (summary(lab).ok()?.generation > before).then_some(())
        })?;
        samples.push(last_apply_ms(lab)?);
    }
    Ok(samples)
}

pub fn rows(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let sizes = if opts.quick { QUICK } else { FULL };
    let n1 = lab.mesh.pid("n1").context("no daemon on n1")?;
    let rss = || procstat::sample(n1).map(|s| s.rss_mib).unwrap_or(f64::NAN);
    let base_rss = rss();
    let base_workloads = summary(lab)?.workloads;
    progress("resources: one change on the bench topology alone (baseline)");
    let base_change = Stat::of(&one_changes(lab, 0)?);
    let mut rows = Vec::new();
    let mut first_apply = None;
    for (i, &(pods, services)) in sizes.iter().enumerate() {
        let label = format!("{pods} pods + {services} services");
        progress(&format!("resources: {label}"));
        let yaml = cluster_yaml(pods, services);
        let t = Instant::now();
        lab.mesh.apply("bench-scale", &yaml)?;
        wait_for("the whole set applied", APPLY_DEADLINE, || {
            (summary(lab).ok()?.workloads > base_workloads + pods).then_some(())
        })?;
        let apply_ms = t.elapsed().as_secs_f64() * 1000.0;
        let first = *first_apply.get_or_insert(apply_ms);
        let change = one_changes(lab, (i + 1) * CHANGES)?;
        let mem = rss();
        rows.push(
            Row::new(
                "resources",
                &format!("RSS, {label}"),
                "mesh-node n1",
                "MiB",
                Stat::of(&[mem]),
                Better::Lower,
            )
            .vs("same daemon before (bench topology only)", &Stat::of(&[base_rss]))
            .note(format!("{:.2} KiB per pod", (mem - base_rss) * 1024.0 / pods as f64)),
        );
        rows.push(
            Row::new(
                "resources",
                &format!("apply the whole set, {label}"),
                "mesh-node n1 (file written → /summary shows it)",
                "ms",
                Stat::of(&[apply_ms]),
                Better::Lower,
            )
            .vs(
                &format!("whole set of the smallest size ({})", sizes[0].0),
                &Stat::of(&[first]),
            ),
        );
        rows.push(
            Row::new(
                "resources",
                &format!("apply one change, {label}"),
                "mesh-node n1 (mesh_config_last_apply_seconds)",
                "ms",
                Stat::of(&change),
                Better::Lower,
            )
            .vs("one change on the bench topology alone", &base_change)
            .target(Target::ValueAtMost(50.0)),
        );
    }
    lab.mesh.delete("bench-scale")?;
    lab.mesh.delete("bench-scale-one")?;
    wait_for("scale config removed", APPLY_DEADLINE, || {
        (summary(lab).ok()?.workloads <= base_workloads).then_some(())
    })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_inside_the_harness_range_and_apart() {
        let (pods, services) = FULL[FULL.len() - 1];
        let last_pod = addr(POD_BASE + pods as u32 - 1);
        let first_vip = addr(VIP_BASE);
        let last_vip = addr(VIP_BASE + services as u32 - 1);
        assert!(last_pod < first_vip, "{last_pod} overlaps {first_vip}");
        assert!(last_vip.octets()[..2] == [198, 19], "{last_vip} leaves 198.18.0.0/15");
        assert_eq!(addr(POD_BASE).to_string(), "198.18.32.0");
        assert_eq!(addr(POD_BASE - 1).to_string(), "198.18.31.255");
        assert_eq!(first_vip.to_string(), "198.19.173.176");
    }

    #[test]
    fn every_pod_belongs_to_one_service() {
        let docs = mesh_common::model::parse_documents("t", &cluster_yaml(10, 3));
        assert!(docs.iter().all(Result::is_ok));
        assert_eq!(docs.len(), 1 + 10 + 3);
    }
}
