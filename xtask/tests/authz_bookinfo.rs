//! e2e: L7 AuthorizationPolicy and RequestAuthentication (issue 13) in the Bookinfo
//! lab, with the policies of `samples/bookinfo/policy/` unchanged: real node daemons
//! and eBPF capture, the waypoint and the ingress gateway in their own pods speaking
//! HBONE (the gateway reaches productpage through the waypoint, `ingress-use-waypoint`),
//! and the demo issuer's keys served by the lab's `jwks` pod. Needs root; each test
//! builds its own cluster (RAII teardown, also on failure).

use std::path::Path;
use std::time::Duration;

use mesh_common::model::ObjectRef;
use serde_json::json;
use xtask::bookinfo::jwt::Issuer;
use xtask::bookinfo::{self, Lab, LabOptions, gateway_dump, waypoint_dump};
use xtask::harness::{Cluster, wait_for};
use xtask::mesh::HttpReply;

/// Not being root fails the test with the harness's reason, it never passes silently.
fn lab(log_dir: &Path) -> (Cluster, Lab) {
    let cluster = bookinfo::cluster().expect("bookinfo cluster");
    let opts = LabOptions {
        log_dir: Some(log_dir.to_owned()),
        ..LabOptions::default()
    };
    let lab = Lab::start(&cluster, opts).expect("bookinfo lab");
    (cluster, lab)
}

