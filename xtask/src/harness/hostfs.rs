//! Where the host's cgroup2 and bpf filesystems are, read from /proc/mounts (the
//! cgroup2 mount point differs between machines: /sys/fs/cgroup on unified hosts,
//! /sys/fs/cgroup/unified on hybrid ones).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::HarnessError;

/// Where bpffs is expected (and mounted when missing).
pub const BPFFS_MOUNT: &str = "/sys/fs/bpf";
/// Where `ip netns add` puts its bind mounts.
pub const NETNS_DIR: &str = "/run/netns";

/// Mount points of `fstype` in a /proc/mounts text, in order.
fn mount_points<'a>(mounts: &'a str, fstype: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    mounts.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let (_dev, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == fstype).then(|| PathBuf::from(unescape_mount_path(point)))
    })
}

/// /proc/mounts escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest.get(pos + 1..pos + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn read_mounts() -> Result<String, HarnessError> {
    std::fs::read_to_string("/proc/mounts").map_err(|e| HarnessError::io("read", "/proc/mounts", e))
}

/// The first cgroup2 mount point.
pub fn cgroup2_root() -> Result<PathBuf, HarnessError> {
    mount_points(&read_mounts()?, "cgroup2")
        .next()
        .ok_or(HarnessError::NoCgroup2)
}

/// The cgroup that holds every harness cluster's cgroups.
pub fn harness_cgroup_root() -> Result<PathBuf, HarnessError> {
    Ok(cgroup2_root()?.join(super::names::CGROUP_ROOT))
}

/// The directory holding every cluster's state dir.
pub fn state_root() -> PathBuf {
    std::env::temp_dir().join(super::names::STATE_ROOT)
}

/// True when bpffs is mounted at [`BPFFS_MOUNT`].
pub fn bpffs_mounted() -> Result<bool, HarnessError> {
    Ok(mount_points(&read_mounts()?, "bpf").any(|p| p == Path::new(BPFFS_MOUNT)))
}

/// Mounts bpffs at [`BPFFS_MOUNT`] unless it already is. A file lock keeps parallel
/// test processes from stacking two mounts.
pub fn ensure_bpffs() -> Result<PathBuf, HarnessError> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    if bpffs_mounted()? {
        return Ok(PathBuf::from(BPFFS_MOUNT));
    }
    let lock_path = Path::new("/run/mesh-harness-bpffs.lock");
    let lock = File::create(lock_path).map_err(|e| HarnessError::io("create", lock_path, e))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| HarnessError::sys(format!("flock {}", lock_path.display()), e))?;
    if !bpffs_mounted()? {
        tracing::info!("mounting bpffs at {BPFFS_MOUNT}");
        std::fs::create_dir_all(BPFFS_MOUNT).map_err(|e| HarnessError::io("create", BPFFS_MOUNT, e))?;
        nix::mount::mount(
            Some("bpf"),
            BPFFS_MOUNT,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| HarnessError::sys(format!("mount -t bpf bpf {BPFFS_MOUNT}"), e))?;
    }
    Ok(PathBuf::from(BPFFS_MOUNT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_hybrid_hosts() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\nbpf /sys/fs/my\\040bpf bpf rw 0 0\n";
        assert_eq!(
            mount_points(mounts, "cgroup2").next(),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mount_points(mounts, "bpf").next(),
            Some(PathBuf::from("/sys/fs/my bpf"))
        );
        assert_eq!(mount_points(mounts, "ext4").next(), None);
    }
}
