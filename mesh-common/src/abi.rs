//! Kernel/user map ABI: every struct that crosses the bpf() boundary, defined once.
//!
//! Layouts are `#[repr(C)]` with explicit padding so both sides agree byte for byte;
//! the `const` assertions below break the build if a field change moves a size.
//! Byte order is documented per field: addresses stay in network order as the kernel
//! hands them over, ports are host order (converted once, on the eBPF side).

/// Capture listener port for outbound TCP inside each enrolled pod (Istio's number).
pub const PORT_OUTBOUND: u16 = 15001;
/// Capture listener port for inbound plaintext TCP.
pub const PORT_INBOUND_PLAINTEXT: u16 = 15006;
/// HBONE (HTTP/2 CONNECT over mutual TLS).
pub const PORT_HBONE: u16 = 15008;
/// Admin endpoint (`/config_dump`), on loopback (node daemon and waypoint).
pub const PORT_ADMIN: u16 = 15000;
/// Prometheus metrics (`/metrics`).
pub const PORT_METRICS: u16 = 15020;
/// Readiness (`/healthz/ready`).
pub const PORT_READINESS: u16 = 15021;

/// An original destination as the application asked for it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrigDst {
    /// IPv4 address, network byte order.
    pub ip: u32,
    /// Port, host byte order.
    pub port: u16,
    pub _pad: u16,
}

/// Key of a captured connection as the daemon sees it after `accept()`:
/// the client's netns cookie plus the client's (local) address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TupleKey {
    pub netns_cookie: u64,
    /// IPv4 address, network byte order.
    pub ip: u32,
    /// Port, host byte order.
    pub port: u16,
    pub _pad: u16,
}

/// A connection the daemon opens to a pod's application from the client's address
/// (`IP_TRANSPARENT`): sk_lookup must let its SYN reach the application instead of
/// steering it to 15006 (docs/capture.md §5). Present while that connection lasts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DaemonConnect {
    /// The client's IPv4 address the daemon bound, network byte order.
    pub remote_ip: u32,
    /// The pod's IPv4 address, network byte order.
    pub local_ip: u32,
    /// The daemon socket's port, host byte order.
    pub remote_port: u16,
    /// The application's port, host byte order.
    pub local_port: u16,
}

/// Per-pod capture configuration, keyed by the pod's netns cookie (`SO_NETNS_COOKIE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodConfig {
    /// The pod's own IPv4 address, network byte order: connects to it are not captured.
    pub ip: u32,
    /// `POD_*` flags.
    pub flags: u32,
}

/// Node-wide switches (one entry at index 0 of [`map::CONFIG`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// `CONFIG_*` flags.
    pub flags: u32,
    pub _pad: u32,
}

/// Inbound: when the pod's 15006 listener is missing from the SockHash (daemon down),
/// drop the connection attempt instead of letting it reach the app unmeshed.
pub const CONFIG_STRICT_ON_MISS: u32 = 1;

/// Key of the excluded-CIDR LPM trie: prefix length then the address in network order
/// (the layout of `struct bpf_lpm_trie_key` with 4 data bytes).
pub const LPM_KEY_BITS: u32 = 32;

/// Map names as they appear in the object (and as pin file names under `<bpffs>/maps/`).
pub mod map {
    /// socket cookie -> [`super::OrigDst`], LRU; entries deleted when the socket closes.
    pub const ORIG_BY_COOKIE: &str = "ORIG_BY_COOKIE";
    /// [`super::TupleKey`] -> [`super::OrigDst`], LRU; entries deleted when the socket closes.
    pub const ORIG_BY_TUPLE: &str = "ORIG_BY_TUPLE";
    /// netns cookie (u64) -> [`super::PodConfig`]; written by the daemon at enrollment.
    pub const POD_SELF: &str = "POD_SELF";
    /// pod IP (u32, network order) -> the pod's 15006 listener socket.
    pub const INBOUND_LISTENERS: &str = "INBOUND_LISTENERS";
    /// port (u32, host order) -> 1: destination/local ports never captured or steered.
    pub const EXCLUDED_PORTS: &str = "EXCLUDED_PORTS";
    /// LPM trie of IPv4 CIDRs never captured (outbound) or steered (inbound remote).
    pub const EXCLUDED_CIDRS: &str = "EXCLUDED_CIDRS";
    /// Array\[1\] of [`super::GlobalConfig`].
    pub const CONFIG: &str = "CONFIG";
    /// Per-CPU array of u64 counters indexed by [`super::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// [`super::DaemonConnect`] -> 1 while the daemon connects to an app from a client's IP.
    pub const DAEMON_CONNECTS: &str = "DAEMON_CONNECTS";
    /// Every map the daemon pins.
    pub const ALL: [&str; 9] = [
        ORIG_BY_COOKIE,
        ORIG_BY_TUPLE,
        POD_SELF,
        INBOUND_LISTENERS,
        EXCLUDED_PORTS,
        EXCLUDED_CIDRS,
        CONFIG,
        COUNTERS,
        DAEMON_CONNECTS,
    ];
}

