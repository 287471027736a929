//! The mesh CA: it holds the signing key and signs certificate
//! requests (Istio's `IstioCertificateService`) for callers that prove who they are
//! with a token, node-scoped as Istio's CA does for ztunnel. See [`service`] for the
//! request path, [`auth`] for the rules, [`authority`] for the key and its chain.

pub mod auth;
pub mod authority;
pub mod cli;
#[cfg(feature = "kubernetes")]
pub mod publish;
pub mod service;
