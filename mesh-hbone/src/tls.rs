//! rustls configurations for HBONE: TLS 1.3 only, ALPN `h2`, mesh-root-signed
//! certificates on both sides, and SPIFFE checks instead of DNS names: the server
//! accepts clients of its trust domain, the client accepts only the identity it expects.

use std::sync::{Arc, LazyLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::ResolvesServerCert;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::{RefusalReason, SpiffeId};

pub const ALPN_H2: &[u8] = b"h2";
/// rustls buffers at most this much plaintext per connection before pushing back;
/// 1 MiB instead of 64 KiB keeps 1 MiB h2 frames flowing (docs/tunnel-tuning.md step 9).
pub const TLS_BUFFER_LIMIT: usize = 1 << 20;

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the mesh root certificate cannot be used as a trust anchor: {0}")]
    Root(rustls::Error),
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    PROVIDER.signature_verification_algorithms
}

pub fn root_store(root: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    store.add(root.clone()).map_err(TlsError::Root)?;
    Ok(Arc::new(store))
}

/// Why a peer certificate was refused, as a metric label and a log sentence.
fn refuse(reason: impl Into<String>) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(Refusal(
        reason.into(),
    )))))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

fn webpki_error(e: webpki::Error) -> rustls::Error {
    match e {
        webpki::Error::CertExpired { .. } => rustls::Error::InvalidCertificate(CertificateError::Expired),
        webpki::Error::CertNotValidYet { .. } => rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
        webpki::Error::UnknownIssuer => rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        other => refuse(format!("certificate chain invalid: {other}")),
    }
}

/// The SPIFFE id in a certificate's URI SANs.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<SpiffeId, rustls::Error> {
    let ee = EndEntityCert::try_from(cert).map_err(webpki_error)?;
    let mut uris = ee.valid_uri_names();
    uris.find_map(|u| u.parse::<SpiffeId>().ok())
        .ok_or_else(|| refuse("certificate carries no SPIFFE id"))
}

/// Chain to the mesh root, valid now, for `usage`; returns the SPIFFE id.
pub fn verify_chain(
    chain: &[CertificateDer<'_>],
    roots: &RootCertStore,
    usage: KeyUsage,
) -> Result<SpiffeId, rustls::Error> {
    let (end, intermediates) = chain.split_first().ok_or_else(|| refuse("no certificate presented"))?;
    verify_at(end, intermediates, roots, usage, UnixTime::now())
}

fn verify_at(
    end: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    usage: KeyUsage,
    now: UnixTime,
) -> Result<SpiffeId, rustls::Error> {
    let ee = EndEntityCert::try_from(end).map_err(webpki_error)?;
    ee.verify_for_usage(algorithms().all, &roots.roots, intermediates, now, usage, None, None)
        .map_err(webpki_error)?;
    spiffe_id(end)
}

/// Server side: any client certificate of the mesh CA with an id in our trust domain.
#[derive(Debug)]
struct SpiffeClientVerifier {
    roots: Arc<RootCertStore>,
    trust_domain: String,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = verify_at(end, intermediates, &self.roots, KeyUsage::client_auth(), now)?;
        if id.trust_domain != self.trust_domain {
            return Err(refuse(format!(
                "client {id} is not in trust domain {}",
                self.trust_domain
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(msg, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// Client side: the server must present exactly the identity chosen for the destination.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = verify_at(end, intermediates, &self.roots, KeyUsage::server_auth(), now)?;
        if id != self.expected {
            return Err(refuse(format!("server presented {id}, expected {}", self.expected)));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(msg, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

pub fn server_config(
    certs: Arc<dyn ResolvesServerCert>,
    roots: Arc<RootCertStore>,
    trust_domain: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = Arc::new(SpiffeClientVerifier {
        roots,
        trust_domain: trust_domain.to_owned(),
    });
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(cfg))
}

pub fn client_config(
    certs: Arc<dyn ResolvesClientCert>,
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = Arc::new(SpiffeServerVerifier { roots, expected });
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certs);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// A short, stable name for a handshake failure (metric label).
pub fn failure_reason(e: &std::io::Error) -> RefusalReason {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return RefusalReason::HandshakeIo;
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Expired) => RefusalReason::CertExpired,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => RefusalReason::CertUnknownIssuer,
        rustls::Error::InvalidCertificate(_) => RefusalReason::CertInvalid,
        rustls::Error::NoCertificatesPresented => RefusalReason::NoClientCert,
        rustls::Error::InvalidMessage(_) => RefusalReason::NotTls,
        rustls::Error::PeerIncompatible(_) => RefusalReason::Incompatible,
        rustls::Error::NoApplicationProtocol => RefusalReason::NoAlpn,
        rustls::Error::AlertReceived(_) => RefusalReason::AlertReceived,
        _ => RefusalReason::TlsError,
    }
}
