//! Istio's custom resources, mirrored field for field.

pub mod networking;
