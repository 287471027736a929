//! Headers an edge proxy adds before routing, as Istio's ingress gateway (Envoy with
//! `use_remote_address`) does: `x-forwarded-for` gains the client's address,
//! `x-forwarded-proto` says how the client connected, and a request without
//! `x-request-id` gets one, so Bookinfo-style apps can propagate it downstream.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::HeaderValue;
use rand::Rng;

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_REQUEST_ID: &str = "x-request-id";

pub fn apply(headers: &mut HeaderMap, peer: SocketAddr, tls: bool) {
    append_forwarded_for(headers, peer.ip());
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if !headers.contains_key(X_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(&request_id(&mut rand::thread_rng()))
    {
        headers.insert(X_REQUEST_ID, v);
    }
}

/// Appends `client` to `x-forwarded-for` (the gateway's downstream; the waypoint's
/// client, since the application behind a waypoint sees the waypoint's address).
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let client = client.to_string();
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client}"),
        _ => client,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// A random (version 4) UUID, the form Envoy generates.
fn request_id(rng: &mut impl Rng) -> String {
    let mut b: [u8; 16] = rng.r#gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_forwarding_headers_and_keeps_a_given_request_id() {
        let peer: SocketAddr = "198.18.0.9:4000".parse().unwrap();
        let mut h = HeaderMap::new();
        apply(&mut h, peer, true);
        assert_eq!(h[X_FORWARDED_FOR], "198.18.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        let id = h[X_REQUEST_ID].to_str().unwrap().to_owned();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        apply(&mut h, peer, false);
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.7, 198.18.0.9");
        assert_eq!(
            h[X_FORWARDED_PROTO], "http",
            "the client's claim is replaced by what we saw"
        );
        assert_eq!(h[X_REQUEST_ID], "abc");
    }
}
