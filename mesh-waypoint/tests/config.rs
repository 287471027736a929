//! Bad input through the real config directory: each bad object is rejected alone
//! with kind/namespace/name and field path, keeps its last good version, and every
//! other object keeps serving. Dangling subsets are flagged, not rejected.

mod support;

use support::{Lab, NS, reviews_vs};

const JASON_V2: &str = "  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";

fn details_yaml() -> String {
    // A second Service (served by the v3 pod) with its own VirtualService.
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: details, namespace: {NS}}}\nspec: {{selector: {{version: v3}}, ports: [{{port: 9080, targetPort: PORT}}]}}\n---\n\
         apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: details, namespace: {NS}}}\nspec:\n  hosts: [details.bookinfo.svc.cluster.local]\n  http:\n  - headers: {{response: {{set: {{x-details: 'yes'}}}}}}\n    route: [{{destination: {{host: details}}}}]\n"
    )
}

async fn jason(lab: &Lab) -> String {
    lab.send(lab.request("reviews:9080", "/").header("end-user", "jason"))
        .await
        .version()
}

async fn details_ok(lab: &Lab) -> bool {
    let r = lab.send(lab.request("details:9080", "/")).await;
    r.status == 200 && r.version() == "v3" && r.header("x-details") == "yes"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_keep_last_good_version_and_name_object_and_path() {
    let lab = Lab::bookinfo().await;
    lab.apply("details.yaml", &details_yaml().replace("PORT", &lab.port.to_string()));
    lab.apply("reviews-vs.yaml", &reviews_vs(JASON_V2));
    assert_eq!(jason(&lab).await, "v2");
    assert!(details_ok(&lab).await);

    let header =
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: bookinfo}\n";
    let bad = [
        (
            reviews_vs(
                "  - route: [{destination: {host: reviews, subset: v1}}]\n  - match: [{uri: {regex: '(unclosed'}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n",
            ),
            "VirtualService bookinfo/reviews: spec.http[1].match[0].uri.regex: unclosed group",
        ),
        (
            reviews_vs(
                "  - route: [{destination: {host: reviews, subset: v1}, weight: 50}, {destination: {host: reviews, subset: v2}, weight: 20}]\n",
            ),
            "VirtualService bookinfo/reviews: spec.http[0].route: destination weights sum to 70, they must sum to 100",
        ),
        (
            reviews_vs(
                "  - fault: {abort: {httpStatus: 500, percentage: {value: 101}}}\n    route: [{destination: {host: reviews}}]\n",
            ),
            "VirtualService bookinfo/reviews: spec.http[0].fault.abort.percentage.value: percentage 101 is outside 0–100",
        ),
        (
            reviews_vs("  - timeout: -2s\n    route: [{destination: {host: reviews}}]\n"),
            "VirtualService bookinfo/reviews: spec.http[0].timeout: duration `-2s` must not be negative",
        ),
        (
            reviews_vs(
                "  - retries: {attempts: 2, perTryTimeout: 2 seconds}\n    route: [{destination: {host: reviews}}]\n",
            ),
            "VirtualService bookinfo/reviews: spec.http[0].retries.perTryTimeout: cannot parse duration `2 seconds`",
        ),
        (
            reviews_vs("  - route: [{destination: {host: reviews, subsett: v1}}]\n"),
            "VirtualService bookinfo/reviews: spec.http[0].route[0].destination.subsett: unknown field `subsett`",
        ),
        (
            format!("{header}spec: {{hosts: [reviews], http: [{{route: [{{destination: {{host: reviews}}}}]}}]}}\n")
                .replace("networking.istio.io/v1\n", "networking.istio.io/v2\n"),
            "VirtualService bookinfo/reviews: unsupported apiVersion `networking.istio.io/v2`",
        ),
    ];
    for (yaml, want) in bad {
        lab.apply("reviews-vs.yaml", &yaml);
        let snap = lab.waypoint.config.load();
        assert!(
            snap.rejected.iter().any(|r| r.starts_with(want)),
            "want `{want}` in {:?}",
            snap.rejected
        );
        assert_eq!(
            jason(&lab).await,
            "v2",
            "last good VirtualService still routes after: {want}"
        );
        assert!(details_ok(&lab).await, "other objects keep serving after: {want}");
    }

    // A good update replaces the last good version and clears the error.
    lab.apply(
        "reviews-vs.yaml",
        &reviews_vs("  - route: [{destination: {host: reviews, subset: v3}}]\n"),
    );
    assert!(lab.waypoint.config.load().rejected.is_empty());
    assert_eq!(jason(&lab).await, "v3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_destination_rule_keeps_last_good_subsets() {
    let lab = Lab::bookinfo().await;
    lab.apply("reviews-vs.yaml", &reviews_vs(JASON_V2));
    let bad_dr = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  host: reviews\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: -1s}}}\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let mut text = support::bookinfo_yaml(lab.block, lab.port);
    text = text
        .split("---\napiVersion: networking.istio.io")
        .next()
        .unwrap_or_default()
        .to_owned();
    lab.apply("bookinfo.yaml", &format!("{text}---\n{bad_dr}"));
    let snap = lab.waypoint.config.load();
    let want = "DestinationRule bookinfo/reviews: spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration `-1s` must not be negative";
    assert!(snap.rejected.iter().any(|r| r.starts_with(want)), "{:?}", snap.rejected);
    assert_eq!(
        jason(&lab).await,
        "v2",
        "subset v2 of the last good DestinationRule still in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undefined_subset_is_flagged_with_object_and_path() {
    let lab = Lab::bookinfo().await;
    lab.apply("reviews-vs.yaml", &reviews_vs("  - match: [{headers: {end-user: {exact: jason}}}]\n    route: [{destination: {host: reviews, subset: v7}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n"));
    let snap = lab.waypoint.config.load();
    let want = "VirtualService bookinfo/reviews: spec.http[0].route[0].destination.subset: subset `v7` of `reviews.bookinfo.svc.cluster.local` is not defined by any DestinationRule";
    assert!(snap.warnings.iter().any(|w| w.starts_with(want)), "{:?}", snap.warnings);
    let dump = mesh_waypoint::admin::config_dump(&lab.waypoint.config);
    assert!(
        dump["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|l| l.as_str().is_some_and(|l| l.starts_with(want)))),
        "{dump}"
    );
    let r = lab
        .send(lab.request("reviews:9080", "/").header("end-user", "jason"))
        .await;
    assert_eq!(r.status, 503);
    assert!(r.header("x-mesh-reason").contains("subset `v7`"), "{r:?}");
    assert_eq!(
        lab.get("/").await.version(),
        "v1",
        "the rest of the VirtualService serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_file_keeps_its_objects_and_new_bad_object_never_appears() {
    let lab = Lab::bookinfo().await;
    lab.apply("reviews-vs.yaml", &reviews_vs(JASON_V2));
    lab.apply(
        "reviews-vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews\n  broken: [\n",
    );
    assert_eq!(jason(&lab).await, "v2");
    assert!(!lab.waypoint.config.load().rejected.is_empty());
    lab.apply("other.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other, namespace: bookinfo}\nspec: {hosts: [other], http: [{route: [{destination: {host: reviews}, weight: 30}, {destination: {host: reviews}, weight: 30}]}]}\n");
    let snap = lab.waypoint.config.load();
    assert!(snap.tables.iter().all(|t| t.object.name != "other"));
    assert!(
        snap.rejected
            .iter()
            .any(|r| r.starts_with("VirtualService bookinfo/other: spec.http[0].route: destination weights sum to 60")),
        "{:?}",
        snap.rejected
    );
}

#[test]
fn bookinfo_samples_validate_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/bookinfo");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("samples/bookinfo exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            for doc in mesh_common::model::parse_documents(&path.display().to_string(), &text) {
                let doc = doc.unwrap_or_else(|e| panic!("{e}"));
                mesh_waypoint::config::validate(&doc).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "checked {checked} objects");
}
