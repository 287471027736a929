//! One VirtualService, compiled: which hosts it serves and its ordered routes.

use mesh_common::model::ObjectRef;

use super::{HttpRoute, RequestInfo, Selected};
use crate::config::hosts::HostPattern;

#[derive(Clone, Debug)]
pub struct RouteTable {
    pub object: ObjectRef,
    pub namespace: String,
    pub hosts: Vec<HostPattern>,
    /// Normalized gateway names; `mesh` when the VirtualService names none.
    pub gateways: Vec<String>,
    pub export_to: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tcp: Vec<super::split::TcpRoute>,
}

impl RouteTable {
    /// First route whose match blocks accept the request; a route without match
    /// blocks accepts everything on the VirtualService's gateways.
    pub fn select<'a>(&'a self, req: &RequestInfo<'_>) -> Option<Selected<'a>> {
        self.http.iter().find_map(|route| {
            if route.matches.is_empty() {
                let on_gateway = self.gateways.iter().any(|g| req.gateways.contains(g));
                return on_gateway.then_some(Selected {
                    object: &self.object,
                    route,
                    matched: None,
                });
            }
            let m = route.matches.iter().find(|m| m.matches(req, &self.gateways))?;
            Some(Selected {
                object: &self.object,
                route,
                matched: Some(m),
            })
        })
    }

    pub fn serves_any(&self, gateways: &[String]) -> bool {
        let bound = |gs: &[String]| gs.iter().any(|g| gateways.contains(g));
        bound(&self.gateways) || self.http.iter().flat_map(|r| &r.matches).any(|m| bound(&m.gateways))
    }

    /// Whether this waypoint (serving `namespace`) may use the object (`exportTo`).
    pub fn visible_from(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || e == namespace || (e == "." && self.namespace == namespace))
    }
}
