//! The HTTP server: routes by path for the service this process plays.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::client;
use crate::productpage::{self, ok_json};
use crate::{Args, PROPAGATED, Propagated, Service, data, session};

pub type Reply = Response<Full<Bytes>>;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(served_by = %args.served_by(), listen = %args.listen, "bookinfo serving");
    let args = Arc::new(args);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let args = args.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let args = args.clone();
                async move { Ok::<_, Infallible>(handle(&args, req, peer).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(args: &Args, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let fwd = propagated(&req);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let id = path.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let served_by = args.served_by();
    let routed = match (args.service, path.as_str()) {
        (_, "/health") => Some(text(StatusCode::OK, "ok\n".into(), "text/plain")),
        (_, "/peer") => Some(json(peer_report(&served_by, peer, &parts.headers))),
        (Service::Productpage, _) => productpage::route(args, &parts.method, &path, &parts.headers, body, &fwd).await,
        (Service::Details, p) if p.starts_with("/details") => Some(json(data::details(&served_by, id))),
        (Service::Ratings, p) if p.starts_with("/ratings") => Some(json(data::ratings(&served_by, id))),
        (Service::Reviews, p) if p.starts_with("/reviews") => Some(reviews(args, id, &fwd).await),
        _ => None,
    };
    let mut resp = routed.unwrap_or_else(|| {
        text(
            StatusCode::NOT_FOUND,
            format!("{served_by}: no route for {path}\n"),
            "text/plain",
        )
    });
    resp.headers_mut().insert(
        "x-served-by",
        http::HeaderValue::from_str(&served_by).unwrap_or(http::HeaderValue::from_static("bookinfo")),
    );
    if let Some(id) = fwd
        .get("x-request-id")
        .and_then(|v| http::HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}

/// Who this service sees calling it: the connection's peer address (the calling pod's
/// IP when the mesh preserves it) and any `x-forwarded-for` a proxy added.
fn peer_report(served_by: &str, peer: SocketAddr, headers: &http::HeaderMap) -> Value {
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    serde_json::json!({ "served_by": served_by, "peer": peer.to_string(), "x_forwarded_for": xff })
}

/// The headers Bookinfo forwards; `end-user` comes from the request's header or,
/// like Istio's productpage, from the signed-in session.
fn propagated(req: &Request<Incoming>) -> Propagated {
    let mut out: Propagated = PROPAGATED
        .iter()
        .filter_map(|h| {
            req.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*h).to_owned(), v.to_owned()))
        })
        .collect();
    if !out.contains_key("end-user")
        && let Some(user) = session::user(req.headers())
    {
        out.insert("end-user".into(), user);
    }
    out
}

async fn reviews(args: &Args, id: u32, fwd: &Propagated) -> Reply {
    let color = data::star_color(&args.version);
    let ratings = match (color, args.upstream("ratings")) {
        (None, _) => Err("not called".into()),
        (Some(_), None) => Err("no --upstream ratings".into()),
        (Some(_), Some(a)) => client::get("ratings", a, &format!("/ratings/{id}"), fwd, args.ratings_timeout())
            .await
            .map_err(|e| e.to_string())
            .and_then(ok_json),
    };
    json(data::reviews(
        &args.served_by(),
        id,
        color,
        ratings.as_ref().map_err(Clone::clone),
    ))
}

fn json(v: Value) -> Reply {
    json_reply(StatusCode::OK, v)
}

pub fn json_reply(status: StatusCode, v: Value) -> Reply {
    text(status, v.to_string(), "application/json")
}

pub fn text(status: StatusCode, body: String, content_type: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}
