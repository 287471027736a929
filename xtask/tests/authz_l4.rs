//! e2e: AuthorizationPolicy at L4 (issue 13) in the Bookinfo lab: real node daemons,
//! eBPF capture, HBONE between pods. Needs root; one lab for the whole file (start-up
//! is expensive), torn down on failure too. Clients run inside pods (their cgroup and
//! netns, so capture applies) through this binary's `helper` entry.
//!
//! Connections go to ratings' pod IP directly (pod IP → that pod over HBONE, no
//! waypoint), so ratings' node daemon sees the caller's own identity.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use xtask::bookinfo::{self, Lab, LabOptions};
use xtask::harness::{Cluster, wait_for};
use xtask::mesh::run_helper_in_pod;

const HELPER_ENV: &str = "MESH_AUTHZ_HELPER";
/// The watched file holding the test's policy (every version replaces it).
const POLICY_FILE: &str = "authz-l4-ratings";
const POLICY: &str = "AuthorizationPolicy bookinfo/ratings-l4";
/// Ratings runs on node2 (`samples/bookinfo/platform/topology.yaml`).
const RATINGS_NODE: &str = "node2";

/// Entry point for the in-pod client (does nothing in a normal test run).
#[test]
#[ignore = "not a test: the in-pod client entry point that the e2e test starts with --ignored"]
fn helper() {
    let Ok(addr) = std::env::var(HELPER_ENV) else { return };
    let addr: SocketAddr = addr.parse().expect("helper address");
    println!("RESULT {}", get_ratings(addr));
}

/// One GET to ratings: `status=200`, or the error kind the client saw.
fn get_ratings(addr: SocketAddr) -> String {
    let exchange = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(format!("GET /ratings/0 HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut raw = Vec::new();
        s.take(1 << 20).read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let status = text.split_whitespace().nth(1).unwrap_or("none").to_owned();
        Ok(if raw.is_empty() {
            "error=eof".into()
        } else {
            format!("status={status}")
        })
    };
    exchange().unwrap_or_else(|e| format!("error={:?}", e.kind()))
}

/// Runs the helper in `pod` against ratings and returns its result line.
fn call(c: &Cluster, pod: (&str, &str), ratings: SocketAddr) -> String {
    run_helper_in_pod(c, pod, &[(HELPER_ENV, ratings.to_string())])
}

const REVIEWS: (&str, &str) = ("bookinfo", "reviews-v1");
const PRODUCTPAGE: (&str, &str) = ("bookinfo", "productpage-v1");

fn policy(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ratings-l4\n  namespace: bookinfo\nspec:\n{spec}"
    )
}

fn allow_from(sa: &str) -> String {
    policy(&format!(
        "  selector:\n    matchLabels: {{app: ratings}}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/bookinfo/sa/{sa}]\n"
    ))
}

/// The `authorization` section of ratings' node daemon.
fn authz_dump(c: &Cluster, lab: &Lab) -> serde_json::Value {
    lab.mesh
        .config_dump(c, RATINGS_NODE)
        .map(|d| d["authorization"].clone())
        .unwrap_or_default()
}

