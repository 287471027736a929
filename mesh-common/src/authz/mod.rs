//! Authorization (Istio's AuthorizationPolicy), shared by the node daemon (L4, per
//! connection) and the waypoint / gateway (L7, per request).
//!
//! - [`Policy`]: one compiled policy (validated when the object is decoded).
//! - [`PolicySet`]: a snapshot's policies with Istio's scope rules: which apply to a
//!   workload ([`PolicySet::for_workload`], the node) and which are attached to a
//!   waypoint, gateway or Service ([`PolicySet::for_target`], the L7 proxies).
//! - [`evaluate`]: CUSTOM → DENY → ALLOW over the applicable policies, for a
//!   [`Request`] whose HTTP part is `None` at L4.
//!
//! Two rules keep a policy the mesh cannot fully enforce from ever opening access:
//! - **CUSTOM** (external authorization) is not supported. Such a policy is kept in the
//!   set, reported by [`PolicySet::unsupported`], and every target it selects is denied
//!   everything (fail closed) until it is changed or deleted.
//! - **L7 fields at L4** (hosts, methods, paths, requestPrincipals, remoteIpBlocks,
//!   `when` keys other than source.ip / source.namespace / source.principal /
//!   destination.ip / destination.port) resolve like Istio's ztunnel: an ALLOW rule that
//!   uses one never matches, a DENY rule treats it as matched. Both are reported
//!   ([`Policy::l7_fields`], [`Evaluation::fail_safe`]).

mod evaluate;
pub mod matcher;
mod policy;
mod request;

pub use evaluate::{Decision, Denial, DenyReason, Evaluation, PolicySet, evaluate};
pub use policy::{Attr, Check, Policy, Rule, Target, TargetKind, Values};
pub use request::{AuthAttributes, HttpAttributes, Request, principal_namespace};

#[cfg(test)]
mod tests;
