//! Builds the request sent upstream: rewritten path and authority, header rules,
//! hop-by-hop headers dropped, body already buffered (so attempts can be repeated).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Version};
use http_body_util::Full;

use crate::route::headers::HeaderOps;

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

/// An HTTP/1.1 upgrade request (WebSocket and the like): `Connection: upgrade` plus `Upgrade`.
pub fn is_upgrade(headers: &http::HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

pub fn build(
    parts: &Parts,
    path_and_query: &str,
    authority: &str,
    body: Bytes,
    ops: &[&HeaderOps],
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut headers = parts.headers.clone();
    // `te: trailers` is the one TE value h2 allows, and gRPC needs it end to end.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let upgrade = is_upgrade(&parts.headers)
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    headers.remove("proxy-connection");
    for op in ops {
        op.apply(&mut headers);
    }
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if body.is_empty()
        && !matches!(
            parts.method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        )
    {
        headers.remove(header::CONTENT_LENGTH);
    }
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query)
        .version(Version::HTTP_11)
        .body(Full::new(body))?;
    *req.headers_mut() = headers;
    Ok(req)
}
