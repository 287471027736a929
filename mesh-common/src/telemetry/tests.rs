use super::*;

fn workload(name: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        name: name.into(),
        namespace: "bookinfo".into(),
        service_account: "bookinfo-reviews".into(),
        ip: "198.18.1.2".parse().unwrap(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        named_ports: Vec::new(),
        node: "n1".into(),
        ready: true,
        enrolled: true,
        proxy: false,
        trust_domain: "example.org".into(),
        netns: None,
        cgroup: None,
        uid: None,
    }
}

#[test]
fn workload_and_canonical_labels_follow_istio() {
    let p = Peer::of_workload(&workload(
        "reviews-v2-7d4b9c-x2x9q",
        &[("app", "reviews"), ("version", "v2"), ("pod-template-hash", "7d4b9c")],
    ));
    assert_eq!(p.workload, "reviews-v2");
    assert_eq!((p.app.as_str(), p.version.as_str()), ("reviews", "v2"));
    assert_eq!(
        (p.canonical_service.as_str(), p.canonical_revision.as_str()),
        ("reviews", "v2")
    );
    assert_eq!(p.principal, "spiffe://example.org/ns/bookinfo/sa/bookinfo-reviews");
    let bare = Peer::of_workload(&workload("job-1", &[("service.istio.io/canonical-name", "batch")]));
    assert_eq!(bare.workload, "job-1");
    assert_eq!(bare.canonical_service, "batch");
    assert_eq!(bare.canonical_revision, "latest");
    assert_eq!(bare.app, "unknown");
    let job = Peer::of_workload(&workload("backup-x7k2p", &[("job-name", "backup")]));
    assert_eq!(
        (job.workload.as_str(), job.canonical_service.as_str()),
        ("backup", "backup")
    );
}

#[test]
fn baggage_names_the_source_as_ztunnel_does() {
    let w = workload(
        "reviews-v2-7d4b9c-x2x9q",
        &[("app", "reviews"), ("version", "v2"), ("pod-template-hash", "7d4b9c")],
    );
    assert_eq!(
        baggage(&w, "Kubernetes"),
        "k8s.cluster.name=Kubernetes,k8s.namespace.name=bookinfo,k8s.deployment.name=reviews-v2,\
         service.name=reviews,service.version=v2"
    );
    assert!(
        baggage(&workload("solo", &[]), "c1").contains(",k8s.pod.name=solo,service.name=solo,service.version=latest")
    );
}

#[test]
fn a_hash_that_is_not_in_the_name_keeps_the_pod_name() {
    let labels = [("pod-template-hash".to_string(), "abc".to_string())].into();
    assert_eq!(workload_name("web-1", &labels), "web-1");
    assert_eq!(workload_name("-abc-x", &labels), "-abc-x");
}

#[test]
fn a_principal_alone_gives_namespace_and_principal() {
    let p = Peer::of_principal("spiffe://cluster.local/ns/bookinfo/sa/waypoint");
    assert_eq!(p.namespace, "bookinfo");
    assert_eq!(p.principal, "spiffe://cluster.local/ns/bookinfo/sa/waypoint");
    assert_eq!(p.workload, UNKNOWN);
    assert_eq!(Peer::of_principal("spiffe://odd").namespace, UNKNOWN);
}

#[test]
fn flags_join_like_envoy() {
    assert_eq!(flags_text(&[]), "-");
    assert_eq!(flags_text(&[Flag::ConnectFailure, Flag::Rbac]), "UF,RBAC");
}
