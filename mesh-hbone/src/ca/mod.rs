//! Istio's certificate API (`istio.v1.auth.IstioCertificateService/CreateCertificate`):
//! the messages ([`proto`]), key + CSR generation ([`csr`]) and the client node daemons,
//! waypoints and gateways use to obtain their certificates ([`client`]). The server is
//! the `mesh-ca` binary. Private keys are generated in the process that uses them and
//! never leave it: only the CSR (public key + requested identity) goes to the CA.

pub mod backoff;
pub mod client;
pub mod csr;
pub mod metrics;
pub mod proto;

pub use backoff::Backoff;
pub use client::{CaClient, CaClientConfig, CaClientError, CaResult};
pub use metrics::CertMetrics;
