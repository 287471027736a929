//! The harness's error type: each variant says what failed and what to do about it.

use std::path::PathBuf;

use mesh_common::model::ConfigError;

/// Why building, changing or tearing down a local cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The topology YAML is malformed or inconsistent; nothing was created.
    #[error("invalid topology: {}", join_errors(.0))]
    Topology(Vec<ConfigError>),
    /// A network/cgroup operation needs privileges the current process lacks.
    #[error("the local cluster harness needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); run this as root")]
    NotRoot,
    /// No cgroup2 hierarchy is mounted.
    #[error(
        "no cgroup2 filesystem in /proc/mounts; mount one (e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`) and retry"
    )]
    NoCgroup2,
    /// An `ip` (iproute2) command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A filesystem operation on a harness path failed.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A system call (setns, kill, mount...) failed.
    #[error("{action} failed: {source}")]
    Sys { action: String, source: std::io::Error },
    /// A pod name given to the harness does not exist in the cluster.
    #[error("no pod {namespace}/{name} in cluster {prefix}")]
    UnknownPod {
        prefix: String,
        namespace: String,
        name: String,
    },
    /// A node name given to the harness does not exist in the cluster.
    #[error("no node {name} in cluster {prefix}")]
    UnknownNode { prefix: String, name: String },
    /// A namespace name given to the harness does not exist in the cluster.
    #[error("no namespace {name} in cluster {prefix}")]
    UnknownNamespace { prefix: String, name: String },
    /// Spawning a process failed.
    #[error("cannot start {program} in {place}: {source}")]
    Spawn {
        program: String,
        place: String,
        source: std::io::Error,
    },
    /// A bounded wait ran out.
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: std::time::Duration },
    /// A workspace binary the caller asked for is not built.
    #[error("binary {name} not found at {}; run `cargo build --workspace` first", .path.display())]
    BinaryMissing { name: String, path: PathBuf },
    /// Teardown left something behind (listed).
    #[error("teardown of cluster {prefix} left: {}", .leftovers.join(", "))]
    Teardown { prefix: String, leftovers: Vec<String> },
    /// A closure run inside a network namespace panicked.
    #[error("the closure run inside netns {netns} panicked")]
    ThreadPanicked { netns: String },
}

fn join_errors(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl HarnessError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(action: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Sys {
            action: action.into(),
            source: source.into(),
        }
    }
}

impl From<ConfigError> for HarnessError {
    fn from(e: ConfigError) -> Self {
        Self::Topology(vec![e])
    }
}
