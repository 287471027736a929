//! A pod's network namespace, from a process in its cgroup.

use std::path::{Path, PathBuf};

use super::DiscoveryError;

/// Container cgroups sit one level below the pod cgroup (two with systemd's
/// `cri-containerd-<id>.scope` plus an init sub-cgroup); deeper is not a pod.
const MAX_DEPTH: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetns {
    /// The process the namespace was read from.
    pub pid: u32,
    /// `<proc>/<pid>/ns/net`: open it (and keep the fd) to setns into the pod.
    pub path: PathBuf,
    /// The namespace identity, e.g. `net:[4026532401]`: stable while the pod lives,
    /// so a restarted daemon can tell whether the pod was recreated.
    pub id: String,
}

/// Reads the netns of the first live process in `cgroup` or its container cgroups.
/// `proc_root` is the host's `/proc` (the DaemonSet runs with hostPID).
pub fn pod_netns(uid: &str, cgroup: &Path, proc_root: &Path) -> Result<PodNetns, DiscoveryError> {
    let mut pids = Vec::new();
    collect_pids(cgroup, 0, &mut pids);
    let found = pids.into_iter().find_map(|pid| {
        let path = proc_root.join(pid.to_string()).join("ns/net");
        // A pid listed a moment ago may have exited; the next one will do.
        let id = std::fs::read_link(&path).ok()?.to_string_lossy().into_owned();
        Some(PodNetns { pid, path, id })
    });
    let netns = found.ok_or_else(|| DiscoveryError::NoProcess {
        cgroup: cgroup.to_owned(),
    })?;
    let host = std::fs::read_link(proc_root.join("1/ns/net")).ok();
    if host.is_some_and(|h| h.to_string_lossy() == netns.id) {
        return Err(DiscoveryError::HostNetwork { uid: uid.to_owned() });
    }
    Ok(netns)
}

/// Pids of `dir` first (the pod cgroup itself rarely has any), then its children.
fn collect_pids(dir: &Path, depth: usize, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut children: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        collect_pids(&child, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        _dir: tempfile::TempDir,
        cgroup: PathBuf,
        proc: PathBuf,
    }

    fn fake() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = dir.path().join("cg/kubepods/burstable/pod1234");
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(&cgroup).unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), "").unwrap();
        process(&proc, 1, "net:[4026531840]");
        Fake {
            _dir: dir,
            cgroup,
            proc,
        }
    }

    fn process(proc: &Path, pid: u32, netns: &str) {
        let ns = proc.join(pid.to_string()).join("ns");
        std::fs::create_dir_all(&ns).unwrap();
        // Like the kernel's magic link: readlink gives the namespace identity.
        std::os::unix::fs::symlink(netns, ns.join("net")).unwrap();
    }

    fn container(f: &Fake, name: &str, pids: &str) {
        let c = f.cgroup.join(name);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("cgroup.procs"), pids).unwrap();
    }

    #[test]
    fn reads_netns_from_a_container_process() {
        let f = fake();
        container(&f, "cri-containerd-aaa.scope", "4242\n4243\n");
        process(&f.proc, 4243, "net:[4026532401]");
        // 4242 exited between reading cgroup.procs and /proc: skipped.
        let ns = pod_netns("1234", &f.cgroup, &f.proc).unwrap();
        assert_eq!((ns.pid, ns.id.as_str()), (4243, "net:[4026532401]"));
        assert_eq!(ns.path, f.proc.join("4243/ns/net"));
    }

    #[test]
    fn pod_without_processes_is_not_ready_yet() {
        let f = fake();
        container(&f, "cri-containerd-aaa.scope", "");
        let err = pod_netns("1234", &f.cgroup, &f.proc).unwrap_err();
        assert!(matches!(err, DiscoveryError::NoProcess { .. }), "{err}");
    }

    #[test]
    fn host_network_pods_are_refused() {
        let f = fake();
        container(&f, "crio-bbb.scope", "77\n");
        process(&f.proc, 77, "net:[4026531840]");
        let err = pod_netns("1234", &f.cgroup, &f.proc).unwrap_err();
        assert!(err.to_string().contains("hostNetwork"), "{err}");
    }
}
