//! HTTPS termination (`tls.mode: SIMPLE`): one rustls config per port, choosing
//! the certificate by SNI among the port's servers like Envoy's filter chains do.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::plan::ServerPlan;
use super::secret::PROVIDER;
use crate::config::hosts::HostPattern;

#[derive(Debug)]
struct SniResolver {
    entries: Vec<(Vec<HostPattern>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    /// The most specific server host matching SNI; without SNI the port's first
    /// server; an SNI no server host matches gets no certificate (handshake refused).
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name().map(str::to_ascii_lowercase) else {
            return self.entries.first().map(|e| e.1.clone());
        };
        self.entries
            .iter()
            .filter_map(|(hosts, key)| {
                hosts
                    .iter()
                    .filter(|h| h.matches(&sni))
                    .map(HostPattern::specificity)
                    .max()
                    .map(|s| (s, key))
            })
            .max_by_key(|(s, _)| *s)
            .map(|(_, key)| key.clone())
    }
}

pub fn server_config(servers: &[ServerPlan]) -> Arc<ServerConfig> {
    let entries = servers
        .iter()
        .filter_map(|s| {
            Some((
                s.hosts.iter().map(|h| h.pattern.clone()).collect(),
                s.credential.as_ref()?.key.clone(),
            ))
        })
        .collect();
    let resolver = Arc::new(SniResolver { entries });
    let builder = ServerConfig::builder_with_provider(PROVIDER.clone());
    // The provider's defaults (TLS 1.2 and 1.3) are always consistent; the fallback only
    // keeps this function total.
    let mut cfg = match builder.with_safe_default_protocol_versions() {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(resolver),
        Err(e) => {
            tracing::error!("TLS provider has no usable protocol versions: {e}");
            ServerConfig::builder()
                .with_no_client_auth()
                .with_cert_resolver(resolver)
        }
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}
