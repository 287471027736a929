//! Kubernetes / Istio YAML as an operator or the API server hands it over: decode
//! every document (mesh_common::model::parse_documents: VirtualService,
//! DestinationRule, Gateway, PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication, Secret, Pod, Service, ...), validate it as the waypoint does
//! (route and DestinationRule compilation), then publish it to a waypoint's and an
//! ingress gateway's configuration (snapshot, gateway plan, authn and authz policy
//! sets) and to the node daemon's cluster view. Input: a multi-document YAML file.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mesh_common::model::parse_documents;
use mesh_common::model::store::ConfigStore;
use mesh_common::source::runner::Sink;
use mesh_common::view::ClusterView;
use mesh_waypoint::config::Config;
use mesh_waypoint::endpoint::connector::PlainTcp;
use mesh_waypoint::gateway::GatewayIdentity;

// One of each for the whole run (creating one reads the system's root certificates):
// every input is published on top of the previous one, as a running proxy does.
static WAYPOINT: LazyLock<Arc<Config>> =
    LazyLock::new(|| Config::for_waypoint("bookinfo", "waypoint", "istio-system", Arc::new(PlainTcp)));
static GATEWAY: LazyLock<Arc<Config>> = LazyLock::new(|| {
    let identity = GatewayIdentity {
        namespace: "bookinfo".into(),
        labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
    };
    Config::for_gateway(identity, "istio-system", Arc::new(PlainTcp))
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let results = parse_documents("fuzz.yaml", text);
    for r in results.iter().flatten() {
        // A decoded object names itself (errors and the store key on it).
        let _ = r.object_ref().to_string();
    }
    let mut store = ConfigStore::default();
    store.apply_source("fuzz.yaml", results, &mesh_waypoint::config::validate);
    WAYPOINT.publish(&store);
    GATEWAY.publish(&store);
    let _ = serde_json::to_string(&mesh_waypoint::admin::config_dump(&GATEWAY));
    let view = ClusterView::from_resources("cluster.local", store.iter());
    let _ = (view.workload_count(), view.service_count());
});
