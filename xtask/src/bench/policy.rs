//! `policy` (issue 13): what AuthorizationPolicy costs at the node daemon (L4).
//! mesh/client → mesh/remote over HBONE, with no policy vs 100 policies selecting the
//! server (50 DENY and 49 ALLOW that do not match the client, 1 ALLOW that does, so
//! every connection walks all of them). Each repetition measures without policies,
//! applies them, waits until the server's node daemon enforces all 100, measures again
//! and removes them: drift between the two halves stays within one repetition.
//! Figures: new connections/s (1 request each, 16 at a time) and 1 kB p50/p99 at
//! 1,000 requests/s. The L7 counterpart (100 policies at the waypoint) is a row of the
//! `waypoint` bench, which uses [`l7_policies`].

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;

use super::lab::{HTTP_PORT, Lab, PodRef};
use super::report::{Better, Row, Stat, Target};
use super::{BenchOptions, progress};
use crate::harness::wait_for;

const CLIENT: PodRef = ("mesh", "client");
const SERVER: PodRef = ("mesh", "remote");
/// The server pod's node, whose daemon enforces the policies.
const SERVER_NODE: &str = "n2";
/// How many policies are in force in the "with" half.
pub const POLICIES: usize = 100;
const CONFIG_NAME: &str = "bench-policies";
const NONE: &str = "no AuthorizationPolicy";

