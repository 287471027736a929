//! The ingress gateway's Host and SNI handling: which server and VirtualService a
//! request's `Host` selects on each listener (gateway::routing::decide, including the
//! `httpsRedirect` answer built from it), Gateway `hosts` entries
//! (gateway::server_host::ServerHost::parse), and the TLS handshake bytes of an HTTPS
//! listener, whose certificate is chosen by SNI (gateway::tls). Input: a selector
//! byte, then 0: `authority\npath`; 1: a Gateway `hosts` entry; 2: bytes a TLS client sends.
#![no_main]

use std::io::Read;
use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use libfuzzer_sys::fuzz_target;
use mesh_common::model::parse_documents;
use mesh_common::model::store::ConfigStore;
use mesh_common::source::runner::Sink;
use mesh_waypoint::config::{Config, Snapshot};
use mesh_waypoint::endpoint::connector::PlainTcp;
use mesh_waypoint::gateway::GatewayIdentity;
use mesh_waypoint::gateway::plan::Plan;
use mesh_waypoint::gateway::routing::{Downstream, Outcome, decide};
use mesh_waypoint::gateway::server_host::{ServerHost, request_host};

/// Ports of the fixture: plain HTTP, HTTP that redirects to HTTPS, HTTPS.
const PORTS: [(u16, bool); 3] = [(8080, false), (8081, false), (8443, true)];

struct Fixture {
    snap: Arc<Snapshot>,
    plan: Arc<Plan>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".into(), "*.example.com".into()])
        .expect("self-signed certificate");
    let yaml = format!(
        "{}\n---\n{}",
        include_str!("../fixtures/gateway.yaml"),
        format_args!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: shop-cert, namespace: bookinfo}}\ntype: kubernetes.io/tls\n\
             data:\n  tls.crt: {}\n  tls.key: {}\n",
            STANDARD.encode(cert.cert.pem()),
            STANDARD.encode(cert.signing_key.serialize_pem())
        )
    );
    let mut store = ConfigStore::default();
    store.apply_source(
        "fixture",
        parse_documents("fixture", &yaml),
        &mesh_waypoint::config::validate,
    );
    let identity = GatewayIdentity {
        namespace: "bookinfo".into(),
        labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
    };
    let config = Config::for_gateway(identity, "istio-system", Arc::new(PlainTcp));
    config.publish(&store);
    let snap = config.load();
    assert!(snap.rejected.is_empty(), "fixture rejected: {:?}", snap.rejected);
    let plan = snap.gateway.clone().expect("gateway mode has a plan");
    assert!(plan.errors.is_empty(), "fixture plan errors: {:?}", plan.errors);
    assert!(
        plan.ports.get(&8443).and_then(|p| p.tls.as_ref()).is_some(),
        "8443 serves TLS"
    );
    Fixture { snap, plan }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let (authority, path) = text.split_once('\n').unwrap_or((text, "/"));
            route(fixture, authority, path);
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(h) = ServerHost::parse(text, "bookinfo") {
                let json = serde_json::to_string(&h.pattern).unwrap_or_default();
                assert!(!json.contains("*."), "wildcards are kept as suffixes: {json}");
            }
        }
        _ => handshake(fixture, rest),
    }
});

/// Every listener decides without panicking; a redirect points at the request's own
/// host over https, whatever else the Host header carries.
fn route(fixture: &Fixture, authority: &str, path: &str) {
    let Ok(req) = http::Request::builder().uri(path).header("host", authority).body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    for (port, tls) in PORTS {
        match decide(
            &fixture.snap,
            &fixture.plan,
            &parts,
            authority,
            Downstream { port, tls },
        ) {
            Outcome::Route { table, gateways } => {
                assert!(!gateways.is_empty(), "{table:?}");
            }
            Outcome::Local(resp) => {
                if let Some(location) = resp.headers().get("location") {
                    // The path is copied as sent: it may hold non-ASCII bytes (so does Envoy's).
                    let uri = http::Uri::try_from(location.as_bytes())
                        .unwrap_or_else(|e| panic!("Location {location:?}: {e}"));
                    assert_eq!(uri.scheme_str(), Some("https"), "{location:?}");
                    let host = uri
                        .host()
                        .unwrap_or_default()
                        .trim_start_matches('[')
                        .trim_end_matches(']');
                    assert_eq!(
                        host.trim_end_matches('.').to_ascii_lowercase(),
                        request_host(authority).trim_start_matches('[').trim_end_matches(']'),
                        "Host {authority:?} redirected to {location:?}"
                    );
                }
            }
        }
    }
}

/// Feeds client bytes to the HTTPS listener's TLS server until it has read them all
/// or refuses them; what it answers is drained so it never grows without bound.
fn handshake(fixture: &Fixture, mut bytes: &[u8]) {
    let Some(cfg) = fixture.plan.ports.get(&8443).and_then(|p| p.tls.clone()) else {
        return;
    };
    let Ok(mut conn) = rustls::ServerConnection::new(cfg) else {
        return;
    };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        match conn.read_tls(&mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            break;
        }
        while conn.wants_write() {
            out.clear();
            if conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        let mut plain = [0u8; 1024];
        let _ = conn.reader().read(&mut plain);
    }
}
