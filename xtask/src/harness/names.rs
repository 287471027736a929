//! How harness objects are named. Every netns, cgroup, bpffs dir, interface and
//! state dir of a cluster starts with the cluster prefix: the harness [`TAG`] plus a
//! short random id (`mh` + 5 base-36 characters, e.g. `mh3k9zq`). Parallel clusters
//! never collide, and leftovers are found by that pattern alone.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The fixed tag that starts every cluster prefix.
pub const TAG: &str = "mh";
/// Length of the random id after the tag.
pub const ID_LEN: usize = 5;
/// Length of a whole prefix (`TAG` + id); keeps interface names within 15 bytes.
pub const PREFIX_LEN: usize = TAG.len() + ID_LEN;
/// The cgroup under the cgroup2 root that holds every cluster's cgroups.
pub const CGROUP_ROOT: &str = "mesh-harness";
/// Directory (under the temp dir) holding every cluster's state dir.
pub const STATE_ROOT: &str = "mesh-harness";

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A fresh random prefix such as `mh3k9zq`.
pub fn new_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let mut n = h.finish();
    let mut id = String::from(TAG);
    for _ in 0..ID_LEN {
        id.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    id
}

/// True when `s` is exactly a cluster prefix (`mh` + 5 of `[0-9a-z]`).
pub fn is_prefix(s: &str) -> bool {
    s.len() == PREFIX_LEN
        && s.starts_with(TAG)
        && s[TAG.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The cluster prefix a harness object name starts with, if it is one of ours.
/// Netns names continue with `-`, interface names with one letter and digits.
pub fn prefix_of(name: &str) -> Option<&str> {
    let prefix = name.get(..PREFIX_LEN)?;
    let rest = &name[PREFIX_LEN..];
    let ours = rest.starts_with('-') || is_iface_suffix(rest);
    (is_prefix(prefix) && ours).then_some(prefix)
}

fn is_iface_suffix(rest: &str) -> bool {
    let mut chars = rest.chars();
    match chars.next() {
        Some('b' | 'n' | 'v' | 'e') => {
            let digits = chars.as_str();
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
        Some('x') => chars.as_str() == "br",
        _ => false,
    }
}

/// Names of one cluster's objects.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub prefix: String,
}

impl Names {
    pub fn fabric_netns(&self) -> String {
        format!("{}-fabric", self.prefix)
    }
    pub fn node_netns(&self, node: &str) -> String {
        format!("{}-node-{node}", self.prefix)
    }
    /// Namespaces are DNS labels (no dots), so the first dot separates them from the pod name.
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        format!("{}-pod-{namespace}.{pod}", self.prefix)
    }
    pub fn node_cgroup(&self, node: &str) -> String {
        format!("node-{node}")
    }
    pub fn pod_cgroup(&self, namespace: &str, pod: &str) -> String {
        format!("pod-{namespace}.{pod}")
    }
    /// The fabric bridge.
    pub fn bridge(&self) -> String {
        format!("{}xbr", self.prefix)
    }
    /// Fabric-side end of node `i`'s uplink (in the fabric netns).
    pub fn fabric_port(&self, node_index: u8) -> String {
        format!("{}b{node_index}", self.prefix)
    }
    /// Node-side end of node `i`'s uplink (in the node netns).
    pub fn node_uplink(&self, node_index: u8) -> String {
        format!("{}n{node_index}", self.prefix)
    }
    /// Node-side end of pod `k`'s veth (in the node netns).
    pub fn pod_host_veth(&self, pod_index: u32) -> String {
        format!("{}v{pod_index}", self.prefix)
    }
    /// Pod-side end of pod `k`'s veth (in the pod netns).
    pub fn pod_veth(&self, pod_index: u32) -> String {
        format!("{}e{pod_index}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_recognised_and_interfaces_fit_ifnamsiz() {
        let p = new_prefix();
        assert!(is_prefix(&p), "{p}");
        assert_ne!(new_prefix(), new_prefix());
        let names = Names { prefix: p.clone() };
        for name in [
            names.pod_veth(99_999),
            names.pod_host_veth(99_999),
            names.bridge(),
            names.node_uplink(254),
        ] {
            assert!(name.len() <= 15, "{name}");
            assert_eq!(prefix_of(&name), Some(p.as_str()), "{name}");
        }
        assert_eq!(prefix_of(&names.pod_netns("ns", "a.b")), Some(p.as_str()));
        assert_eq!(prefix_of("mhabcdex"), None);
        assert_eq!(prefix_of("mhABCDE-x"), None);
        assert_eq!(prefix_of("eth0"), None);
    }
}
