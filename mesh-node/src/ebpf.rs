//! The embedded kernel object: loading it and forwarding its aya-log output to tracing.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Built by build.rs from `mesh-ebpf` for bpfel-unknown-none.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("cannot load the embedded eBPF object (are we root, on a kernel >= 5.7 with BTF?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("cannot set up eBPF log forwarding: {0}")]
    Log(String),
}

/// Spawns a task that drains the programs' log ring into `tracing` (through the `log`
/// bridge). Programs that log nothing leave no log map: that is not an error.
pub fn forward_logs(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(aya_log::Error::MapNotFound) => return Ok(()),
        Err(e) => return Err(EbpfError::Log(e.to_string())),
    };
    // SAFETY: the logger owns its fd for as long as the AsyncFd lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| EbpfError::Log(e.to_string()))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else { break };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}
