//! The request path: accept (HTTP/1.1 and h2), route, forward, answer.

pub mod access_log;
pub mod admission;
pub mod attempt;
pub mod handler;
pub mod local_reply;
pub mod server;
pub mod tcp;
mod telemetry;
pub mod upstream_request;

pub use handler::Proxy;
