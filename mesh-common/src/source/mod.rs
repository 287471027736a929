//! Configuration sources. Each turns its input into [`crate::model::Resource`]s and
//! feeds a [`crate::model::store::ConfigStore`]; the consumers never know which
//! source an object came from.

pub mod dir;
#[cfg(feature = "kube")]
pub mod kube;
