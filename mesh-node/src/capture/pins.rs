//! bpffs layout: `<bpffs>/maps/<MAP>` and `<bpffs>/pods/<ns>_<name>_<netns cookie>/<program>`.
//! The netns cookie in the directory name tells a re-created pod (new netns) from the
//! one a previous daemon attached to.

use std::io;
use std::path::{Path, PathBuf};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error("cannot mount bpffs at {BPFFS_ROOT} (the DaemonSet needs the host's /sys/fs/bpf): {0}")]
    Mount(io::Error),
    #[error("{0} is not on a bpffs mount: pinned links and maps cannot live there")]
    NotBpffs(PathBuf),
    #[error("cannot create pin directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Makes sure `dir` exists on bpffs, mounting bpffs at /sys/fs/bpf if `dir` lives there
/// and nothing is mounted yet.
pub fn prepare(dir: &Path) -> Result<(), PinsError> {
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && !is_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| PinsError::Mount(e.into()))?;
        tracing::info!("mounted bpffs at {BPFFS_ROOT}");
    }
    for d in [dir.to_owned(), pods_dir(dir)] {
        std::fs::create_dir_all(&d).map_err(|source| PinsError::Create {
            path: d.clone(),
            source,
        })?;
    }
    if !is_bpffs(dir) {
        return Err(PinsError::NotBpffs(dir.to_owned()));
    }
    Ok(())
}

pub fn pods_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("pods")
}

/// Namespaces cannot contain `_` (DNS labels), so the name splits back unambiguously.
pub fn pod_dir(bpffs: &Path, namespace: &str, name: &str, netns_cookie: u64) -> PathBuf {
    pods_dir(bpffs).join(format!("{namespace}_{name}_{netns_cookie}"))
}

/// Pod pin directories currently present.
pub fn pinned_pods(bpffs: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(pods_dir(bpffs)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    v.sort();
    v
}

/// Removing a link's pin (with no fd held anywhere) detaches it.
pub fn remove_dir(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            std::fs::remove_file(e.path())?;
            n += 1;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(n),
    }
}

/// Everything under `bpffs` (maps, pods, the directory itself): used on `--detach-on-exit`.
pub fn remove_all(bpffs: &Path) -> io::Result<()> {
    for d in pinned_pods(bpffs) {
        remove_dir(&d)?;
    }
    let _ = std::fs::remove_dir(pods_dir(bpffs));
    remove_dir(&bpffs.join("maps"))?;
    match std::fs::remove_dir(bpffs) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dir_carries_namespace_name_and_cookie() {
        let d = pod_dir(Path::new("/sys/fs/bpf/mesh/n1"), "shop", "web-1.a", 4154);
        assert_eq!(d, PathBuf::from("/sys/fs/bpf/mesh/n1/pods/shop_web-1.a_4154"));
    }

    #[test]
    fn a_plain_directory_is_not_bpffs() {
        let t = tempfile::tempdir().unwrap();
        let e = prepare(t.path()).unwrap_err();
        assert!(matches!(e, PinsError::NotBpffs(_)), "{e}");
    }
}
