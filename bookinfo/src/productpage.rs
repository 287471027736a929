//! productpage's routes, as Istio's productpage has them: the page, the sign-in form's
//! `/login` and `/logout`, the JSON API under `/api/v1/products`, and `/static/`.

use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::client::{self, CallError};
use crate::page::{self, View};
use crate::server::{Reply, json_reply, text};
use crate::{Args, Propagated, data, session};

/// The login form is a few dozen bytes; anything much larger is refused.
const MAX_FORM_BYTES: usize = 4096;
const STYLESHEET: &str = include_str!("../static/bookinfo.css");

/// Routes a productpage request; `None` when no route matches.
pub async fn route(
    args: &Args,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Incoming,
    fwd: &Propagated,
) -> Option<Reply> {
    Some(match (method, path) {
        (&Method::GET, "/" | "/productpage" | "/index.html") => front(args, headers, fwd).await,
        (&Method::POST, "/login") => login(headers, body).await,
        (&Method::GET, "/logout") => redirect(headers, session::sign_out_cookie()),
        (_, "/login" | "/logout") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            "text/plain",
        ),
        (&Method::GET, "/static/bookinfo.css") => {
            let mut r = text(StatusCode::OK, STYLESHEET.into(), "text/css; charset=utf-8");
            r.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("max-age=300"),
            );
            r
        }
        (&Method::GET, "/api/v1/products") => json_reply(StatusCode::OK, data::products()),
        (&Method::GET, p) if p.starts_with("/api/v1/products/") => {
            api(args, &p["/api/v1/products/".len()..], fwd).await
        }
        _ => return None,
    })
}

async fn front(args: &Args, headers: &HeaderMap, fwd: &Propagated) -> Reply {
    let products = data::products();
    let details = details(args, 0, fwd).await.and_then(ok_json);
    let reviews = fetch_reviews(args, 0, fwd).await;
    let user = fwd.get("end-user").cloned().or_else(|| session::user(headers));
    let view = View {
        served_by: &args.served_by(),
        user: user.as_deref(),
        product: &products[0],
        details,
        reviews,
    };
    let mut r = text(StatusCode::OK, page::render(&view), "text/html; charset=utf-8");
    // The page differs per user: no shared cache may serve one user's page to another.
    r.headers_mut()
        .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

/// `POST /login` with the form's `username`: starts the session, back to the page.
async fn login(headers: &HeaderMap, body: Incoming) -> Reply {
    let form = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "login form too large\n".into(),
                "text/plain",
            );
        }
    };
    match session::form_user(&form) {
        Some(user) => redirect(headers, session::sign_in_cookie(&user)),
        // Nothing usable to sign in with: back to the page, still signed out.
        None => redirect(headers, session::sign_out_cookie()),
    }
}

fn redirect(headers: &HeaderMap, cookie: String) -> Reply {
    let mut r = text(StatusCode::FOUND, String::new(), "text/plain");
    let h = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&session::back_to(headers)) {
        h.insert(http::header::LOCATION, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&cookie) {
        h.insert(http::header::SET_COOKIE, v);
    }
    r
}

/// `/api/v1/products/<id>[/reviews|/ratings]`: the downstream service's JSON and
/// status, or Istio's error object.
async fn api(args: &Args, rest: &str, fwd: &Propagated) -> Reply {
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(id) = id.parse::<u32>() else {
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({ "error": "please provide numeric product id" }),
        );
    };
    let (result, unavailable) = match what {
        "" => (details(args, id, fwd).await, page::DETAILS_UNAVAILABLE),
        "reviews" => (reviews_once(args, id, fwd).await, page::REVIEWS_UNAVAILABLE),
        "ratings" => (ratings(args, id, fwd).await, page::RATINGS_API_UNAVAILABLE),
        _ => return text(StatusCode::NOT_FOUND, format!("no route for {rest}\n"), "text/plain"),
    };
    match result {
        Ok(r) if r.status == 200 => json_reply(StatusCode::OK, r.body),
        Ok(r) => json_reply(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            json!({ "error": unavailable }),
        ),
        Err(_) => json_reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": unavailable })),
    }
}

async fn details(args: &Args, id: u32, fwd: &Propagated) -> Result<client::Reply, String> {
    let addr = args.upstream("details").ok_or("no --upstream details")?;
    client::get("details", addr, &format!("/details/{id}"), fwd, args.reviews_timeout())
        .await
        .map_err(|e| e.to_string())
}

async fn ratings(args: &Args, id: u32, fwd: &Propagated) -> Result<client::Reply, String> {
    let addr = args.upstream("ratings").ok_or("no --upstream ratings")?;
    client::get("ratings", addr, &format!("/ratings/{id}"), fwd, args.reviews_timeout())
        .await
        .map_err(|e| e.to_string())
}

async fn reviews_once(args: &Args, id: u32, fwd: &Propagated) -> Result<client::Reply, String> {
    let addr = args.upstream("reviews").ok_or("no --upstream reviews")?;
    client::get("reviews", addr, &format!("/reviews/{id}"), fwd, args.reviews_timeout())
        .await
        .map_err(|e| e.to_string())
}

/// Like the real productpage: a timeout per attempt and a bounded number of attempts.
async fn fetch_reviews(args: &Args, id: u32, fwd: &Propagated) -> Result<(String, Value), String> {
    let addr = args.upstream("reviews").ok_or("no --upstream reviews")?;
    let mut last = String::new();
    for _ in 0..args.reviews_attempts.max(1) {
        match client::get("reviews", addr, &format!("/reviews/{id}"), fwd, args.reviews_timeout()).await {
            Ok(r) if r.status == 200 => return Ok((r.served_by, r.body)),
            Ok(r) => last = format!("reviews answered {}", r.status),
            Err(CallError::Timeout) => last = format!("reviews timed out after {} ms", args.reviews_timeout_ms),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

pub fn ok_json(r: client::Reply) -> Result<Value, String> {
    if r.status == 200 {
        Ok(r.body)
    } else {
        Err(format!("HTTP {}", r.status))
    }
}
