//! Program entry points. Function names differ from their section names on purpose:
//! bpf-linker rejects a symbol that shadows its section (docs/ebpf-toolchain.md §3.3).
//!
//! Outbound (per pod cgroup): connect4/6 store the original destination by socket
//! cookie and redirect to the pod-local 127.0.0.1:15001; sockops re-keys it by
//! (netns cookie, local ip, local port) once established, so the daemon can find it
//! from the accepted socket, and deletes both entries at close; getpeername4/6 show the
//! original destination to the application.
//! Inbound (per pod netns): sk_lookup steers plaintext to the pod's 15006 listener.

mod maps;

use aya_ebpf::EbpfContext;
use aya_ebpf::bindings::{
    BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
    BPF_TCP_CLOSE, bpf_sock_addr,
};
use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie};
use aya_ebpf::macros::{cgroup_sock_addr, sk_lookup, sock_ops};
use aya_ebpf::programs::{SkLookupContext, SockAddrContext, SockOpsContext};
use mesh_common::abi::{Counter, DaemonConnect, OrigDst, PORT_OUTBOUND, TupleKey, is_mesh_port};

use maps::{INBOUND_LISTENERS, ORIG_BY_COOKIE, ORIG_BY_TUPLE};
use maps::{count, is_daemon_connect, is_excluded_cidr, is_excluded_port, pod_config, strict_on_miss};

const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const SK_DROP: u32 = 0;
const SK_PASS: u32 = 1;
const LOOPBACK_BE: u32 = u32::from_ne_bytes([127, 0, 0, 1]);

fn is_loopback(ip_be: u32) -> bool {
    ip_be.to_ne_bytes()[0] == 127
}

/// Whether a pod connect to `ip_be:port` should go through the mesh; records why not.
fn should_capture(ctx: &SockAddrContext, ip_be: u32, port: u16) -> bool {
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let Some(pod) = pod_config(netns) else {
        count(Counter::Connect4SkipNotPod);
        return false;
    };
    if is_loopback(ip_be) || ip_be == pod.ip || ip_be == 0 {
        count(Counter::Connect4SkipLocal);
        return false;
    }
    if is_mesh_port(port) || is_excluded_port(port) || is_excluded_cidr(ip_be) {
        count(Counter::Connect4SkipExcluded);
        return false;
    }
    true
}

fn remember(ctx: &SockAddrContext, ip_be: u32, port: u16) -> bool {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let orig = OrigDst {
        ip: ip_be,
        port,
        _pad: 0,
    };
    if ORIG_BY_COOKIE.insert(&cookie, &orig, 0).is_err() {
        // Without the entry the daemon could not forward it: leave the connect alone.
        count(Counter::Connect4MapFull);
        return false;
    }
    true
}

#[cgroup_sock_addr(connect4)]
pub fn capture_connect4(ctx: SockAddrContext) -> i32 {
    count(Counter::Connect4Calls);
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return 1;
    }
    let ip = sa.user_ip4;
    let port = u16::from_be(sa.user_port as u16);
    if should_capture(&ctx, ip, port) && remember(&ctx, ip, port) {
        sa.user_ip4 = LOOPBACK_BE;
        sa.user_port = u32::from(PORT_OUTBOUND.to_be());
        count(Counter::Connect4Redirected);
    }
    1
}

