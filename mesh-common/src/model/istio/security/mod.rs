//! `security.istio.io` (v1, v1beta1 share one schema): PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication.

pub mod authorization_policy;
pub mod peer_authentication;
pub mod request_authentication;
pub mod target_ref;

pub use authorization_policy::AuthorizationPolicy;
pub use peer_authentication::{MtlsMode, PeerAuthentication, PeerAuthnPolicy, PeerAuthnScope};
pub use request_authentication::{RequestAuthentication, RequestAuthnPolicy};

/// The API group of every kind in this module.
pub const GROUP: &str = "security.istio.io";
/// Versions users write; they share one schema.
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];
/// A policy without selector in this namespace applies to the whole mesh (Istio's default root namespace).
pub const ROOT_NAMESPACE: &str = "istio-system";
