//! The HTTP server: routes by path for the service this process plays.

use std::convert::Infallible;
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

use crate::client::{self, CallError};
use crate::{Args, PROPAGATED, Propagated, Service, pages};

type Body = Full<Bytes>;

pub async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(served_by = %args.served_by(), listen = %args.listen, "bookinfo serving");
    let args = Arc::new(args);
    loop {
        let (stream, _) = match listener.accept().await {
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
                async move { Ok::<_, Infallible>(handle(&args, req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(args: &Args, req: Request<Incoming>) -> Response<Body> {
    let headers = propagated(&req);
    let path = req.uri().path().to_owned();
    let id = path.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let served_by = args.served_by();
    let mut resp = match (args.service, path.as_str()) {
        (_, "/health") => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        (Service::Productpage, "/" | "/productpage") => productpage(args, &headers).await,
        (Service::Details, p) if p.starts_with("/details") => json(pages::details(&served_by, id)),
        (Service::Ratings, p) if p.starts_with("/ratings") => json(pages::ratings(&served_by, id)),
        (Service::Reviews, p) if p.starts_with("/reviews") => reviews(args, id, &headers).await,
        _ => text(
            StatusCode::NOT_FOUND,
            format!("{served_by}: no route for {path}\n"),
            "text/plain",
        ),
    };
    resp.headers_mut().insert(
        "x-served-by",
        http::HeaderValue::from_str(&served_by).unwrap_or(http::HeaderValue::from_static("bookinfo")),
    );
    if let Some(id) = headers
        .get("x-request-id")
        .and_then(|v| http::HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert("x-request-id", id);
    }
    resp
}

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
    // Bookinfo's login keeps the user in a cookie; accept `user=<name>` as well.
    if !out.contains_key("end-user") {
        let cookie = req
            .headers()
            .get(http::header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(u) = cookie.split(';').find_map(|c| c.trim().strip_prefix("user=")) {
            out.insert("end-user".into(), u.to_owned());
        }
    }
    out
}

async fn productpage(args: &Args, headers: &Propagated) -> Response<Body> {
    let details = match args.upstream("details") {
        Some(a) => client::get("details", a, "/details/0", headers, args.reviews_timeout())
            .await
            .map_err(|e| e.to_string())
            .and_then(ok_json),
        None => Err("no --upstream details".into()),
    };
    let reviews = fetch_reviews(args, headers).await;
    let user = headers.get("end-user").map(String::as_str);
    text(
        StatusCode::OK,
        pages::productpage(&args.served_by(), user, details, reviews),
        "text/html; charset=utf-8",
    )
}

/// Like the real productpage: a timeout per attempt and a bounded number of attempts.
async fn fetch_reviews(args: &Args, headers: &Propagated) -> Result<(String, Value), String> {
    let addr = args.upstream("reviews").ok_or("no --upstream reviews")?;
    let mut last = String::new();
    for _ in 0..args.reviews_attempts.max(1) {
        match client::get("reviews", addr, "/reviews/0", headers, args.reviews_timeout()).await {
            Ok(r) if r.status == 200 => return Ok((r.served_by, r.body)),
            Ok(r) => last = format!("reviews answered {}", r.status),
            Err(CallError::Timeout) => last = format!("reviews timed out after {} ms", args.reviews_timeout_ms),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

async fn reviews(args: &Args, id: u32, headers: &Propagated) -> Response<Body> {
    let color = pages::star_color(&args.version);
    let ratings = match (color, args.upstream("ratings")) {
        (None, _) => Err("not called".into()),
        (Some(_), None) => Err("no --upstream ratings".into()),
        (Some(_), Some(a)) => client::get("ratings", a, &format!("/ratings/{id}"), headers, args.ratings_timeout())
            .await
            .map_err(|e| e.to_string())
            .and_then(ok_json),
    };
    json(pages::reviews(
        &args.served_by(),
        id,
        color,
        ratings.as_ref().map_err(Clone::clone),
    ))
}

fn ok_json(r: client::Reply) -> Result<Value, String> {
    if r.status == 200 {
        Ok(r.body)
    } else {
        Err(format!("HTTP {}", r.status))
    }
}

fn json(v: Value) -> Response<Body> {
    text(StatusCode::OK, v.to_string(), "application/json")
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}
