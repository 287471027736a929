//! L4 policy of the node daemon: PeerAuthentication (STRICT / PERMISSIVE) and
//! AuthorizationPolicy (enforced on the destination side).

pub mod authz;
pub mod peer_authn;

pub use peer_authn::{Mode, PeerAuthn};
