//! The HBONE server's CONNECT parsing (mesh_hbone::server::parse): `:authority`,
//! `forwarded`, `traceparent`, `baggage`, as a hostile peer on 15008 may send them.
//! Input: line 1 the method, line 2 the request target, then `name: value` headers.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mesh_hbone::server::{ConnInfo, parse};
use mesh_hbone::{SpiffeId, TraceParent};

static CONN: LazyLock<Arc<ConnInfo>> = LazyLock::new(|| {
    Arc::new(ConnInfo {
        peer_addr: "198.18.0.2:40000".parse().expect("literal address"),
        peer_id: SpiffeId::new("cluster.local", "default", "client"),
        peer_cert: rustls_pki_types::CertificateDer::from(Vec::new()),
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim_start());
        }
    }
    // What h2 would not hand over (bad method, URI or header) never reaches parse.
    let Ok(req) = builder.body(()) else { return };
    let (parts, ()) = req.into_parts();
    let Ok(inbound) = parse(&parts, CONN.clone()) else {
        return;
    };
    assert_eq!(parts.method, http::Method::CONNECT);
    if let Some(tp) = inbound.traceparent {
        // Accepted means canonical: what we log and forward is what the peer sent.
        let sent = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            tp.to_string(),
            sent.trim(),
            "traceparent accepted but not round-tripped"
        );
        assert_eq!(TraceParent::parse(&tp.to_string()), Some(tp));
    }
});