/// IPv6: pods in this mesh are IPv4-only, so native IPv6 is left alone. A dual-stack
/// socket connecting to a v4-mapped address (`::ffff:a.b.c.d`) is an IPv4 connection on
/// the wire and is captured like connect4 (otherwise it would escape the mesh).
#[cgroup_sock_addr(connect6)]
pub fn capture_connect6(ctx: SockAddrContext) -> i32 {
    count(Counter::Connect6Calls);
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return 1;
    }
    let w = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    if w[0] != 0 || w[1] != 0 || w[2] != u32::from_ne_bytes([0, 0, 0xff, 0xff]) {
        return 1;
    }
    let ip = w[3];
    let port = u16::from_be(sa.user_port as u16);
    if should_capture(&ctx, ip, port) && remember(&ctx, ip, port) {
        sa.user_ip6[3] = LOOPBACK_BE;
        sa.user_port = u32::from(PORT_OUTBOUND.to_be());
        count(Counter::Connect6Redirected);
    }
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn restore_getpeername4(ctx: SockAddrContext) -> i32 {
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Some(orig) = unsafe { ORIG_BY_COOKIE.get(&cookie) } {
        sa.user_ip4 = orig.ip;
        sa.user_port = u32::from(orig.port.to_be());
        count(Counter::GetpeernameRestored);
    }
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn restore_getpeername6(ctx: SockAddrContext) -> i32 {
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Some(orig) = unsafe { ORIG_BY_COOKIE.get(&cookie) } {
        sa.user_ip6[3] = orig.ip;
        sa.user_port = u32::from(orig.port.to_be());
        count(Counter::GetpeernameRestored);
    }
    1
}

#[sock_ops]
pub fn track_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        // Always called for an active open: arming the state callback here (not at
        // ESTABLISHED) also cleans up connects that are refused.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            if unsafe { ORIG_BY_COOKIE.get(&cookie) }.is_some() {
                let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
            }
        }
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            if let Some(orig) = unsafe { ORIG_BY_COOKIE.get(&cookie) } {
                let orig = *orig;
                if ORIG_BY_TUPLE.insert(&tuple_key(&ctx), &orig, 0).is_ok() {
                    count(Counter::SockopsRekeyed);
                }
            }
        }
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            if ORIG_BY_COOKIE.remove(&cookie).is_ok() {
                count(Counter::SockopsCloseDeleted);
            }
            let _ = ORIG_BY_TUPLE.remove(&tuple_key(&ctx));
        }
        _ => {}
    }
    0
}

/// The client's side of a captured connection as the daemon sees its peer: for a
/// v4-mapped IPv6 socket `local_ip4` holds the IPv4 address too.
fn tuple_key(ctx: &SockOpsContext) -> TupleKey {
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    TupleKey {
        netns_cookie,
        ip: ctx.local_ip4(),
        port: ctx.local_port() as u16,
        _pad: 0,
    }
}

#[sk_lookup]
pub fn steer_inbound(ctx: SkLookupContext) -> u32 {
    count(Counter::SkLookupCalls);
    let l = unsafe { &*ctx.lookup };
    if l.family != AF_INET || l.protocol != IPPROTO_TCP {
        return SK_PASS;
    }
    let (local, remote, port) = (l.local_ip4, l.remote_ip4, l.local_port as u16);
    // Locally originated traffic (the pod talking to itself, the daemon's own app
    // connections from the pod IP) carries the owner's ifindex, not lo: compare
    // addresses (docs/capture.md §3). Outside packets with a local source are martians.
    if is_loopback(remote) || is_loopback(local) || remote == local {
        count(Counter::SkLookupSkipLocal);
        return SK_PASS;
    }
    // The daemon's connect from a client's address looks like outside traffic: only the
    // exact 4-tuple it registered before connecting tells it apart (docs/capture.md §5).
    let daemon = DaemonConnect {
        remote_ip: remote,
        local_ip: local,
        remote_port: u16::from_be(l.remote_port),
        local_port: port,
    };
    if is_daemon_connect(&daemon) {
        count(Counter::SkLookupSkipDaemon);
        return SK_PASS;
    }
    if is_mesh_port(port) || is_excluded_port(port) || is_excluded_cidr(remote) {
        count(Counter::SkLookupSkipPort);
        return SK_PASS;
    }
    match INBOUND_LISTENERS.redirect_sk_lookup(&ctx, local, 0) {
        Ok(()) => {
            count(Counter::SkLookupSteered);
            SK_PASS
        }
        Err(_) if strict_on_miss() => {
            count(Counter::SkLookupMissDrop);
            SK_DROP
        }
        Err(_) => {
            count(Counter::SkLookupMissPass);
            SK_PASS
        }
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
