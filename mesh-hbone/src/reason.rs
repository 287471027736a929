//! Why a connection or HBONE stream was refused: one closed set of reasons for the
//! log field and the `reason` label of `mesh_connections_refused_total`, on both ends
//! of the tunnel (client, server) and for the node daemon's own refusals.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    // TLS and HTTP/2 set-up (either side).
    HandshakeIo,
    HandshakeTimeout,
    CertExpired,
    CertUnknownIssuer,
    CertInvalid,
    NoClientCert,
    NotTls,
    Incompatible,
    NoAlpn,
    AlertReceived,
    TlsError,
    NotH2,
    /// The peer's IP already had `--hbone-max-handshakes-per-peer` connections in set-up.
    PeerHandshakeLimit,
    // One CONNECT stream (server side).
    BadRequest,
    NotLocalWorkload,
    MeshPort,
    UnknownDestination,
    UpstreamRefused,
    /// An AuthorizationPolicy denied it.
    Authorization,
    // The client side.
    ConnectFailed,
    H2Error,
    UpstreamUnavailable,
    ConnectRefused,
    Config,
    // The node daemon's own decisions.
    StrictMtls,
    NoCertificate,
    ServicePortUnknown,
    NoHealthyUpstream,
    WaypointUnknown,
    WaypointUnavailable,
}

impl RefusalReason {
    /// The label value (stable: dashboards and tests key on it).
    pub fn as_str(self) -> &'static str {
        use RefusalReason::*;
        match self {
            HandshakeIo => "handshake_io",
            HandshakeTimeout => "handshake_timeout",
            CertExpired => "cert_expired",
            CertUnknownIssuer => "cert_unknown_issuer",
            CertInvalid => "cert_invalid",
            NoClientCert => "no_client_cert",
            NotTls => "not_tls",
            Incompatible => "incompatible",
            NoAlpn => "no_alpn",
            AlertReceived => "alert_received",
            TlsError => "tls_error",
            NotH2 => "not_h2",
            PeerHandshakeLimit => "peer_handshake_limit",
            BadRequest => "bad_request",
            NotLocalWorkload => "not_local_workload",
            MeshPort => "mesh_port",
            UnknownDestination => "unknown_destination",
            UpstreamRefused => "upstream_refused",
            Authorization => "authorization",
            ConnectFailed => "connect_failed",
            H2Error => "h2_error",
            UpstreamUnavailable => "upstream_unavailable",
            ConnectRefused => "connect_refused",
            Config => "config",
            StrictMtls => "strict_mtls",
            NoCertificate => "no_certificate",
            ServicePortUnknown => "service_port_unknown",
            NoHealthyUpstream => "no_healthy_upstream",
            WaypointUnknown => "waypoint_unknown",
            WaypointUnavailable => "waypoint_unavailable",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `reason` label of `mesh_connections_refused_total` (node daemon and waypoint).
impl prometheus_client::encoding::EncodeLabelValue for RefusalReason {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}
