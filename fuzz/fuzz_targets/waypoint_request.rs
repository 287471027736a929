//! The waypoint's request path, from bytes on the downstream connection to the
//! upstream and back: hyper's HTTP/1.1 or HTTP/2 server (proxy::server::serve_io),
//! then route → backend → endpoint for the fixture's VirtualService and
//! DestinationRule, to a fake upstream (an in-memory connection answering every
//! request with 200). Time is paused, so retries, timeouts and fault delays take no
//! wall time. Input: the bytes a client sends (a request, several, or garbage).
#![no_main]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use mesh_common::model::parse_documents;
use mesh_common::model::store::ConfigStore;
use mesh_common::source::runner::Sink;
use mesh_waypoint::config::Config;
use mesh_waypoint::endpoint::connector::{ConnectFuture, Connector, Io};
use mesh_waypoint::proxy::handler::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that answers every request with 200 and a short body, in memory.
struct FakeUpstream;

impl Connector for FakeUpstream {
    fn connect(&self, _addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(64 << 10);
            tokio::spawn(async move {
                let ok = service_fn(|_req| async {
                    Ok::<_, io::Error>(hyper::Response::new(Full::new(Bytes::from_static(b"upstream ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(theirs), ok)
                    .await;
            });
            Ok(Box::new(ours) as Box<dyn Io>)
        })
    }
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
});

static PROXY: LazyLock<Arc<Proxy>> = LazyLock::new(|| {
    let config = Config::for_waypoint("bookinfo", "waypoint", "istio-system", Arc::new(FakeUpstream));
    let mut store = ConfigStore::default();
    let yaml = include_str!("../fixtures/waypoint.yaml");
    store.apply_source(
        "fixture",
        parse_documents("fixture", yaml),
        &mesh_waypoint::config::validate,
    );
    config.publish(&store);
    assert!(
        config.load().rejected.is_empty(),
        "fixture rejected: {:?}",
        config.load().rejected
    );
    let reporter = mesh_waypoint::metrics::Reporter::waypoint;
    Arc::new(Proxy {
        config,
        gateways: vec!["mesh".into()],
        metrics: Arc::new(mesh_waypoint::metrics::RequestMetrics::with_certificates(
            reporter, None,
        )),
        access_log: Default::default(),
        tracer: None,
        series: Default::default(),
        limits: Default::default(),
    })
});

fuzz_target!(|data: &[u8]| {
    let proxy = PROXY.clone();
    RUNTIME.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let peer: SocketAddr = "198.18.1.9:40000".parse().expect("literal address");
        let local: SocketAddr = "198.19.0.12:9080".parse().expect("literal address");
        let served = tokio::spawn(mesh_waypoint::proxy::server::serve_io(server, proxy, peer, local, None));
        let exchange = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        };
        // Virtual time: a connection the server keeps open costs nothing to wait out.
        let _ = tokio::time::timeout(Duration::from_secs(120), exchange).await;
        served.abort();
    });
});
