//! Pod cgroup lookup for the systemd and cgroupfs kubelet cgroup drivers.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::{DiscoveryError, io_error};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// The pod's `status.qosClass`, which picks the kubelet's intermediate cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn from_status(s: &str) -> Option<Self> {
        match s {
            "Guaranteed" => Some(Self::Guaranteed),
            "Burstable" => Some(Self::Burstable),
            "BestEffort" => Some(Self::BestEffort),
            _ => None,
        }
    }

    fn tier(self) -> Option<&'static str> {
        match self {
            Self::Guaranteed => None,
            Self::Burstable => Some("burstable"),
            Self::BestEffort => Some("besteffort"),
        }
    }
}

/// How deep below the cgroup root a pod cgroup may sit (custom `--cgroup-root`s and
/// nested kubelets such as kind's add two or three levels).
const MAX_DEPTH: usize = 6;

/// Finds pod cgroups under one cgroup2 mount.
#[derive(Clone, Debug)]
pub struct PodCgroups {
    root: PathBuf,
}

impl PodCgroups {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Uses the cgroup2 mount listed in `mounts` (normally `/proc/mounts`; with hostPID
    /// and the host's `/sys/fs/cgroup` mounted, the host's hierarchy).
    pub fn from_mounts(mounts: &Path) -> Result<Self, DiscoveryError> {
        let text = std::fs::read_to_string(mounts).map_err(io_error(mounts))?;
        cgroup2_mount(&text)
            .map(Self::new)
            .ok_or_else(|| DiscoveryError::NoCgroup2 {
                mounts: mounts.to_owned(),
            })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pod's cgroup directory and the driver whose naming matched.
    pub fn find(&self, uid: &str, qos: Option<QosClass>) -> Result<(PathBuf, CgroupDriver), DiscoveryError> {
        let qos_classes = match qos {
            Some(q) => vec![q],
            None => vec![QosClass::Burstable, QosClass::BestEffort, QosClass::Guaranteed],
        };
        for q in qos_classes {
            for driver in [CgroupDriver::Systemd, CgroupDriver::Cgroupfs] {
                let path = self.root.join(standard_path(driver, q, uid));
                if path.is_dir() {
                    return Ok((path, driver));
                }
            }
        }
        self.search(uid).ok_or_else(|| DiscoveryError::PodCgroupNotFound {
            uid: uid.to_owned(),
            root: self.root.clone(),
        })
    }

    /// Breadth-first below the root, entering only kubelet-owned directories.
    fn search(&self, uid: &str) -> Option<(PathBuf, CgroupDriver)> {
        let mut queue = VecDeque::from([(self.root.clone(), 0)]);
        while let Some((dir, depth)) = queue.pop_front() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if let Some(driver) = leaf_driver(name, uid) {
                    return Some((entry.path(), driver));
                }
                if depth < MAX_DEPTH && (name.contains("kubepods") || name.contains("kubelet")) {
                    queue.push_back((entry.path(), depth + 1));
                }
            }
        }
        None
    }
}

/// The path the kubelet uses with its default cgroup root.
pub fn standard_path(driver: CgroupDriver, qos: QosClass, uid: &str) -> PathBuf {
    match (driver, qos.tier()) {
        (CgroupDriver::Systemd, None) => format!("kubepods.slice/kubepods-pod{}.slice", systemd_uid(uid)).into(),
        (CgroupDriver::Systemd, Some(t)) => format!(
            "kubepods.slice/kubepods-{t}.slice/kubepods-{t}-pod{}.slice",
            systemd_uid(uid)
        )
        .into(),
        (CgroupDriver::Cgroupfs, None) => format!("kubepods/pod{uid}").into(),
        (CgroupDriver::Cgroupfs, Some(t)) => format!("kubepods/{t}/pod{uid}").into(),
    }
}

/// systemd unit names cannot hold `-` inside a component, so the kubelet swaps them.
fn systemd_uid(uid: &str) -> String {
    uid.replace('-', "_")
}

fn leaf_driver(name: &str, uid: &str) -> Option<CgroupDriver> {
    if name == format!("pod{uid}") {
        return Some(CgroupDriver::Cgroupfs);
    }
    name.ends_with(&format!("pod{}.slice", systemd_uid(uid)))
        .then_some(CgroupDriver::Systemd)
}

/// The mount point of the cgroup2 filesystem in a `/proc/mounts` listing.
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(dir)))
    })
}

/// `/proc/mounts` escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "5c3f2a0e-1b2c-4d5e-8f90-123456789abc";

    fn mkdir(root: &Path, rel: &str) -> PathBuf {
        let p = root.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn finds_systemd_layout_for_each_qos() {
        for (qos, rel) in [
            (
                QosClass::Burstable,
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5c3f2a0e_1b2c_4d5e_8f90_123456789abc.slice",
            ),
            (
                QosClass::BestEffort,
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod5c3f2a0e_1b2c_4d5e_8f90_123456789abc.slice",
            ),
            (
                QosClass::Guaranteed,
                "kubepods.slice/kubepods-pod5c3f2a0e_1b2c_4d5e_8f90_123456789abc.slice",
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let want = mkdir(dir.path(), rel);
            let cg = PodCgroups::new(dir.path());
            assert_eq!(cg.find(UID, Some(qos)).unwrap(), (want.clone(), CgroupDriver::Systemd));
            assert_eq!(
                cg.find(UID, None).unwrap(),
                (want, CgroupDriver::Systemd),
                "without the QoS class"
            );
        }
    }

    #[test]
    fn finds_cgroupfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        let want = mkdir(dir.path(), &format!("kubepods/besteffort/pod{UID}"));
        mkdir(
            dir.path(),
            "kubepods/besteffort/podffffffff-0000-0000-0000-000000000000",
        );
        let found = PodCgroups::new(dir.path())
            .find(UID, Some(QosClass::BestEffort))
            .unwrap();
        assert_eq!(found, (want, CgroupDriver::Cgroupfs));
    }

    #[test]
    fn finds_pods_under_a_custom_kubelet_cgroup_root() {
        let dir = tempfile::tempdir().unwrap();
        mkdir(dir.path(), "system.slice/containerd.service");
        let want = mkdir(
            dir.path(),
            "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod5c3f2a0e_1b2c_4d5e_8f90_123456789abc.slice",
        );
        let found = PodCgroups::new(dir.path())
            .find(UID, Some(QosClass::Burstable))
            .unwrap();
        assert_eq!(found, (want, CgroupDriver::Systemd));
    }

    #[test]
    fn missing_pod_names_uid_and_root() {
        let dir = tempfile::tempdir().unwrap();
        mkdir(dir.path(), "kubepods.slice/kubepods-burstable.slice");
        let err = PodCgroups::new(dir.path()).find(UID, None).unwrap_err().to_string();
        assert!(
            err.contains(UID) && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn cgroup2_mount_from_proc_mounts() {
        let mounts = "proc /proc proc rw,nosuid 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /host/sys/fs/cgroup\\040x cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(cgroup2_mount(mounts), Some(PathBuf::from("/host/sys/fs/cgroup x")));
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn from_mounts_reports_missing_cgroup2() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = dir.path().join("mounts");
        std::fs::write(&mounts, "proc /proc proc rw 0 0\n").unwrap();
        let err = PodCgroups::from_mounts(&mounts).unwrap_err();
        assert!(matches!(err, DiscoveryError::NoCgroup2 { .. }), "{err}");
        std::fs::write(&mounts, "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n").unwrap();
        assert_eq!(
            PodCgroups::from_mounts(&mounts).unwrap().root(),
            Path::new("/sys/fs/cgroup")
        );
    }
}
