//! Where the lab's waypoint and ingress gateway send their spans when
//! [`super::LabOptions::otlp_endpoint`] is set: an OTLP/gRPC receiver ([`crate::otlp`])
//! running in the calling process, its listener bound inside the `outside/prometheus`
//! pod (the lab's observability pod), so the proxies reach it at a pod address as they
//! would a collector Service, and nothing is added to the host's netns.

use std::net::SocketAddr;

use super::{LabError, prometheus};
use crate::harness::{Cluster, HarnessError, in_netns};
use crate::otlp::Receiver;

/// OTLP/gRPC's usual port.
pub const PORT: u16 = 4317;

/// Starts the receiver; `endpoint` is what `--otlp-endpoint` should say.
pub fn start(cluster: &Cluster) -> Result<(Receiver, String), LabError> {
    let pod = cluster.pod(prometheus::POD.0, prometheus::POD.1)?;
    let addr = SocketAddr::from((pod.ip, PORT));
    let listener = in_netns(&pod.netns_path, || std::net::TcpListener::bind(addr))?.map_err(|e| {
        HarnessError::sys(
            format!("OTLP receiver: listen on {addr} in {}", pod.netns_path.display()),
            e,
        )
    })?;
    let receiver = Receiver::start(listener).map_err(|e| HarnessError::sys(format!("OTLP receiver on {addr}"), e))?;
    Ok((receiver, format!("http://{addr}")))
}
