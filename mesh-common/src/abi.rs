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

const _: () = assert!(core::mem::size_of::<OrigDst>() == 8);
const _: () = assert!(core::mem::size_of::<TupleKey>() == 16);

#[cfg(feature = "user")]
mod pod_impls {
    // SAFETY: plain-old-data, repr(C), no implicit padding (padding is explicit fields).
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::TupleKey {}
}
