//! The client's own IP for the application (docs/capture.md §5): inbound, the daemon
//! connects to a pod's application from the address of the pod that called it, so the
//! application's `getpeername` and access log show the caller, not the pod itself.
//!
//! Three pieces make it work without iptables: the socket is `IP_TRANSPARENT` and marked
//! ([`ClientIp::connect`]); the pod's netns routes replies to that mark back to the daemon
//! ([`routing`]); and the sk_lookup program lets exactly that SYN through to the
//! application instead of steering it to 15006, because the daemon registers its 4-tuple
//! in `DAEMON_CONNECTS` for as long as the connection lasts.

pub mod routing;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap, MapData};
use mesh_common::abi::DaemonConnect;
use tokio::net::TcpStream;

use crate::netns::PodNetns;
pub use routing::{Routing, RoutingError};

/// Shared by every enrolled pod whose netns accepted the routing.
pub struct ClientIp {
    routing: Routing,
    connects: Mutex<HashMap<MapData, DaemonConnect, u8>>,
}

/// Whether a pod's application sees its callers' addresses, as `/config_dump` shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIpState {
    /// `--preserve-client-ip=false`: the application sees the pod's own IP.
    #[default]
    Disabled,
    Preserved,
    /// The pod's netns refused the routing; its application sees the pod's own IP.
    Unavailable(String),
}

impl std::fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIp").field("routing", &self.routing).finish()
    }
}

impl ClientIp {
    pub fn new(routing: Routing, connects: HashMap<MapData, DaemonConnect, u8>) -> Self {
        Self {
            routing,
            connects: Mutex::new(connects),
        }
    }

    /// Installs the routing in a newly enrolled pod's netns.
    pub async fn prepare(&self, netns: &PodNetns) -> Result<(), RoutingError> {
        let routing = self.routing;
        netns
            .run_inside(move || routing.install())
            .await
            .map_err(|source| RoutingError::Netlink {
                what: "reach the pod's socket thread",
                source,
            })?
    }

    /// Removes the routing when a pod leaves the mesh. Waits for it (two netlink
    /// requests), so a pod re-enrolled in the same netns right after cannot lose the
    /// routing its new enrollment installs.
    pub fn forget(&self, netns: &PodNetns) {
        let routing = self.routing;
        let done = netns
            .run_inside_blocking(move || routing.remove())
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = done {
            tracing::debug!(netns = %netns.path().display(), "client-IP routing not removed: {e}");
        }
    }

    /// Whether `client` can stand in as the source of a connection to `pod`: a remote
    /// unicast IPv4 address (the pod calling itself already shows its own address).
    pub fn applies(client: Ipv4Addr, pod: Ipv4Addr) -> bool {
        client != pod
            && !client.is_loopback()
            && !client.is_unspecified()
            && !client.is_multicast()
            && !client.is_broadcast()
    }

    /// Connects to the pod's application at `app` from `client`'s address. The returned
    /// registration must live as long as the connection: until the application's side
    /// exists, segments reach its listener through sk_lookup (a SYN-cookie handshake
    /// completes on the final ACK or first data), and only the registered tuple keeps
    /// them from being steered to 15006. When the tuple cannot be registered (map full)
    /// the connection goes from the pod's own address instead.
    pub async fn connect(
        self: &Arc<Self>,
        netns: &PodNetns,
        client: Ipv4Addr,
        app: SocketAddrV4,
    ) -> io::Result<(TcpStream, Option<Registered>)> {
        let sock = netns.tcp_socket().await?;
        let raw = socket2::SockRef::from(&sock);
        raw.set_ip_transparent_v4(true)?;
        raw.set_mark(self.routing.mark)?;
        sock.bind(SocketAddr::from((client, 0)))?;
        let key = DaemonConnect {
            remote_ip: u32::from(client).to_be(),
            local_ip: u32::from(*app.ip()).to_be(),
            remote_port: sock.local_addr()?.port(),
            local_port: app.port(),
        };
        let Some(registered) = self.register(key) else {
            return Ok((crate::capture::handler::connect_from(netns, app).await?, None));
        };
        let stream = sock.connect(SocketAddr::V4(app)).await?;
        stream.set_nodelay(true)?;
        Ok((stream, Some(registered)))
    }

    fn register(self: &Arc<Self>, key: DaemonConnect) -> Option<Registered> {
        let mut map = self.connects.lock().unwrap_or_else(|p| p.into_inner());
        match map.insert(key, 1, 0) {
            Ok(()) => Some(Registered {
                owner: self.clone(),
                key,
            }),
            Err(e) => {
                tracing::warn!(
                    "DAEMON_CONNECTS is full or unwritable ({e}; --capture-conn-entries sizes it); connecting from the pod's own IP"
                );
                None
            }
        }
    }

    /// Drops registrations a crashed predecessor left (their connections died with it):
    /// a stale tuple would let a later SYN with the same addresses past steering.
    pub fn clear_stale(&self) -> usize {
        let mut map = self.connects.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<DaemonConnect> = map.keys().filter_map(Result::ok).collect();
        keys.iter().filter(|k| map.remove(k).is_ok()).count()
    }
}

/// A connection's 4-tuple in `DAEMON_CONNECTS`; removed when dropped.
pub struct Registered {
    owner: Arc<ClientIp>,
    key: DaemonConnect,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = self.owner.connects.lock().unwrap_or_else(|p| p.into_inner());
        let _ = map.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_remote_unicast_ipv4_clients_are_used_as_source() {
        let pod = Ipv4Addr::new(198, 18, 1, 2);
        assert!(ClientIp::applies(Ipv4Addr::new(198, 18, 2, 2), pod));
        assert!(!ClientIp::applies(pod, pod));
        assert!(!ClientIp::applies(Ipv4Addr::LOCALHOST, pod));
        assert!(!ClientIp::applies(Ipv4Addr::UNSPECIFIED, pod));
        assert!(!ClientIp::applies(Ipv4Addr::BROADCAST, pod));
        assert!(!ClientIp::applies(Ipv4Addr::new(224, 0, 0, 1), pod));
    }
}