/// Default map sizes (the daemon can override each with a flag).
pub const DEFAULT_CONN_ENTRIES: u32 = 65_536;
pub const DEFAULT_POD_ENTRIES: u32 = 4_096;
pub const DEFAULT_EXCLUDE_ENTRIES: u32 = 256;

/// Debug/test counters kept by the programs (index into [`map::COUNTERS`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Connect4Calls = 0,
    Connect4Redirected,
    Connect4SkipNotPod,
    Connect4SkipLocal,
    Connect4SkipExcluded,
    Connect4MapFull,
    Connect6Calls,
    Connect6Redirected,
    SockopsRekeyed,
    SockopsCloseDeleted,
    GetpeernameRestored,
    SkLookupCalls,
    SkLookupSkipLocal,
    SkLookupSkipPort,
    SkLookupSteered,
    SkLookupMissPass,
    SkLookupMissDrop,
    SkLookupSkipDaemon,
}

impl Counter {
    pub const COUNT: u32 = 18;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::Connect4Calls,
        Self::Connect4Redirected,
        Self::Connect4SkipNotPod,
        Self::Connect4SkipLocal,
        Self::Connect4SkipExcluded,
        Self::Connect4MapFull,
        Self::Connect6Calls,
        Self::Connect6Redirected,
        Self::SockopsRekeyed,
        Self::SockopsCloseDeleted,
        Self::GetpeernameRestored,
        Self::SkLookupCalls,
        Self::SkLookupSkipLocal,
        Self::SkLookupSkipPort,
        Self::SkLookupSteered,
        Self::SkLookupMissPass,
        Self::SkLookupMissDrop,
        Self::SkLookupSkipDaemon,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect4Calls => "connect4_calls",
            Self::Connect4Redirected => "connect4_redirected",
            Self::Connect4SkipNotPod => "connect4_skip_not_pod",
            Self::Connect4SkipLocal => "connect4_skip_local",
            Self::Connect4SkipExcluded => "connect4_skip_excluded",
            Self::Connect4MapFull => "connect4_map_full",
            Self::Connect6Calls => "connect6_calls",
            Self::Connect6Redirected => "connect6_redirected",
            Self::SockopsRekeyed => "sockops_rekeyed",
            Self::SockopsCloseDeleted => "sockops_close_deleted",
            Self::GetpeernameRestored => "getpeername_restored",
            Self::SkLookupCalls => "sk_lookup_calls",
            Self::SkLookupSkipLocal => "sk_lookup_skip_local",
            Self::SkLookupSkipPort => "sk_lookup_skip_port",
            Self::SkLookupSteered => "sk_lookup_steered",
            Self::SkLookupMissPass => "sk_lookup_miss_pass",
            Self::SkLookupMissDrop => "sk_lookup_miss_drop",
            Self::SkLookupSkipDaemon => "sk_lookup_skip_daemon",
        }
    }
}

/// Mesh ports a pod's own connects never get redirected from, and sk_lookup never steers.
pub const fn is_mesh_port(port: u16) -> bool {
    matches!(port, PORT_OUTBOUND | PORT_INBOUND_PLAINTEXT | PORT_HBONE)
}

const _: () = assert!(core::mem::size_of::<OrigDst>() == 8);
const _: () = assert!(core::mem::size_of::<PodConfig>() == 8);
const _: () = assert!(core::mem::size_of::<GlobalConfig>() == 8);
const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);
const _: () = assert!(core::mem::size_of::<TupleKey>() == 16);
const _: () = assert!(core::mem::size_of::<DaemonConnect>() == 12);

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: plain-old-data, repr(C), no implicit padding (padding is explicit fields).
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::TupleKey {}
    unsafe impl aya::Pod for super::DaemonConnect {}
    unsafe impl aya::Pod for super::PodConfig {}
    unsafe impl aya::Pod for super::GlobalConfig {}
}
