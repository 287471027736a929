//! Program entry points. Function names differ from their section names on purpose:
//! bpf-linker rejects a symbol that shadows its section (EBPF.md pitfall 4).

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use aya_log_ebpf::debug;

/// Placeholder until capture lands: allows every connect and logs it.
#[cgroup_sock_addr(connect4)]
pub fn capture_connect4(ctx: SockAddrContext) -> i32 {
    debug!(&ctx, "connect4");
    1
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