/// Figures of one half (none / with policies) over the repetitions.
#[derive(Default)]
struct Half {
    conn_rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

pub fn run(lab: &Lab, opts: &BenchOptions) -> anyhow::Result<Vec<Row>> {
    let secs = if opts.quick { "2" } else { "4" };
    let (mut none, mut with) = (Half::default(), Half::default());
    for rep in 0..opts.reps() {
        progress(&format!("policy rep {}/{}: {NONE}", rep + 1, opts.reps()));
        measure(lab, secs, &mut none)?;
        lab.mesh.apply(CONFIG_NAME, &l4_policies())?;
        wait_enforced(lab, POLICIES)?;
        progress(&format!("policy rep {}/{}: {POLICIES} policies", rep + 1, opts.reps()));
        let measured = measure(lab, secs, &mut with);
        lab.mesh.delete(CONFIG_NAME)?;
        wait_enforced(lab, 0)?;
        measured?;
    }
    let path = format!("mesh L4 cross-node, {POLICIES} AuthorizationPolicies on the server");
    let mut rows = vec![
        Row::new(
            "policy",
            "new connections/s (1 request each, 16 at a time)",
            &path,
            "conn/s",
            Stat::of(&with.conn_rate),
            Better::Higher,
        )
        .vs(NONE, &Stat::of(&none.conn_rate))
        .target(Target::RatioAtLeast(0.95)),
    ];
    for (q, with_q, none_q) in [("p50", &with.p50, &none.p50), ("p99", &with.p99, &none.p99)] {
        rows.push(
            Row::new(
                "policy",
                &format!("1 kB HTTP {q} @1000/s"),
                &path,
                "µs",
                Stat::of(with_q),
                Better::Lower,
            )
            .vs(NONE, &Stat::of(none_q)),
        );
    }
    if with.errors > 0 || none.errors > 0 {
        let first = with.first_error.or(none.first_error).unwrap_or_default();
        let failed = format!("{} / {} failed: {first}", none.errors, with.errors);
        rows = rows.into_iter().map(|r| r.note(failed.clone())).collect();
    }
    Ok(rows)
}

fn measure(lab: &Lab, secs: &str, half: &mut Half) -> anyhow::Result<()> {
    let target = format!("{}:{HTTP_PORT}", lab.ip(SERVER)?);
    let conn = lab.load(
        CLIENT,
        &["connect", "--http", "--target", &target, "--conc", "16", "--secs", secs],
    )?;
    half.conn_rate.push(conn.per_sec);
    let rate = lab.load(
        CLIENT,
        &[
            "rate", "--target", &target, "--host", "bench", "--rate", "1000", "--conns", "16", "--secs", secs,
        ],
    )?;
    half.p50.push(rate.p50_us);
    half.p99.push(rate.p99_us);
    half.errors += conn.errors + rate.errors;
    half.first_error = half.first_error.take().or(conn.first_error).or(rate.first_error);
    Ok(())
}

/// Waits until the server's node daemon enforces exactly `n` policies.
fn wait_enforced(lab: &Lab, n: usize) -> anyhow::Result<()> {
    let enforced = || {
        let dump = lab.mesh.config_dump(&lab.cluster, SERVER_NODE).ok()?;
        let count = dump["authorization"]["enforced_here"].as_array()?.len();
        (count == n).then_some(())
    };
    wait_for(
        &format!("{SERVER_NODE} to enforce {n} AuthorizationPolicies"),
        Duration::from_secs(30),
        enforced,
    )
    .with_context(|| format!("{SERVER_NODE} did not load the bench's policies"))
}

/// 100 L4 policies selecting the server: 50 DENY and 49 ALLOW for other identities and
/// ports, then the one ALLOW that admits the client (evaluated last by name order).
fn l4_policies() -> String {
    let mut out = String::new();
    for i in 0..POLICIES - 1 {
        let action = if i % 2 == 0 { "DENY" } else { "ALLOW" };
        let _ = write!(
            out,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: p{i:03}, namespace: mesh}}\n\
             spec:\n  selector: {{matchLabels: {{app: bench-server}}}}\n  action: {action}\n  rules:\n  \
             - from: [{{source: {{principals: [cluster.local/ns/other-{i}/sa/*], namespaces: [other-{i}]}}}}]\n    \
             to: [{{operation: {{ports: ['{port}']}}}}]\n---\n",
            port = 20000 + i
        );
    }
    out.push_str(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: z-allow-client, namespace: mesh}\n\
         spec:\n  selector: {matchLabels: {app: bench-server}}\n  action: ALLOW\n  rules:\n  \
         - from: [{source: {principals: [cluster.local/ns/mesh/sa/client]}}]\n    \
         to: [{operation: {ports: ['8080']}}]\n",
    );
    out
}

/// `n` L7 policies attached to waypoint `waypoint` of `namespace`: DENY on paths and
/// ALLOW on headers that no bench request has, then one ALLOW for GET on every path.
pub fn l7_policies(namespace: &str, n: usize) -> String {
    let head = |name: &str, action: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: {namespace}}}\n\
             spec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  \
             action: {action}\n  rules:\n"
        )
    };
    let mut out = String::new();
    for i in 0..n.saturating_sub(1) {
        if i % 2 == 0 {
            out.push_str(&head(&format!("p{i:03}"), "DENY"));
            let _ = write!(
                out,
                "  - to: [{{operation: {{paths: ['/admin/{i}/*'], methods: [POST, DELETE]}}}}]\n---\n"
            );
        } else {
            out.push_str(&head(&format!("p{i:03}"), "ALLOW"));
            let _ = write!(
                out,
                "  - when: [{{key: 'request.headers[x-tenant]', values: ['tenant-{i}']}}]\n---\n"
            );
        }
    }
    out.push_str(&head("z-allow-get", "ALLOW"));
    out.push_str("  - to: [{operation: {methods: [GET], paths: ['/*']}}]\n");
    out
}

#[cfg(test)]
mod tests {
    use mesh_common::model::parse_documents;

    use super::*;

    /// The generated policies must be valid, or the bench would measure rejections.
    #[test]
    fn generated_policies_are_valid() {
        for (yaml, n) in [(l4_policies(), POLICIES), (l7_policies("wp", POLICIES), POLICIES)] {
            let docs = parse_documents("bench", &yaml);
            assert_eq!(docs.len(), n);
            for d in docs {
                let r = d.expect("parses");
                let mesh_common::model::Resource::AuthorizationPolicy(ap) = &r else {
                    panic!("not a policy: {r:?}");
                };
                mesh_common::authz::Policy::compile(ap).expect("compiles");
            }
        }
    }
}
