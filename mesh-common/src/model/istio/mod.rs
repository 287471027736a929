//! Istio's custom resources, mirrored field for field.

#[cfg(test)]
mod field_coverage;
pub mod networking;
pub mod security;
pub mod unsupported;
