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
    #[error(
        "no cgroup2 filesystem in {mounts}; mesh-node needs cgroup v2 (unified hierarchy) mounted, e.g. at /sys/fs/cgroup"
    )]
    NoCgroup2 { mounts: PathBuf },
    #[error(
        "no cgroup for pod {uid} under {root} (looked for the systemd and cgroupfs layouts); is the pod running on this node, and is the host's /sys/fs/cgroup mounted into mesh-node?"
    )]
    PodCgroupNotFound { uid: String, root: PathBuf },
    #[error(
        "pod cgroup {cgroup} has no running process yet (its sandbox has not started); retry when the pod is Running"
    )]
    NoProcess { cgroup: PathBuf },
    #[error("pod {uid} shares the host's network namespace (hostNetwork: true); host-network pods cannot be enrolled")]
    HostNetwork { uid: String },
    #[error("cannot read {path}: {source}; is the host's /proc mounted into mesh-node (hostPID)?")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where a pod lives on the host: what capture attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub cgroup: PathBuf,
    /// `<proc>/<pid>/ns/net` of a process of the pod.
    pub netns: PathBuf,
}

/// Finds the pod's cgroup under the cgroup2 mount listed in `mounts`, then its netns
/// through `proc_root` (the host's `/proc` and `/proc/mounts` in the DaemonSet).
pub fn locate(uid: &str, mounts: &std::path::Path, proc_root: &std::path::Path) -> Result<Placement, DiscoveryError> {
    let (cgroup, _driver) = PodCgroups::from_mounts(mounts)?.find(uid, None)?;
    let netns = netns::pod_netns(uid, &cgroup, proc_root)?;
    Ok(Placement {
        cgroup,
        netns: netns.path,
    })
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DiscoveryError + '_ {
    move |source| DiscoveryError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_a_pods_cgroup_and_netns_from_its_uid() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cg");
        let pod = root.join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34.slice");
        let container = pod.join("cri-containerd-aaa.scope");
        std::fs::create_dir_all(&container).unwrap();
        std::fs::write(container.join("cgroup.procs"), "4243\n").unwrap();
        let proc_root = dir.path().join("proc");
        for (pid, ns) in [(1, "net:[4026531840]"), (4243, "net:[4026532401]")] {
            let d = proc_root.join(pid.to_string()).join("ns");
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(ns, d.join("net")).unwrap();
        }
        let mounts = dir.path().join("mounts");
        std::fs::write(&mounts, format!("cgroup2 {} cgroup2 rw,nosuid 0 0\n", root.display())).unwrap();
        let p = locate("12-34", &mounts, &proc_root).unwrap();
        assert_eq!(
            p,
            Placement {
                cgroup: pod,
                netns: proc_root.join("4243/ns/net")
            }
        );
        let missing = locate("99-99", &mounts, &proc_root).unwrap_err().to_string();
        assert!(missing.contains("99-99"), "{missing}");
    }
}
