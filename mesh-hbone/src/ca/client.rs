//! The CA client: one gRPC/TLS channel to the CA (reconnecting on its own), a bearer
//! token read from a file at every request (projected tokens rotate), and checks on
//! the answer: the leaf must carry the identity asked for and chain to the trusted root.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::proto::{
    CLUSTER_ID_HEADER, CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse, impersonation,
};
use crate::SpiffeId;
use crate::cert::Current;

#[derive(Clone, Debug)]
pub struct CaClientConfig {
    /// `https://host:port` of the CA.
    pub address: String,
    /// The name the CA's serving certificate carries (verified against `root_pem`).
    pub server_name: String,
    /// Trust anchors, PEM: the mesh root(s), as in Istio's `istio-ca-root-cert` ConfigMap.
    pub root_pem: String,
    /// The caller's token (a projected ServiceAccount token in Kubernetes), re-read per request.
    pub token_file: PathBuf,
    /// Sent as the `ClusterID` header.
    pub cluster_id: String,
    /// Bounds one request (connect included).
    pub timeout: Duration,
}

/// Outcome of one CA request, the `result` label of `mesh_ca_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CaResult {
    issued,
    /// The CA refused: bad token, or an identity the caller may not have.
    denied,
    /// No answer: connection refused, TLS failure, timeout.
    unreachable,
    /// An answer we cannot use (wrong identity, broken chain) or a local failure.
    invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("the CA root certificate(s) are unusable: {0}")]
    Root(String),
    #[error("CA address {address} is invalid: {detail}")]
    Address { address: String, detail: String },
    #[error("cannot read the CA token {path}: {source}; the CA cannot authenticate this process")]
    Token { path: PathBuf, source: std::io::Error },
    #[error("cannot generate a key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the CA at {address} is unreachable: {detail}; existing certificates keep serving until they expire")]
    Unreachable { address: String, detail: String },
    #[error("the CA refused the certificate for {identity}: {message}")]
    Denied { identity: SpiffeId, message: String },
    #[error("the CA answered for {identity} with an unusable certificate: {detail}")]
    BadResponse { identity: SpiffeId, detail: String },
}

impl CaClientError {
    pub fn result(&self) -> CaResult {
        match self {
            Self::Unreachable { .. } => CaResult::unreachable,
            Self::Denied { .. } => CaResult::denied,
            _ => CaResult::invalid,
        }
    }
}

pub struct CaClient {
    cfg: CaClientConfig,
    channel: Channel,
    roots: Arc<RootCertStore>,
}

impl CaClient {
    /// Prepares the channel; nothing is dialled until the first request.
    pub fn new(cfg: CaClientConfig) -> Result<Self, CaClientError> {
        let roots = root_store_pem(&cfg.root_pem)?;
        let bad_address = |detail: String| CaClientError::Address {
            address: cfg.address.clone(),
            detail,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&cfg.root_pem))
            .domain_name(cfg.server_name.clone());
        let channel = Endpoint::from_shared(cfg.address.clone())
            .map_err(|e| bad_address(e.to_string()))?
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .tls_config(tls)
            .map_err(|e| bad_address(e.to_string()))?
            .connect_lazy();
        Ok(Self { cfg, channel, roots })
    }

    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// Asks for a certificate for `identity` with a key generated here. `impersonate`:
    /// a node agent asking on behalf of one of its pods (ztunnel's `ImpersonatedIdentity`);
    /// otherwise the caller asks for its own identity.
    pub async fn fetch(
        &self,
        identity: &SpiffeId,
        impersonate: bool,
        lifetime: Duration,
        generation: u64,
    ) -> Result<Current, CaClientError> {
        let csr = super::csr::generate(identity)?;
        let token = std::fs::read_to_string(&self.cfg.token_file).map_err(|source| CaClientError::Token {
            path: self.cfg.token_file.clone(),
            source,
        })?;
        let body = IstioCertificateRequest {
            csr: csr.pem,
            validity_duration: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
            metadata: impersonate.then(|| impersonation(&identity.to_string())),
        };
        let issued = SystemTime::now();
        let response = self.call(identity, body, token.trim()).await?;
        assemble(
            &csr.key,
            &response.cert_chain,
            &self.roots,
            identity,
            issued,
            generation,
        )
    }

    async fn call(
        &self,
        identity: &SpiffeId,
        body: IstioCertificateRequest,
        token: &str,
    ) -> Result<IstioCertificateResponse, CaClientError> {
        let unreachable = |detail: String| CaClientError::Unreachable {
            address: self.cfg.address.clone(),
            detail,
        };
        let mut req = tonic::Request::new(body);
        let auth = format!("Bearer {token}")
            .parse()
            .map_err(|_| unreachable("the token is not a valid header value".into()))?;
        req.metadata_mut().insert("authorization", auth);
        if let Ok(v) = self.cfg.cluster_id.parse() {
            req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| unreachable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH);
        let codec = tonic_prost::ProstCodec::default();
        match grpc.unary(req, path, codec).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument => {
                    CaClientError::Denied {
                        identity: identity.clone(),
                        message: s.message().to_owned(),
                    }
                }
                _ => unreachable(format!("{}: {}", s.code(), s.message())),
            }),
        }
    }
}

/// Checks an answer's chain (identity, chain to `roots`) and pairs it with the key that
/// stayed here.
pub fn assemble(
    key: &rcgen::KeyPair,
    cert_chain: &[String],
    roots: &RootCertStore,
    identity: &SpiffeId,
    issued: SystemTime,
    generation: u64,
) -> Result<Current, CaClientError> {
    let bad = |detail: String| CaClientError::BadResponse {
        identity: identity.clone(),
        detail,
    };
    let chain = parse_chain(cert_chain).map_err(&bad)?;
    let got = crate::tls::verify_chain(&chain, roots, webpki::KeyUsage::client_auth())
        .map_err(|e| bad(format!("does not chain to the trusted root: {e}")))?;
    if &got != identity {
        return Err(bad(format!("the certificate is for {got}")));
    }
    let (not_before, not_after) = validity(&chain[0]).map_err(&bad)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der).map_err(|e| bad(e.to_string()))?;
    Ok(Current {
        certified: Arc::new(CertifiedKey::new(chain, signing)),
        not_before,
        not_after,
        issued,
        generation,
    })
}

/// All certificates of a PEM bundle as trust anchors (several during a root rotation).
pub fn root_store_pem(pem: &str) -> Result<Arc<RootCertStore>, CaClientError> {
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| CaClientError::Root(e.to_string()))?;
        store.add(cert).map_err(|e| CaClientError::Root(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(CaClientError::Root("no CERTIFICATE block".into()));
    }
    Ok(Arc::new(store))
}

/// Leaf and intermediates; Istio puts the root last, which peers already hold, so it is dropped.
fn parse_chain(pems: &[String]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut chain = Vec::new();
    for pem in pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            chain.push(cert.map_err(|e| format!("bad PEM in cert_chain: {e}"))?);
        }
    }
    if chain.is_empty() {
        return Err("empty cert_chain".into());
    }
    if chain.len() > 1 {
        chain.pop();
    }
    Ok(chain)
}

/// `notBefore` and `notAfter` of a certificate.
pub fn validity(cert: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| format!("unparsable certificate: {e}"))?;
    let v = parsed.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok((at(v.not_before), at(v.not_after)))
}
