//! `GET /healthz/ready` of a waypoint or gateway (the Kubernetes probe on 15021, and
//! `/ready` on the admin port): 200 only when its configuration has been read
//! completely once (`config`) and, with `--ca-address`, it holds a valid mesh
//! certificate (`certificate`); one line per condition either way.

use std::sync::Arc;

use http::{Response, StatusCode};
use tokio::net::TcpListener;

use crate::body::{self, Body};
use crate::config::Config;
use crate::hbone::identity::ProxyIdentity;

/// The readiness answer now.
pub fn check(config: &Config, identity: Option<&ProxyIdentity>) -> Response<Body> {
    let r = config.readiness();
    if let Some(id) = identity {
        // Computed now: a certificate expires without any event announcing it.
        r.set("certificate", id.condition());
    }
    let mut resp = Response::new(body::full(r.report()));
    if !r.is_ready() {
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    resp
}

/// Serves `/healthz/ready` on `listener` (`--readiness-addr`) for the process' life.
pub async fn serve(listener: TcpListener, config: Arc<Config>, identity: Option<Arc<ProxyIdentity>>) {
    crate::admin::serve_with(listener, move |path| match path {
        "/healthz/ready" => check(&config, identity.as_deref()),
        _ => crate::admin::not_found("try /healthz/ready\n"),
    })
    .await
}

#[cfg(test)]
mod tests {
    use mesh_common::source::runner::Sink;
    use mesh_common::source::status::SourceStatus;

    use super::*;
    use crate::endpoint::connector::PlainTcp;

    #[test]
    fn ready_once_the_source_was_read_completely_and_through_its_outage() {
        let config = Config::new("shop", Arc::new(PlainTcp));
        assert_eq!(
            check(&config, None).status(),
            StatusCode::OK,
            "no source: empty configuration"
        );
        config.follow_source("the Kubernetes API server".into());
        assert_eq!(check(&config, None).status(), StatusCode::SERVICE_UNAVAILABLE);
        let mut s = SourceStatus::default();
        s.record("Pod", Ok(()));
        config.status(&s, 3);
        assert_eq!(check(&config, None).status(), StatusCode::OK);
        s.record("Pod", Err("connection refused".into()));
        config.status(&s, 3);
        assert_eq!(check(&config, None).status(), StatusCode::OK);
        assert!(config.readiness().report().contains("unreachable since"));
    }
}
