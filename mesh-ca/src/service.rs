//! `istio.v1.auth.IstioCertificateService/CreateCertificate` over gRPC: authenticate the
//! bearer token, authorize the identity ([`crate::auth::authorize`]), sign the CSR's key.
//! Every decision is logged; a refusal names the caller, the identity and the reason.
//! Nothing is kept between requests, so any number of replicas can serve.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_hbone::ca::proto::{
    CLUSTER_ID_HEADER, CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse, SERVICE_NAME,
    impersonated,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::body::Body;
use tonic::{Request, Response, Status};

use crate::auth::{Ask, Denial, PodView, Policy, Reason, TokenReviewer, authorize};
use crate::authority::Authority;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub result: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub reason: Reason,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    issued,
    denied,
    /// The caller could not be verified now (API server down) or signing failed.
    error,
}

#[derive(Clone, Default)]
pub struct CaMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub denials: Family<DenialLabels, Counter>,
}

impl CaMetrics {
    pub fn register(&self, reg: &mut prometheus_client::registry::Registry) {
        reg.register(
            "mesh_ca_server_requests",
            "CreateCertificate requests served, by result",
            self.requests.clone(),
        );
        reg.register(
            "mesh_ca_server_denials",
            "Refused requests, by reason",
            self.denials.clone(),
        );
    }
}

pub struct CaService {
    pub authority: Arc<Authority>,
    pub policy: Policy,
    pub reviewer: Arc<dyn TokenReviewer>,
    pub pods: Arc<dyn PodView>,
    /// Requested lifetimes are capped here (and 0 means this).
    pub max_lifetime: Duration,
    pub metrics: CaMetrics,
}

impl CaService {
    pub async fn create_certificate(
        &self,
        req: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let meta = req.metadata();
        let token = meta
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_owned());
        let cluster_id = meta
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let peer = req.remote_addr();
        let body = req.into_inner();
        let imp = impersonated(&body).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ask = Ask {
            token: token.as_deref(),
            cluster_id: cluster_id.as_deref(),
            impersonated: imp,
        };
        let (caller, identity) = match authorize(&self.policy, &*self.reviewer, &*self.pods, &ask).await {
            Ok(ok) => ok,
            Err(denial) => return Err(self.refuse(denial, peer, imp)),
        };
        let lifetime = match u64::try_from(body.validity_duration) {
            Ok(0) | Err(_) => self.max_lifetime,
            Ok(s) => Duration::from_secs(s).min(self.max_lifetime),
        };
        match self.authority.sign_csr(&body.csr, &identity, lifetime) {
            Ok(cert_chain) => {
                tracing::info!(%caller, %identity, lifetime_secs = lifetime.as_secs(), "certificate issued");
                self.count(Outcome::issued);
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(e) => {
                tracing::warn!(%caller, %identity, "certificate not issued: {e}");
                self.count(Outcome::error);
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }

    fn refuse(&self, denial: Denial, peer: Option<std::net::SocketAddr>, requested: Option<&str>) -> Status {
        let reason = denial.reason();
        tracing::warn!(
            ?peer,
            ?reason,
            requested = requested.unwrap_or("(own identity)"),
            "certificate refused: {denial}"
        );
        self.metrics.denials.get_or_create(&DenialLabels { reason }).inc();
        match denial {
            Denial::Unavailable(m) => {
                self.count(Outcome::error);
                Status::unavailable(m)
            }
            Denial::NoToken | Denial::BadToken(_) => {
                self.count(Outcome::denied);
                Status::unauthenticated(denial.to_string())
            }
            other => {
                self.count(Outcome::denied);
                Status::permission_denied(other.to_string())
            }
        }
    }

    fn count(&self, result: Outcome) {
        self.metrics.requests.get_or_create(&RequestLabels { result }).inc();
    }
}

/// The gRPC service, routed by path (what tonic's generated server does).
#[derive(Clone)]
pub struct CaServer(pub Arc<CaService>);

impl tonic::server::NamedService for CaServer {
    const NAME: &'static str = SERVICE_NAME;
}

struct Create(Arc<CaService>);

impl tonic::server::UnaryService<IstioCertificateRequest> for Create {
    type Response = IstioCertificateResponse;
    type Future = mesh_hbone::BoxFuture<'static, Result<Response<IstioCertificateResponse>, Status>>;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.create_certificate(request).await })
    }
}

impl tonic::codegen::Service<http::Request<Body>> for CaServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = mesh_hbone::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE_PATH {
            let path = req.uri().path().to_owned();
            return Box::pin(async move { Ok(Status::unimplemented(format!("no method {path}")).into_http()) });
        }
        let svc = Create(self.0.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(svc, req).await)
        })
    }
}
