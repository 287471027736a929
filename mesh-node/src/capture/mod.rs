//! eBPF capture of enrolled pods: listeners inside each pod's netns, programs attached
//! to each pod's cgroup and netns, maps and links pinned so capture outlives the daemon.

pub mod handler;

#[allow(unused_imports)] // the seam is used by the HBONE data path as it lands
pub use handler::{CapturedPod, ConnectionHandler, DirectHandler};
