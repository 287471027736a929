//! Readiness (mesh-common's named conditions: eBPF loaded, configuration read,
//! certificates held, ...), served as `GET /healthz/ready`: 200 or 503 with one line
//! per condition.

use http::StatusCode;
use hyper::body::Incoming;
pub use mesh_common::readiness::{Condition, Readiness};

use crate::http_server::{self, Body};

pub async fn handle(readiness: &Readiness, req: http::Request<Incoming>) -> http::Response<Body> {
    if req.uri().path() != "/healthz/ready" {
        return http_server::text(StatusCode::NOT_FOUND, "try /healthz/ready\n");
    }
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    http_server::text(status, readiness.report())
}
