//! `networking.istio.io` (v1, v1beta1, v1alpha3 share one schema): VirtualService,
//! DestinationRule, Gateway. These types only decode; consumers validate them into
//! their own internal types (the waypoint compiles regexes and durations).
//!
//! Every spec struct denies unknown fields, so a typo (`retryon:`) is an error with
//! its path rather than a silently ignored setting.

pub mod common;
pub mod destination_rule;
pub mod gateway;
pub mod virtual_service;

pub use common::{Destination, HeaderOperations, Headers, Percent, PortSelector, StringMatch};
pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use virtual_service::VirtualService;

/// The API group of every kind in this module.
pub const GROUP: &str = "networking.istio.io";
/// Versions users write; they share one schema.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
