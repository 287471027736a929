//! SPIFFE ids from peer certificates: the DER a TLS peer presents
//! (mesh_hbone::tls::spiffe_id, webpki parsing its URI SANs) and the id text itself.
//! Input: a DER certificate; the same bytes are also tried as an id string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_hbone::SpiffeId;
use rustls_pki_types::CertificateDer;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = mesh_hbone::tls::spiffe_id(&CertificateDer::from(data)) {
        check(&id);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = text.parse::<SpiffeId>()
    {
        assert_eq!(id.to_string(), text, "an accepted id prints as it was written");
        check(&id);
    }
});

/// Every part is one non-empty path segment, so the principal authorization compares
/// names exactly what the certificate said.
fn check(id: &SpiffeId) {
    for part in [&id.trust_domain, &id.namespace, &id.service_account] {
        assert!(!part.is_empty() && !part.contains('/'), "{id:?}");
    }
    assert_eq!(id.to_string().parse::<SpiffeId>().as_ref(), Ok(id));
    assert_eq!(format!("spiffe://{}", id.principal()), id.to_string());
}
