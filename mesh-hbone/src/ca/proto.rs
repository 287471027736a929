//! Istio's `security/proto/istioca.proto` messages, written with prost derives so the
//! build needs no `protoc`. Field numbers are the wire contract with istiod and ztunnel.

use std::collections::BTreeMap;

/// `istio.v1.auth.IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 certificate request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; the CA may shorten it.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Opaque metadata; ztunnel puts the identity it asks for on behalf of a pod under
    /// [`IMPERSONATED_IDENTITY`].
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `istio.v1.auth.IstioCertificateResponse`: PEM certificates, leaf first, root last.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
pub const CREATE_CERTIFICATE_PATH: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";
/// Metadata key of the identity a node agent requests for one of its pods.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";
/// gRPC header naming the caller's cluster (istiod and ztunnel send `ClusterID`).
pub const CLUSTER_ID_HEADER: &str = "clusterid";

/// Builds the `metadata` Struct carrying an impersonated identity.
pub fn impersonation(identity: &str) -> prost_types::Struct {
    let value = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(identity.to_owned())),
    };
    prost_types::Struct {
        fields: BTreeMap::from([(IMPERSONATED_IDENTITY.to_owned(), value)]),
    }
}

/// The request's metadata carries the impersonated identity as something other than a string.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("metadata field {IMPERSONATED_IDENTITY} must be a string holding a SPIFFE id")]
pub struct NotAString;

/// The impersonated identity in a request's metadata, if any.
pub fn impersonated(req: &IstioCertificateRequest) -> Result<Option<&str>, NotAString> {
    let Some(field) = req.metadata.as_ref().and_then(|m| m.fields.get(IMPERSONATED_IDENTITY)) else {
        return Ok(None);
    };
    match &field.kind {
        Some(prost_types::value::Kind::StringValue(s)) => Ok(Some(s)),
        _ => Err(NotAString),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn request_wire_format_matches_istio_field_numbers() {
        let req = IstioCertificateRequest {
            csr: "x".into(),
            validity_duration: 60,
            metadata: Some(impersonation("spiffe://td/ns/a/sa/b")),
        };
        let bytes = req.encode_to_vec();
        // field 1 (string) = 0x0a, field 3 (varint) = 0x18, field 4 (message) = 0x22
        assert_eq!(&bytes[..3], &[0x0a, 1, b'x']);
        assert_eq!(&bytes[3..5], &[0x18, 60]);
        assert_eq!(bytes[5], 0x22);
        let back = IstioCertificateRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(impersonated(&back), Ok(Some("spiffe://td/ns/a/sa/b")));
    }
}
