//! Kubernetes Gateway API (`gateway.networking.k8s.io`): `HTTPRoute`, decoded field for
//! field like Istio's kinds. The waypoint compiles HTTPRoutes attached to a Service
//! (GAMMA, mesh mode) into its VirtualService route tables; see docs/gateway-api.md.
//!
//! Every spec struct denies unknown fields, so a typo is an error with its path.

pub mod http_route;

pub use http_route::HttpRoute;

/// The API group of every kind in this module.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// Versions whose HTTPRoute schema this module reads (v1beta1 is the same schema).
pub const VERSIONS: [&str; 2] = ["v1", "v1beta1"];

/// Gateway API kinds the mesh reads but does not implement: each object of them is
/// reported as not supported (with why), never silently dropped.
pub const UNSUPPORTED_KINDS: &[(&str, &str)] = &[
    (
        "Gateway",
        "Gateway API Gateways are not served: the waypoint is named by --waypoint-name and Istio Gateways drive the ingress gateway",
    ),
    ("GatewayClass", "GatewayClasses are not read"),
    (
        "GRPCRoute",
        "GRPCRoute is not implemented; route gRPC with an HTTPRoute or a VirtualService",
    ),
    (
        "TCPRoute",
        "TCPRoute is not implemented; use a VirtualService `tcp` route",
    ),
    ("TLSRoute", "TLSRoute is not implemented"),
    ("UDPRoute", "UDPRoute is not implemented"),
    (
        "ReferenceGrant",
        "ReferenceGrant is not implemented: cross-namespace backendRefs are refused",
    ),
    ("BackendTLSPolicy", "BackendTLSPolicy is not implemented"),
];
