//! Istio's custom resources, mirrored field for field.

pub mod networking;
pub mod security;
pub mod unsupported;
