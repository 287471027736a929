//! Every map of the object, declared once. Sizes here are defaults: the daemon
//! overrides them at load time from its flags. Key/value types come from
//! `mesh_common::abi`; eviction is stated per map.

use aya_ebpf::macros::map;
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, SockHash};
use mesh_common::abi::{
    CONFIG_STRICT_ON_MISS, Counter, DEFAULT_CONN_ENTRIES, DEFAULT_EXCLUDE_ENTRIES, DEFAULT_POD_ENTRIES, DaemonConnect,
    GlobalConfig, LPM_KEY_BITS, OrigDst, PodConfig, TupleKey,
};

/// Deleted at close by sockops; LRU as a backstop if a close is ever missed.
#[map]
pub static ORIG_BY_COOKIE: LruHashMap<u64, OrigDst> = LruHashMap::with_max_entries(DEFAULT_CONN_ENTRIES, 0);
/// Deleted at close by sockops; LRU as a backstop.
#[map]
pub static ORIG_BY_TUPLE: LruHashMap<TupleKey, OrigDst> = LruHashMap::with_max_entries(DEFAULT_CONN_ENTRIES, 0);
/// Written and deleted by the daemon at enrollment / un-enrollment / restart clean-up.
#[map]
pub static POD_SELF: HashMap<u64, PodConfig> = HashMap::with_max_entries(DEFAULT_POD_ENTRIES, 0);
/// A socket leaves the SockHash by itself when it closes.
#[map]
pub static INBOUND_LISTENERS: SockHash<u32> = SockHash::with_max_entries(DEFAULT_POD_ENTRIES, 0);
/// Filled from flags at start-up.
#[map]
pub static EXCLUDED_PORTS: HashMap<u32, u8> = HashMap::with_max_entries(DEFAULT_EXCLUDE_ENTRIES, 0);
/// Filled from flags at start-up (LPM tries must be created without preallocation).
#[map]
pub static EXCLUDED_CIDRS: LpmTrie<u32, u8> = LpmTrie::with_max_entries(DEFAULT_EXCLUDE_ENTRIES, 1);
/// Written by the daemon for each connection it opens from a client's address, deleted
/// when that connection closes (and cleared at start-up after a crash).
#[map]
pub static DAEMON_CONNECTS: HashMap<DaemonConnect, u8> = HashMap::with_max_entries(DEFAULT_CONN_ENTRIES, 0);
#[map]
pub static CONFIG: Array<GlobalConfig> = Array::with_max_entries(1, 0);
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn pod_config(netns_cookie: u64) -> Option<PodConfig> {
    unsafe { POD_SELF.get(&netns_cookie) }.copied()
}

#[inline(always)]
pub fn is_excluded_port(port: u16) -> bool {
    unsafe { EXCLUDED_PORTS.get(&u32::from(port)) }.is_some()
}

#[inline(always)]
pub fn is_excluded_cidr(ip_be: u32) -> bool {
    EXCLUDED_CIDRS.get(&Key::new(LPM_KEY_BITS, ip_be)).is_some()
}

#[inline(always)]
pub fn strict_on_miss() -> bool {
    CONFIG.get(0).is_some_and(|c| c.flags & CONFIG_STRICT_ON_MISS != 0)
}

/// The daemon's own connect to the pod's application from a client's address.
#[inline(always)]
pub fn is_daemon_connect(key: &DaemonConnect) -> bool {
    unsafe { DAEMON_CONNECTS.get(key) }.is_some()
}
