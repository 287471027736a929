//! The routing half of client-IP preservation, applied inside one pod's netns
//! (docs/capture.md §5). The application's side of a connection the daemon opened from
//! a client's address inherits the mark of its SYN (`net.ipv4.tcp_fwmark_accept`); a
//! policy rule sends packets with that mark to a table whose only route delivers
//! everything locally, so the replies reach the daemon's transparent socket instead of
//! leaving the pod towards the real client. No iptables rule is involved.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

const FWMARK_ACCEPT: &str = "/proc/sys/net/ipv4/tcp_fwmark_accept";
/// The rule's priority: before `main` (32766). Explicit, because the kernel only sees a
/// second identical rule as existing (EEXIST) when the priority is given.
pub const RULE_PRIORITY: u32 = 15006;

/// The mark the daemon's connections carry and the table their replies are routed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routing {
    pub mark: u32,
    pub table: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot set {FWMARK_ACCEPT} to 1 in the pod's netns: {0}")]
    Sysctl(io::Error),
    #[error("the pod's netns has no loopback device: {0}")]
    NoLoopback(io::Error),
    #[error("netlink in the pod's netns: cannot {what}: {source}")]
    Netlink { what: &'static str, source: io::Error },
}

impl Routing {
    /// Sets the sysctl, the local route and the rule. Runs on the pod's netns thread;
    /// idempotent (a rule or route already there counts as done), so a restarted or
    /// upgraded daemon re-applies it harmlessly.
    pub fn install(&self) -> Result<(), RoutingError> {
        std::fs::write(FWMARK_ACCEPT, "1").map_err(RoutingError::Sysctl)?;
        let nl = Netlink::open()?;
        let route = RouteNetlinkMessage::NewRoute(self.local_route()?);
        nl.request(
            route,
            NLM_F_CREATE | NLM_F_EXCL,
            "add the local default route of the client-IP table",
        )?;
        let rule = RouteNetlinkMessage::NewRule(self.rule());
        nl.request(
            rule,
            NLM_F_CREATE | NLM_F_EXCL,
            "add the fwmark rule of the client-IP table",
        )
    }

    /// Removes the rule and the route (a pod leaving the mesh); already gone is fine.
    /// `tcp_fwmark_accept` stays 1: it only acts on marked SYNs, which nothing else sends.
    pub fn remove(&self) -> Result<(), RoutingError> {
        let nl = Netlink::open()?;
        nl.request(RouteNetlinkMessage::DelRule(self.rule()), 0, "delete the fwmark rule")?;
        let route = RouteNetlinkMessage::DelRoute(self.local_route()?);
        nl.request(route, 0, "delete the local default route of the client-IP table")
    }

    /// `ip rule add priority 15006 fwmark <mark> lookup <table>`
    fn rule(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.action = RuleAction::ToTable;
        m.attributes = vec![
            RuleAttribute::Priority(RULE_PRIORITY),
            RuleAttribute::FwMark(self.mark),
            RuleAttribute::FwMask(u32::MAX),
            RuleAttribute::Table(self.table),
        ];
        m
    }

    /// `ip route add local 0.0.0.0/0 dev lo table <table>`
    fn local_route(&self) -> Result<RouteMessage, RoutingError> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.header.protocol = RouteProtocol::Static;
        m.header.scope = RouteScope::Host;
        m.header.kind = RouteType::Local;
        m.attributes = vec![
            RouteAttribute::Oif(loopback_index()?),
            RouteAttribute::Table(self.table),
        ];
        Ok(m)
    }
}

fn loopback_index() -> Result<u32, RoutingError> {
    // SAFETY: a NUL-terminated literal; the call only reads it.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(RoutingError::NoLoopback(io::Error::last_os_error()));
    }
    Ok(index)
}

/// A NETLINK_ROUTE socket of the calling thread's netns, used for acknowledged requests.
struct Netlink(Socket);

impl Netlink {
    fn open() -> Result<Self, RoutingError> {
        let err = |source| RoutingError::Netlink {
            what: "open a NETLINK_ROUTE socket",
            source,
        };
        let mut s = Socket::new(NETLINK_ROUTE).map_err(err)?;
        s.bind_auto().map_err(err)?;
        s.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        Ok(Self(s))
    }

    /// Sends one request and waits for the kernel's acknowledgement. For a create,
    /// EEXIST is success; for a delete, ENOENT/ESRCH are.
    fn request(&self, msg: RouteNetlinkMessage, flags: u16, what: &'static str) -> Result<(), RoutingError> {
        let err = |source| RoutingError::Netlink { what, source };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = 1;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.0.send(&buf, 0).map_err(err)?;
        let (reply, _) = self.0.recv_from_full().map_err(err)?;
        let ack = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
            .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
        match ack.payload {
            NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
            NetlinkPayload::Error(e) => {
                let code = -e.raw_code();
                let fine = if flags & NLM_F_CREATE != 0 {
                    code == libc::EEXIST
                } else {
                    code == libc::ENOENT || code == libc::ESRCH
                };
                if fine { Ok(()) } else { Err(err(e.to_io())) }
            }
            other => Err(err(io::Error::other(format!("unexpected reply {other:?}")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::PodNetns;

    /// A throwaway netns for the test, removed by `ip netns del` on drop.
    struct TestNetns(String);

    impl TestNetns {
        fn new(name: &str) -> Self {
            let _ = std::process::Command::new("ip").args(["netns", "del", name]).status();
            let ok = std::process::Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip netns add {name} failed (needs root)");
            Self(name.to_owned())
        }

        fn ip(&self, args: &[&str]) -> String {
            let out = std::process::Command::new("ip")
                .args(["-n", &self.0])
                .args(args)
                .output()
                .expect("run ip");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }

    #[tokio::test]
    async fn install_is_idempotent_and_remove_clears_the_rule_and_route() {
        let ns = TestNetns::new("mesh-ut-clientip");
        let pod = PodNetns::open(&std::path::Path::new("/run/netns").join(&ns.0)).unwrap();
        let r = Routing {
            mark: 0x15006,
            table: 15006,
        };
        for _ in 0..2 {
            pod.run_inside(move || r.install()).await.unwrap().unwrap();
        }
        let rules = ns.ip(&["rule", "show"]);
        assert_eq!(rules.matches("fwmark 0x15006 lookup 15006").count(), 1, "{rules}");
        let routes = ns.ip(&["route", "show", "table", "15006"]);
        assert!(routes.contains("local default dev lo"), "{routes}");
        let sysctl = pod
            .run_inside(|| std::fs::read_to_string(FWMARK_ACCEPT))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sysctl.trim(), "1");
        for _ in 0..2 {
            pod.run_inside(move || r.remove()).await.unwrap().unwrap();
        }
        assert!(!ns.ip(&["rule", "show"]).contains("0x15006"));
        assert!(ns.ip(&["route", "show", "table", "15006"]).trim().is_empty());
    }
}
