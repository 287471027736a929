//! Configuration sources. Each turns its input into [`crate::model::Resource`]s and
//! feeds a [`crate::model::store::ConfigStore`]; the consumers never know which
//! source an object came from. [`runner`] is the one loop that follows a source and
//! publishes the store to a binary.

pub mod dir;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "runner")]
pub mod runner;
pub mod status;

use std::sync::{Arc, Mutex};

use crate::model::store::ConfigStore;
use crate::model::{ConfigError, Resource};

/// The store a source writes and the daemons read.
pub type SharedStore = Arc<Mutex<ConfigStore>>;
/// The consumer's semantic validation (see [`crate::model::store::Validator`]).
pub type SharedValidator = Arc<dyn Fn(&Resource) -> Result<(), ConfigError> + Send + Sync>;
