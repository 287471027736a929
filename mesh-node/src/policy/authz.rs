//! AuthorizationPolicy at L4, on the destination side: every HBONE stream (after mutual
//! TLS, principal = the peer's SPIFFE id) and every plaintext connection on 15006 (no
//! principal). The evaluator is shared with the waypoint (`mesh_common::authz`); the
//! policies come with the published [`MeshState`] snapshot.

use std::net::{IpAddr, SocketAddrV4};

use mesh_common::authz::{self, Decision, Evaluation, PolicySet, Request};
use serde_json::{Value, json};

use crate::state::{MeshState, Workload};

/// One connection as the node daemon sees it.
#[derive(Clone, Copy, Debug)]
pub struct Connection<'a> {
    /// `cluster.local/ns/x/sa/y` (SPIFFE id without `spiffe://`); `None` for plaintext.
    pub principal: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination: SocketAddrV4,
}

/// Evaluates the policies that apply to `workload` (the destination) for `conn`.
pub fn evaluate(state: &MeshState, workload: &Workload, conn: Connection<'_>) -> Evaluation {
    let request = Request {
        source_principal: conn.principal,
        source_ip: Some(conn.source_ip),
        destination_ip: IpAddr::V4(*conn.destination.ip()),
        destination_port: conn.destination.port(),
        http: None,
    };
    let eval = authz::evaluate(
        state.authz.for_workload(&workload.namespace, &workload.labels),
        &request,
    );
    for audit in &eval.audits {
        tracing::info!(pod = %workload.key(), principal = conn.principal.unwrap_or("-"), src = %conn.source_ip,
            dst = %conn.destination, policy = %audit, "AUDIT policy matched");
    }
    if !eval.fail_safe.is_empty() {
        tracing::debug!(pod = %workload.key(), fields = ?eval.fail_safe,
            "HTTP fields resolved fail-safe at L4 (ALLOW rule skipped, DENY rule matched)");
    }
    eval
}

/// Logs the decision when it is a denial; returns whether the connection may proceed.
pub fn allowed(eval: &Evaluation, workload: &Workload, conn: Connection<'_>) -> bool {
    match &eval.decision {
        Decision::Allow => true,
        Decision::Deny(denial) => {
            tracing::info!(pod = %workload.key(), principal = conn.principal.unwrap_or("-"), src = %conn.source_ip,
                dst = %conn.destination, policy = %denial.policy, fail_safe = ?eval.fail_safe,
                "connection denied by authorization: {denial}");
            false
        }
    }
}

/// Warns once per published snapshot about policies the node cannot enforce as
/// written: CUSTOM (its targets fail closed) and HTTP fields (resolved fail-safe).
pub fn log_unenforceable(set: &PolicySet) {
    for line in set.unsupported() {
        tracing::warn!("{line}");
    }
    for line in l4_warnings(set) {
        tracing::warn!("{line}");
    }
}

/// One line per HTTP field of a policy the node applies (no `targetRefs`).
fn l4_warnings(set: &PolicySet) -> Vec<String> {
    set.policies()
        .iter()
        .filter(|p| p.targets.is_empty())
        .flat_map(|p| {
            let verdict = match p.action {
                mesh_common::model::istio::security::authorization_policy::Action::Deny => {
                    "treated as matched at L4 (DENY applies on the rule's L4 fields alone)"
                }
                _ => "never matches at L4 (this ALLOW/AUDIT rule is skipped by the node daemon)",
            };
            p.l7_fields()
                .map(move |f| format!("{}: {f}: needs HTTP attributes; {verdict}", p.object))
        })
        .collect()
}

/// `/config_dump` → `authorization`.
pub fn dump(state: &MeshState) -> Value {
    let set = &state.authz;
    let (at_node, elsewhere): (Vec<_>, Vec<_>) = set.policies().iter().partition(|p| p.targets.is_empty());
    let rejected: Vec<String> = set
        .unsupported()
        .chain(
            state
                .config_errors
                .iter()
                .filter(|e| e.starts_with("AuthorizationPolicy "))
                .cloned(),
        )
        .collect();
    json!({
        "root_namespace": set.root_namespace(),
        "enforced_here": at_node,
        "attached_to_waypoints_or_gateways": elsewhere.iter().map(|p| json!({
            "policy": p.object.to_string(),
            "targets": p.targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rejected": rejected,
        "l4_warnings": l4_warnings(set),
    })
}

#[cfg(test)]
mod tests {
    use mesh_common::model::parse_documents;
    use mesh_common::model::store::ConfigStore;

    use super::*;
    use crate::state::StateParams;

    const TOPOLOGY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, serviceAccountName: db}
status: {podIP: 198.18.1.9}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: at-waypoint, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{}]
";

    fn state(extra: &str) -> MeshState {
        let mut store = ConfigStore::default();
        let yaml = format!("{TOPOLOGY}\n---\n{extra}");
        store.apply_source("t", parse_documents("t", &yaml), &|_| Ok(()));
        MeshState::build(&store, &StateParams::new("n1"))
    }

    fn conn(principal: Option<&str>) -> Connection<'_> {
        Connection {
            principal,
            source_ip: "198.18.1.2".parse().unwrap(),
            destination: "198.18.1.9:5432".parse().unwrap(),
        }
    }

    #[test]
    fn principal_policy_admits_its_principal_only_and_ignores_target_refs() {
        let s = state("");
        let db = s.workload("198.18.1.9".parse().unwrap()).unwrap().clone();
        let ok = conn(Some("cluster.local/ns/shop/sa/web"));
        assert!(
            allowed(&evaluate(&s, &db, ok), &db, ok),
            "the DENY-all at the waypoint is not applied here"
        );
        let other = conn(Some("cluster.local/ns/shop/sa/other"));
        let e = evaluate(&s, &db, other);
        assert!(!allowed(&e, &db, other));
        assert_eq!(
            e.fail_safe,
            ["AuthorizationPolicy shop/db-from-web: spec.rules[1].to[0].operation.methods"]
        );
        assert!(
            !allowed(&evaluate(&s, &db, conn(None)), &db, conn(None)),
            "plaintext has no principal"
        );
    }

    #[test]
    fn dump_lists_policies_custom_and_l4_warnings() {
        let custom = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: shop}\n\
                      spec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n";
        let s = state(custom);
        let d = dump(&s);
        assert_eq!(d["root_namespace"], "istio-system");
        assert_eq!(d["enforced_here"].as_array().unwrap().len(), 2);
        assert_eq!(
            d["attached_to_waypoints_or_gateways"][0]["targets"][0],
            "Gateway shop/waypoint"
        );
        let rejected = d["rejected"][0].as_str().unwrap();
        assert!(
            rejected.starts_with("AuthorizationPolicy shop/ext: spec.action: CUSTOM"),
            "{rejected}"
        );
        let warning = d["l4_warnings"][0].as_str().unwrap();
        assert!(
            warning
                .starts_with("AuthorizationPolicy shop/db-from-web: spec.rules[1].to[0].operation.methods: needs HTTP"),
            "{warning}"
        );
        // CUSTOM fails closed for the namespace's workloads.
        let db = s.workload("198.18.1.9".parse().unwrap()).unwrap().clone();
        let ok = conn(Some("cluster.local/ns/shop/sa/web"));
        assert!(!allowed(&evaluate(&s, &db, ok), &db, ok));
    }
}
