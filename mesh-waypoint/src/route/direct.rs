//! `directResponse`: answer without any upstream.

use bytes::Bytes;
use http::StatusCode;

#[derive(Clone, Debug)]
pub struct DirectResponse {
    pub status: StatusCode,
    pub body: Bytes,
}