/// Waits until ratings' daemon enforces the policy with `principal` (or no policy).
fn wait_policy(c: &Cluster, lab: &Lab, principal: Option<&str>) {
    let what = format!("{RATINGS_NODE} to enforce {POLICY} with principal {principal:?}");
    wait_for(&what, Duration::from_secs(20), || {
        let d = authz_dump(c, lab);
        let ours: Vec<&serde_json::Value> = d["enforced_here"]
            .as_array()?
            .iter()
            .filter(|p| p["object"]["name"] == "ratings-l4")
            .collect();
        let ok = match principal {
            None => ours.is_empty(),
            Some(p) => ours.len() == 1 && ours[0].to_string().contains(p),
        };
        ok.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", authz_dump(c, lab)));
}

fn refused(c: &Cluster, lab: &Lab, direction: &str) -> u64 {
    let m = lab.mesh.metrics(c, RATINGS_NODE).expect("metrics");
    m.lines()
        .filter(|l| {
            l.starts_with("mesh_connections_refused_total{")
                && l.contains("reason=\"authorization\"")
                && l.contains(&format!("direction=\"{direction}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn assert_result(got: &str, want: &str, what: &str) {
    eprintln!("FIGURE {what}: {got}");
    assert_eq!(got, want, "{what}");
}

#[test]
fn principal_policy_on_ratings_admits_reviews_refuses_others_and_follows_updates() {
    // Not being root fails here with the harness's reason.
    let logs = tempfile::tempdir().expect("log dir");
    let c = bookinfo::cluster().expect("bookinfo cluster");
    let opts = LabOptions {
        log_dir: Some(logs.path().to_owned()),
        ..LabOptions::default()
    };
    let lab = Lab::start(&c, opts).expect("bookinfo lab");
    let ratings = SocketAddr::from((c.pod("bookinfo", "ratings-v1").expect("ratings pod").ip, 9080));
    const RESET: &str = "error=ConnectionReset";

    // No policy: everyone reaches ratings, plaintext from outside included.
    assert_result(&call(&c, REVIEWS, ratings), "status=200", "no policy, from reviews");
    assert_result(
        &call(&c, PRODUCTPAGE, ratings),
        "status=200",
        "no policy, from productpage",
    );
    assert_result(
        &call(&c, bookinfo::CLIENT, ratings),
        "status=200",
        "no policy, plaintext from outside",
    );

    // ALLOW only reviews' service account.
    lab.mesh
        .apply(POLICY_FILE, &allow_from("bookinfo-reviews"))
        .expect("apply");
    wait_policy(&c, &lab, Some("bookinfo-reviews"));
    let (inbound0, plaintext0) = (refused(&c, &lab, "inbound"), refused(&c, &lab, "plaintext"));
    assert_result(&call(&c, REVIEWS, ratings), "status=200", "ALLOW reviews: from reviews");
    assert_result(
        &call(&c, PRODUCTPAGE, ratings),
        RESET,
        "ALLOW reviews: from productpage",
    );
    assert_result(
        &call(&c, bookinfo::CLIENT, ratings),
        RESET,
        "ALLOW reviews: plaintext from outside",
    );
    let (inbound1, plaintext1) = (refused(&c, &lab, "inbound"), refused(&c, &lab, "plaintext"));
    eprintln!(
        "FIGURE refused{{reason=authorization}}: inbound {inbound0} -> {inbound1}, plaintext {plaintext0} -> {plaintext1}"
    );
    assert!(inbound1 > inbound0, "the HBONE refusal is counted");
    assert!(plaintext1 > plaintext0, "the plaintext refusal is counted");
    let log = std::fs::read_to_string(logs.path().join(format!("mesh-node-{RATINGS_NODE}.log"))).expect("daemon log");
    let denial = log
        .lines()
        .find(|l| l.contains("connection denied by authorization"))
        .unwrap_or_else(|| panic!("no denial logged on {RATINGS_NODE}"));
    eprintln!("FIGURE log: {denial}");
    assert!(denial.contains(POLICY), "the denial names the policy: {denial}");

    // Update: now only productpage. New connections follow.
    lab.mesh
        .apply(POLICY_FILE, &allow_from("bookinfo-productpage"))
        .expect("apply");
    wait_policy(&c, &lab, Some("bookinfo-productpage"));
    assert_result(
        &call(&c, PRODUCTPAGE, ratings),
        "status=200",
        "updated: from productpage",
    );
    assert_result(&call(&c, REVIEWS, ratings), RESET, "updated: from reviews");

    // An invalid update (bad CIDR) is rejected; the last good version stays in force.
    let bad = policy(
        "  selector:\n    matchLabels: {app: ratings}\n  rules:\n  - from:\n    - source:\n        ipBlocks: [198.18.0.0/99]\n",
    );
    lab.mesh.apply(POLICY_FILE, &bad).expect("apply");
    let rejected = wait_for("the bad CIDR to be reported", Duration::from_secs(20), || {
        let d = authz_dump(&c, &lab);
        d["rejected"]
            .as_array()?
            .iter()
            .filter_map(|e| e.as_str())
            .find(|e| e.starts_with(&format!("{POLICY}: spec.rules[0].from[0].source.ipBlocks[0]")))
            .map(str::to_owned)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", authz_dump(&c, &lab)));
    eprintln!("FIGURE rejected: {rejected}");
    wait_policy(&c, &lab, Some("bookinfo-productpage"));
    assert_result(
        &call(&c, PRODUCTPAGE, ratings),
        "status=200",
        "after bad update: from productpage",
    );
    assert_result(&call(&c, REVIEWS, ratings), RESET, "after bad update: from reviews");

    // Deleting the policy re-opens ratings.
    lab.mesh.delete(POLICY_FILE).expect("delete");
    wait_policy(&c, &lab, None);
    assert_result(&call(&c, REVIEWS, ratings), "status=200", "deleted: from reviews");
    assert_result(
        &call(&c, bookinfo::CLIENT, ratings),
        "status=200",
        "deleted: plaintext from outside",
    );
}
