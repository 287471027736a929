//! The mesh model: what both configuration sources (local YAML directory, Kubernetes)
//! produce and what the node daemon and the waypoint consume.
//!
//! Objects arrive as Kubernetes-shaped YAML ([`document`]), mirror the upstream APIs
//! field for field ([`k8s`]), and are validated once, at the edge, with errors that name
//! kind/namespace/name and the field path ([`error`]).

pub mod document;
pub mod enrollment;
pub mod error;
pub mod gateway_api;
pub mod istio;
pub mod k8s;
pub mod object;
pub mod store;

pub use document::{Resource, parse_documents};
pub use error::{ConfigError, FieldError};
pub use object::{ObjectMeta, ObjectRef};
