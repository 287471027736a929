//! A fresh key pair and a PKCS#10 request for one SPIFFE identity. The key stays in
//! the calling process; only the CSR is sent.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

use crate::SpiffeId;

/// ECDSA P-256, what Istio and ztunnel use for workload keys.
pub static KEY_ALG: &rcgen::SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;

pub struct Csr {
    pub key: KeyPair,
    pub pem: String,
}

pub fn generate(identity: &SpiffeId) -> Result<Csr, rcgen::Error> {
    let key = KeyPair::generate_for(KEY_ALG)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    let pem = params.serialize_request(&key)?.pem()?;
    Ok(Csr { key, pem })
}
