//! HBONE: one HTTP/2 CONNECT stream per TCP connection, over mutual TLS 1.3,
//! interoperable with Istio's ztunnel. [`server`] terminates it on a pod's 15008,
//! [`client`] opens pooled connections to destination pods, [`relay`] moves bytes
//! between a TCP socket and a stream, [`stream`] makes a stream look like a socket
//! (for the waypoint's HTTP server and client). [`tls`] checks SPIFFE [`spiffe`]
//! identities on both sides; [`cert`] serves the current workload certificate; [`ca`]
//! obtains it from the mesh CA by CSR (Istio's certificate API).
//!
//! A crate of its own because two binaries speak HBONE: the node daemon (ztunnel's
//! role) and the waypoint / ingress gateway.

pub mod ca;
pub mod cert;
pub mod client;
pub mod reason;
pub mod relay;
pub mod server;
pub mod spiffe;
pub mod stream;
pub mod tls;
pub mod traceparent;

pub use cert::{CertResolver, Current, WorkloadCert};
pub use reason::RefusalReason;
pub use spiffe::SpiffeId;
pub use traceparent::TraceParent;

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Flow-control and frame sizes that made the tunnel fast here (docs/tunnel-tuning.md
/// steps 1 and 7): h2's 64 KiB/16 KiB defaults cost 3x throughput.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
pub const MAX_FRAME: u32 = 1 << 20;
/// Plain-TCP read size per syscall once a stream is moving bulk data (step 13: 256 KiB
/// beat 64 KiB and 1 MiB).
pub const READ_CHUNK: usize = 256 << 10;
/// First read size of a connection: most connections are small request/response
/// exchanges, and a held idle connection must not pin 256 KiB (the bench measured
/// ~258 KiB per held connection before). Reads that fill the buffer double it up to
/// [`READ_CHUNK`].
pub const FIRST_READ_CHUNK: usize = 8 << 10;
/// The `forwarded` header carries the original client address (RFC 7239).
pub const FORWARDED: &str = "forwarded";
/// W3C baggage on CONNECT: the source workload's metadata (ztunnel's keys).
pub const BAGGAGE: &str = "baggage";

/// glibc 2.36's `rep movsb` memcpy crawls on the misaligned copies rustls makes for every
/// record (docs/tunnel-tuning.md, "The glibc finding": +28% one-stream throughput). The tunable
/// only works from process start, so the daemon re-executes itself once with it set.
pub fn reexec_with_glibc_tunable() {
    const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold=4294967295";
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains("x86_rep_movsb_threshold") || std::env::var_os("MESH_NO_REEXEC").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let value = if current.is_empty() {
        TUNABLE.to_owned()
    } else {
        format!("{current}:{TUNABLE}")
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("GLIBC_TUNABLES", value)
        .env("MESH_NO_REEXEC", "1")
        .exec();
    // Still here: exec failed; run without the tunable rather than not at all.
    eprintln!("mesh-node: re-exec with GLIBC_TUNABLES failed ({err}); continuing without it");
}
