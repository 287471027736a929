//! Kubernetes mode: find a pod's cgroup and network namespace from the host, with no
//! CNI plugin change. The kubelet names every pod cgroup after the pod's UID, so the
//! UID (and, to skip a search, its QoS class) from the API is enough:
//!
//! | driver   | pod cgroup under the cgroup2 mount                                             |
//! |----------|--------------------------------------------------------------------------------|
//! | systemd  | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`   |
//! | cgroupfs | `kubepods/burstable/pod<uid>`                                                  |
//!
//! (`<uid_>`: dashes become underscores; Guaranteed pods sit directly under `kubepods`.)
//! Kubelets with a custom `--cgroup-root` (kind uses `kubelet.slice/kubelet-kubepods.slice`)
//! are found by a bounded search for the same leaf names. Only cgroup v2 is supported:
//! the capture programs attach to cgroup v2 directories.
//!
//! The netns comes from any process of the pod (all containers share the sandbox's
//! netns): the first live pid in `cgroup.procs` of the pod cgroup or a container
//! cgroup below it.

pub mod cgroup;
pub mod netns;

pub use cgroup::{CgroupDriver, PodCgroups, QosClass};
pub use netns::PodNetns;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no cgroup2 filesystem in {mounts}; mesh-node needs cgroup v2 (unified hierarchy) mounted, e.g. at /sys/fs/cgroup")]
    NoCgroup2 { mounts: PathBuf },
    #[error("no cgroup for pod {uid} under {root} (looked for the systemd and cgroupfs layouts); is the pod running on this node, and is the host's /sys/fs/cgroup mounted into mesh-node?")]
    PodCgroupNotFound { uid: String, root: PathBuf },
    #[error("pod cgroup {cgroup} has no running process yet (its sandbox has not started); retry when the pod is Running")]
    NoProcess { cgroup: PathBuf },
    #[error("pod {uid} shares the host's network namespace (hostNetwork: true); host-network pods cannot be enrolled")]
    HostNetwork { uid: String },
    #[error("cannot read {path}: {source}; is the host's /proc mounted into mesh-node (hostPID)?")]
    Io { path: PathBuf, source: std::io::Error },
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DiscoveryError + '_ {
    move |source| DiscoveryError::Io { path: path.to_owned(), source }
}
