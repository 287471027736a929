use super::*;
use crate::state::tests::state_from;

/// Namespace `shop` (ambient) on node n1: a Deployment's pod, a plain pod, a waypoint
/// on n2, and Service `web` (80 → 8080) selecting `app: web`.
fn topology() -> String {
    let pod = |name: &str, labels: &str, sa: &str, node: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}\n\
             spec: {{nodeName: {node}, serviceAccountName: {sa}}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, annotations: {mesh.io/dataplane-mode: ambient}}\n"
            .into(),
        pod(
            "client-5f7d9-abcde",
            "app: client, version: v1, pod-template-hash: 5f7d9",
            "client",
            "n1",
            "198.18.1.2",
        ),
        pod("web-1", "app: web, version: v2", "web", "n1", "198.18.1.3"),
        pod(
            "waypoint-1",
            "app: waypoint, gateway.networking.k8s.io/gateway-name: waypoint",
            "waypoint",
            "n2",
            "198.18.2.5",
        ),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {clusterIP: 198.19.0.10, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n"
            .into(),
    ]
    .concat()
}

const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";
const WAYPOINT_ID: &str = "spiffe://cluster.local/ns/shop/sa/waypoint";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn the_hbone_peer_is_its_owning_workload() {
    let s = state_from(&topology(), "n1");
    let p = hbone_source(&s, addr("198.18.1.2:40000"), CLIENT_ID, Some("198.18.1.2"));
    assert_eq!(p.workload, "client", "the Deployment, not the pod name");
    assert_eq!((p.app.as_str(), p.version.as_str()), ("client", "v1"));
    assert_eq!(p.principal, CLIENT_ID);
}

#[test]
fn waypoint_traffic_is_the_waypoint_unless_it_names_its_client() {
    let s = state_from(&topology(), "n1");
    assert!(
        s.workload("198.18.2.5".parse().unwrap()).unwrap().proxy,
        "fixture: a mesh proxy"
    );
    let p = hbone_source(&s, addr("198.18.2.5:40000"), WAYPOINT_ID, None);
    assert_eq!((p.workload.as_str(), p.principal.as_str()), ("waypoint-1", WAYPOINT_ID));
    let named = hbone_source(&s, addr("198.18.2.5:40000"), WAYPOINT_ID, Some("198.18.1.2"));
    assert_eq!(
        (named.workload.as_str(), named.principal.as_str()),
        ("client", CLIENT_ID)
    );
}

#[test]
fn a_forwarded_client_is_believed_only_from_itself_or_a_proxy() {
    let s = state_from(&topology(), "n1");
    // web-1 is no proxy: its word about 198.18.1.2 does not make it the client.
    let p = hbone_source(
        &s,
        addr("198.18.1.3:40000"),
        "spiffe://cluster.local/ns/shop/sa/web",
        Some("198.18.1.2"),
    );
    assert_eq!(p.workload, "web-1");
}

#[test]
fn an_identity_without_a_pod_still_names_namespace_and_principal() {
    let s = state_from(&topology(), "n1");
    let p = hbone_source(&s, addr("198.18.9.9:40000"), WAYPOINT_ID, None);
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.principal, WAYPOINT_ID);
    // A pod at the address with another identity is not the peer either.
    let q = hbone_source(&s, addr("198.18.1.3:40000"), WAYPOINT_ID, None);
    assert_eq!((q.workload.as_str(), q.principal.as_str()), ("unknown", WAYPOINT_ID));
}

#[test]
fn plaintext_has_no_principal_and_the_destination_has_its_service() {
    let s = state_from(&topology(), "n1");
    let p = plaintext_source(&s, addr("198.18.1.2:40000"));
    assert_eq!((p.workload.as_str(), p.principal.as_str()), ("client", "unknown"));
    let web = s.workload("198.18.1.3".parse().unwrap()).unwrap();
    let (d, svc) = local_destination(&s, web, 8080);
    assert_eq!(d.workload, "web-1");
    assert_eq!(
        (svc.host.as_str(), svc.name.as_str(), svc.namespace.as_str()),
        ("web.shop.svc.cluster.local", "web", "shop")
    );
    assert_eq!(local_destination(&s, web, 9999).1, ServiceLabels::unknown());
    assert_eq!(remote(&s, "203.0.113.1".parse().unwrap()), Peer::unknown());
}