fn apply(c: &Cluster, lab: &Lab, files: &[&str]) {
    for f in files {
        lab.apply_sample(c, f).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

fn page(c: &Cluster, headers: &[(&str, &str)]) -> HttpReply {
    bookinfo::productpage(c, headers).expect("GET /productpage")
}

/// What the user sees of each part of the page.
#[derive(Debug, PartialEq, Eq)]
struct Parts {
    status: u16,
    rbac_page: bool,
    details: bool,
    reviews: bool,
    ratings: bool,
}

fn parts(r: &HttpReply) -> Parts {
    Parts {
        status: r.status,
        rbac_page: r.body.contains("RBAC: access denied"),
        details: r.body.contains("Details served by"),
        reviews: r.body.contains("Reviews served by"),
        // reviews-v3 shows red stars when ratings answered.
        ratings: r.body.contains("Reviews served by") && !r.body.contains("Ratings service is currently unavailable"),
    }
}

fn expect(c: &Cluster, what: &str, want: Parts) {
    let r = page(c, &[]);
    let got = parts(&r);
    eprintln!("FIGURE {what}: {got:?}");
    assert_eq!(got, want, "{what}: {}", r.body);
}

fn p(status: u16, rbac_page: bool, details: bool, reviews: bool, ratings: bool) -> Parts {
    Parts {
        status,
        rbac_page,
        details,
        reviews,
        ratings,
    }
}

fn policy(name: &str) -> ObjectRef {
    ObjectRef::new("AuthorizationPolicy", Some("bookinfo"), name)
}

#[test]
fn l7_policies_restore_bookinfo_hop_by_hop() {
    let logs = tempfile::tempdir().expect("log dir");
    let (c, lab) = lab(logs.path());
    // reviews-v3 always calls ratings, so the ratings hop shows on every page.
    apply(
        &c,
        &lab,
        &["destination-rule-all.yaml", "virtual-service-reviews-v3.yaml"],
    );
    expect(&c, "no policy", p(200, false, true, true, true));

    apply(&c, &lab, &["policy/allow-nothing.yaml"]);
    let r = page(&c, &[]);
    eprintln!("FIGURE allow-nothing: status {} body {:?}", r.status, r.body.trim());
    assert_eq!((r.status, r.body.trim()), (403, "RBAC: access denied"));
    let log = std::fs::read_to_string(logs.path().join("waypoint.log")).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains("status=403") && l.contains("AuthorizationPolicy bookinfo/allow-nothing"))
        .unwrap_or_else(|| panic!("no access-log line names the policy:\n{log}"));
    eprintln!("FIGURE access log: {line}");
    assert!(line.contains("flags=RBAC"), "{line}");

    apply(&c, &lab, &["policy/productpage-viewer.yaml"]);
    expect(&c, "+productpage-viewer", p(200, false, false, false, false));
    apply(&c, &lab, &["policy/details-viewer.yaml"]);
    expect(&c, "+details-viewer", p(200, false, true, false, false));
    apply(&c, &lab, &["policy/reviews-viewer.yaml"]);
    expect(&c, "+reviews-viewer", p(200, false, true, true, false));
    apply(&c, &lab, &["policy/ratings-viewer.yaml"]);
    expect(&c, "+ratings-viewer", p(200, false, true, true, true));

    // A DENY on a path beats the ALLOW; deleting it restores the hop (next poll).
    apply(&c, &lab, &["policy/deny-details-path.yaml"]);
    expect(&c, "+deny-details-path", p(200, false, false, true, true));
    lab.delete_object(&c, &policy("deny-details-path")).expect("delete");
    expect(&c, "-deny-details-path", p(200, false, true, true, true));

    // An invalid update (unknown `when` key) is rejected by name and field; the last
    // good details-viewer stays in force.
    let before = waypoint_dump(&c).expect("dump")["generation"].as_u64().unwrap_or(0);
    let bad = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
               metadata: {name: details-viewer, namespace: bookinfo}\n\
               spec:\n  targetRefs: [{kind: Service, group: '', name: details}]\n  \
               rules: [{when: [{key: request.bogus, values: [x]}]}]\n";
    write_raw(&lab, &policy("details-viewer"), bad);
    let rejected = wait_for("the waypoint to reject the update", Duration::from_secs(20), || {
        let d = waypoint_dump(&c).ok()?;
        let line = d["rejected"]
            .as_array()?
            .iter()
            .filter_map(|l| l.as_str())
            .find(|l| l.contains("AuthorizationPolicy bookinfo/details-viewer"))?
            .to_owned();
        (d["generation"].as_u64().unwrap_or(0) > before || !line.is_empty()).then_some(line)
    })
    .expect("rejection reported");
    eprintln!("FIGURE rejected: {rejected}");
    assert!(rejected.contains("spec.rules[0].when[0].key"), "{rejected}");
    expect(&c, "invalid update", p(200, false, true, true, true));

    // A valid update takes effect: details only for reviews' identity now.
    let other = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {name: details-viewer, namespace: bookinfo}\n\
                 spec:\n  targetRefs: [{kind: Service, group: '', name: details}]\n  \
                 rules: [{from: [{source: {principals: [cluster.local/ns/bookinfo/sa/bookinfo-reviews]}}]}]\n";
    let before = waypoint_dump(&c).expect("dump")["generation"].as_u64().unwrap_or(0);
    write_raw(&lab, &policy("details-viewer"), other);
    lab.wait_waypoint_config(&c, "the updated details-viewer", |d| {
        d["generation"].as_u64().unwrap_or(0) > before && d["rejected"].as_array().is_some_and(|a| a.is_empty())
    })
    .expect("update loaded");
    expect(&c, "details-viewer for reviews only", p(200, false, false, true, true));
}

/// Writes an object's file as is (no validation: what a user's editor would do).
fn write_raw(lab: &Lab, object: &ObjectRef, yaml: &str) {
    let path = lab.mesh.config_dir().join(xtask::mesh::objects::file_name(object));
    xtask::mesh::objects::write_atomic(&path, yaml).expect("write");
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn status_with(c: &Cluster, token: Option<&str>) -> u16 {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    page(c, &headers).status
}

#[test]
fn jwt_at_the_gateway_follows_request_authentication() {
    let logs = tempfile::tempdir().expect("log dir");
    let (c, mut lab) = lab(logs.path());
    apply(
        &c,
        &lab,
        &[
            "policy/request-authentication-gateway.yaml",
            "policy/require-jwt-gateway.yaml",
        ],
    );
    let hour = Duration::from_secs(3600);
    let reader = lab
        .issuer
        .sign(&Issuer::claims("jason", &["readers"], hour))
        .expect("sign");
    // The gateway fetches the keys from the jwks pod when the policy arrives.
    let first = wait_for("a valid token to be accepted", Duration::from_secs(20), || {
        (status_with(&c, Some(&reader)) == 200).then_some(())
    });
    assert!(
        first.is_ok(),
        "gateway: {}",
        gateway_dump(&c).map(|d| d.to_string()).unwrap_or_default()
    );
    let r = page(&c, &[("authorization", &bearer(&reader))]);
    assert!(r.body.contains("Reviews served by"), "{}", r.body);

    let writer = lab
        .issuer
        .sign(&Issuer::claims("ann", &["writers"], hour))
        .expect("sign");
    let mut expired = Issuer::claims("jason", &["readers"], hour);
    expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 3600);
    let mut other_issuer = Issuer::claims("jason", &["readers"], hour);
    other_issuer["iss"] = json!("https://evil.example");
    let impostor = Issuer::generate(&logs.path().join("impostor")).expect("impostor key");
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(serde_json::to_string(&Issuer::claims("jason", &["readers"], hour))
        .unwrap()
        .as_bytes());
    let cases = [
        ("valid token, groups [readers]", Some(reader.clone()), 200),
        ("valid token, groups [writers]", Some(writer), 403),
        ("no token", None, 403),
        ("expired", Some(lab.issuer.sign(&expired).unwrap()), 401),
        ("wrong issuer", Some(lab.issuer.sign(&other_issuer).unwrap()), 401),
        (
            "bad signature",
            Some(impostor.sign(&Issuer::claims("jason", &["readers"], hour)).unwrap()),
            401,
        ),
        ("alg none", Some(format!("{header}.{body}.")), 401),
    ];
    for (what, token, want) in cases {
        let got = status_with(&c, token.as_deref());
        eprintln!("FIGURE {what}: {got}");
        assert_eq!(got, want, "{what}");
    }
    let log = std::fs::read_to_string(logs.path().join("istio-ingressgateway.log")).unwrap_or_default();
    for reason in ["expired", "unknown_issuer", "bad_signature", "alg_none"] {
        assert!(
            log.contains(&format!("reason=\"{reason}\"")) || log.contains(&format!("reason={reason}")),
            "no {reason} in the gateway log"
        );
    }

    // The key server goes down: refreshes fail, the cached keys keep verifying.
    lab.stop_jwks_server();
    let failed = wait_for("a failed jwksUri refresh", Duration::from_secs(30), || {
        let d = gateway_dump(&c).ok()?;
        let jwks = d["requestAuthentication"]["jwks"].as_object()?.values().next()?.clone();
        (jwks["failures"].as_u64()? >= 1 && jwks["keys"].as_u64()? == 1).then_some(jwks)
    })
    .expect("refresh failure seen");
    eprintln!("FIGURE jwks after outage: {failed}");
    assert_eq!(status_with(&c, Some(&reader)), 200, "cached keys still verify");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
