//! TLS credentials from a Secret-shaped object: `tls.crt` / `tls.key` (Istio also
//! reads the generic `cert` / `key`), from `stringData` (plain PEM, as users write
//! it) or `data` (base64, as the API server returns it). Everything is checked here:
//! base64, PEM, key type and that the key belongs to the certificate.

use std::sync::{Arc, LazyLock};

use base64::Engine;
use mesh_common::model::FieldError;
use mesh_common::model::k8s::Secret;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const TLS_TYPE: &str = "kubernetes.io/tls";

/// aws-lc-rs, the provider the rest of the workspace (HBONE) uses.
pub static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

/// A value and the field it came from (`stringData.tls.crt`, `data.tls.crt`).
struct Value {
    path: String,
    bytes: Vec<u8>,
}

/// `stringData` wins, like the API server merging it over `data` on write.
fn value(secret: &Secret, key: &str) -> Result<Option<Value>, FieldError> {
    if let Some(v) = secret.string_data.get(key) {
        return Ok(Some(Value {
            path: format!("stringData.{key}"),
            bytes: v.as_bytes().to_vec(),
        }));
    }
    let Some(v) = secret.data.get(key) else { return Ok(None) };
    let path = format!("data.{key}");
    let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact) {
        Ok(bytes) => Ok(Some(Value { path, bytes })),
        Err(e) => Err(FieldError::new(path, format!("not valid base64: {e}"))),
    }
}

fn first_present(secret: &Secret, keys: [&str; 2]) -> Result<Option<Value>, FieldError> {
    for key in keys {
        if let Some(v) = value(secret, key)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// The certificate chain and key of a TLS Secret, ready for rustls.
pub fn tls_credential(secret: &Secret) -> Result<Arc<CertifiedKey>, FieldError> {
    let missing = |k: &str| {
        FieldError::new(
            format!("data.{k}"),
            format!("missing: a TLS Secret needs `tls.crt` and `tls.key` (type {TLS_TYPE})"),
        )
    };
    let cert = first_present(secret, ["tls.crt", "cert"])?.ok_or_else(|| missing("tls.crt"))?;
    let key = first_present(secret, ["tls.key", "key"])?.ok_or_else(|| missing("tls.key"))?;
    let chain = CertificateDer::pem_slice_iter(&cert.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FieldError::new(&cert.path, format!("unparsable PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(FieldError::new(
            &cert.path,
            "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(&key.bytes)
        .map_err(|e| FieldError::new(&key.path, format!("unparsable PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, der, &PROVIDER)
        .map_err(|e| FieldError::new(&key.path, format!("private key unusable with this certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// Edge validation of a `kubernetes.io/tls` Secret: a bad one is rejected alone and
/// keeps its last good version, so a broken certificate update never takes HTTPS down.
pub fn validate(secret: &Secret) -> Result<(), FieldError> {
    for key in secret.data.keys() {
        value(secret, key)?;
    }
    if secret.type_.as_deref() == Some(TLS_TYPE) {
        tls_credential(secret)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["shop.example.com".to_owned()]).expect("rcgen");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn secret(yaml: &str) -> Secret {
        serde_yaml::from_str(yaml).expect("secret yaml")
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn reads_data_and_string_data() {
        let (c, k) = pem_pair();
        let s = secret(&format!(
            "metadata: {{name: x}}\ntype: {TLS_TYPE}\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64(&c),
            b64(&k)
        ));
        assert!(tls_credential(&s).is_ok());
        let mut s2 = Secret::default();
        s2.string_data.insert("tls.crt".into(), c);
        s2.string_data.insert("tls.key".into(), k);
        assert!(validate(&s2).is_ok() && tls_credential(&s2).is_ok());
    }

    #[test]
    fn bad_values_name_the_field() {
        let (c, k) = pem_pair();
        let s = secret(&format!(
            "metadata: {{name: x}}\ntype: {TLS_TYPE}\ndata: {{tls.crt: '!!notbase64', tls.key: {}}}\n",
            b64(&k)
        ));
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .starts_with("data.tls.crt: not valid base64"),
            "{:?}",
            validate(&s)
        );
        let s = secret(&format!(
            "metadata: {{name: x}}\ntype: {TLS_TYPE}\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64("garbage"),
            b64(&k)
        ));
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .starts_with("data.tls.crt: no PEM certificate found")
        );
        let s = secret(&format!(
            "metadata: {{name: x}}\ntype: {TLS_TYPE}\ndata: {{tls.crt: {}}}\n",
            b64(&c)
        ));
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .starts_with("data.tls.key: missing")
        );
        let (_, other_key) = pem_pair();
        let s = secret(&format!(
            "metadata: {{name: x}}\ntype: {TLS_TYPE}\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64(&c),
            b64(&other_key)
        ));
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .starts_with("data.tls.key: private key unusable"),
            "{:?}",
            validate(&s)
        );
        let broken = c.replace("MI", "@@");
        let s = secret(&format!(
            "metadata: {{name: x}}\ntype: {TLS_TYPE}\ndata: {{tls.crt: {}, tls.key: {}}}\n",
            b64(&broken),
            b64(&k)
        ));
        assert!(
            validate(&s)
                .unwrap_err()
                .to_string()
                .starts_with("data.tls.crt: unparsable PEM certificate"),
            "{:?}",
            validate(&s)
        );
    }

    #[test]
    fn generic_secrets_are_only_checked_for_base64() {
        let s = secret("metadata: {name: x}\ndata: {password: aGVsbG8=}\n");
        assert!(validate(&s).is_ok());
    }
}
