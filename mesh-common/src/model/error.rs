//! Configuration errors that name the object and the field, e.g.
//! `VirtualService default/reviews: spec.http[1].match[0].uri.regex: unclosed group`.

use super::ObjectRef;

/// A problem with one field of one object, before the object is known
/// (validators return these; the caller attaches the [`ObjectRef`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path with indexes, e.g. `spec.http[1].match[0].uri.regex`.
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a configuration document or object was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: document {index}: malformed YAML: {message}")]
    Yaml {
        source_name: String,
        index: usize,
        message: String,
    },
    #[error(
        "{source_name}: document {index}: missing `{field}`; every object needs apiVersion, kind and metadata.name"
    )]
    MissingField {
        source_name: String,
        index: usize,
        field: &'static str,
    },
    #[error("{object}: {error}")]
    Invalid { object: ObjectRef, error: FieldError },
    #[error("{object}: unsupported apiVersion `{api_version}` for this kind")]
    UnsupportedVersion { object: ObjectRef, api_version: String },
    #[error("cannot read configuration {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl ConfigError {
    pub fn invalid(object: &ObjectRef, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            object: object.clone(),
            error: FieldError::new(path, message),
        }
    }
}
