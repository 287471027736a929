//! Route layer: the VirtualService part of the request path. A request is matched
//! against the host's routes (first match wins), then the chosen route decides:
//! redirect, direct response, or forward to weighted destinations with its
//! rewrite, header, mirror, CORS, fault, retry and timeout settings.

pub mod cors;
pub mod direct;
pub mod fault;
pub mod headers;
pub mod l4_match;
pub mod matching;
pub mod mirror;
pub mod redirect;
pub mod retry;
pub mod rewrite;
pub mod split;
pub mod string_match;
pub mod table;

use std::time::Duration;

use mesh_common::model::ObjectRef;

pub use matching::{RequestInfo, RequestMatch, Source};
pub use table::RouteTable;

/// Where traffic goes: a Service (FQDN), optionally a DestinationRule subset and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct DestinationRef {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct WeightedDestination {
    pub destination: DestinationRef,
    pub weight: u32,
    pub headers: headers::HeaderRules,
}

#[derive(Clone, Debug)]
pub enum Action {
    Forward(split::Split),
    Redirect(redirect::Redirect),
    Direct(direct::DirectResponse),
}

/// One compiled `http` entry of a VirtualService.
#[derive(Clone, Debug)]
pub struct HttpRoute {
    /// `<route name>` or `<object>/http[<index>]`, for logs and headers.
    pub name: String,
    pub matches: Vec<RequestMatch>,
    pub action: Action,
    pub rewrite: Option<rewrite::Rewrite>,
    /// Bounds the whole request, injected delays and retries included.
    pub timeout: Option<Duration>,
    pub retries: retry::RetryPolicy,
    pub fault: Option<fault::Fault>,
    pub mirrors: Vec<mirror::Mirror>,
    pub cors: Option<cors::Cors>,
    pub headers: headers::HeaderRules,
}

/// A route chosen for a request, with which match block selected it (rewrite of a
/// prefix match replaces only the matched prefix).
pub struct Selected<'a> {
    pub object: &'a ObjectRef,
    pub route: &'a HttpRoute,
    pub matched: Option<&'a RequestMatch>,
}
