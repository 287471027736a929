//! L4 policy of the node daemon: PeerAuthentication (STRICT / PERMISSIVE).

pub mod peer_authn;

pub use peer_authn::{Mode, PeerAuthn};
