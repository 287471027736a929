//! Local mode: a directory of Kubernetes-shaped YAML files (multi-document), polled
//! for changes. Polling (default every 500 ms, `--config-poll-ms` on the daemons)
//! works on every filesystem, including bind mounts where inotify events do not arrive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::model::store::{ApplyReport, ConfigStore, Validator};
use crate::model::{ConfigError, parse_documents};

/// Size and modification time: enough to notice an edit or an atomic replace.
type Fingerprint = (u64, Option<SystemTime>);

#[derive(Debug)]
pub struct DirSource {
    root: PathBuf,
    seen: BTreeMap<PathBuf, Fingerprint>,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            seen: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads files that changed since the last call and applies them to `store`.
    /// Returns `Err` only when the directory itself cannot be read; a bad file is
    /// reported inside the [`ApplyReport`] and keeps its last good objects.
    pub fn poll(&mut self, store: &mut ConfigStore, validate: Validator<'_>) -> Result<ApplyReport, ConfigError> {
        let current = scan(&self.root)?;
        let mut report = ApplyReport::default();
        for (path, fp) in &current {
            if self.seen.get(path) != Some(fp) {
                merge(&mut report, self.apply_file(store, path, validate));
            }
        }
        for gone in self.seen.keys().filter(|p| !current.contains_key(*p)) {
            merge(&mut report, store.remove_source(&gone.display().to_string()));
        }
        self.seen = current;
        Ok(report)
    }

    fn apply_file(&self, store: &mut ConfigStore, path: &Path, validate: Validator<'_>) -> ApplyReport {
        let name = path.display().to_string();
        let results = match std::fs::read_to_string(path) {
            Ok(text) => parse_documents(&name, &text),
            Err(source) => vec![Err(ConfigError::Io {
                path: name.clone(),
                source,
            })],
        };
        store.apply_source(&name, results, validate)
    }
}

/// A [`DirSource`] polled every `every` into a shared store: the directory as a
/// [`crate::source::runner::Source`].
#[cfg(feature = "runner")]
#[derive(Clone)]
pub struct DirPoller {
    inner: std::sync::Arc<PollerInner>,
}

#[cfg(feature = "runner")]
struct PollerInner {
    source: std::sync::Mutex<DirSource>,
    store: super::SharedStore,
    validate: super::SharedValidator,
    every: std::time::Duration,
    generation: tokio::sync::watch::Sender<u64>,
    status: tokio::sync::watch::Sender<super::status::SourceStatus>,
}

#[cfg(feature = "runner")]
impl DirPoller {
    pub fn new(
        root: impl Into<PathBuf>,
        store: super::SharedStore,
        validate: super::SharedValidator,
        every: std::time::Duration,
    ) -> Self {
        let inner = PollerInner {
            source: std::sync::Mutex::new(DirSource::new(root)),
            store,
            validate,
            every,
            generation: tokio::sync::watch::channel(0).0,
            status: tokio::sync::watch::channel(Default::default()).0,
        };
        Self {
            inner: std::sync::Arc::new(inner),
        }
    }

    /// Reads what changed now. A file that does not parse or validate is logged and
    /// keeps its last good objects; an unreadable directory keeps the whole last good
    /// configuration and is reported in the status.
    pub fn poll_once(&self) -> Result<ApplyReport, ConfigError> {
        let i = &*self.inner;
        let mut source = i.source.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let root = source.root().display().to_string();
        let polled = {
            let mut store = i.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            source.poll(&mut store, &*i.validate).map(|r| (r, store.generation()))
        };
        match polled {
            Ok((report, generation)) => {
                for line in &report.rejected {
                    tracing::warn!("configuration rejected, last good version kept: {line}");
                }
                i.status.send_if_modified(|s| {
                    let before = (s.connected, s.synced);
                    s.record(&root, Ok(()));
                    before != (s.connected, s.synced)
                });
                i.generation
                    .send_if_modified(|g| std::mem::replace(g, generation) != generation);
                Ok(report)
            }
            Err(e) => {
                tracing::error!("{e}; serving the last good configuration");
                i.status.send_modify(|s| s.record(&root, Err(e.to_string())));
                Err(e)
            }
        }
    }
}

#[cfg(feature = "runner")]
impl super::runner::Source for DirPoller {
    fn generation(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    fn status(&self) -> tokio::sync::watch::Receiver<super::status::SourceStatus> {
        self.inner.status.subscribe()
    }

    async fn run(self) {
        let mut tick = tokio::time::interval(self.inner.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Reading files and compiling what they hold blocks: off the async workers.
            let poller = self.clone();
            let _ = tokio::task::spawn_blocking(move || poller.poll_once()).await;
        }
    }
}

fn scan(root: &Path) -> Result<BTreeMap<PathBuf, Fingerprint>, ConfigError> {
    let mut out = BTreeMap::new();
    scan_into(root, &mut out)?;
    Ok(out)
}

fn scan_into(dir: &Path, out: &mut BTreeMap<PathBuf, Fingerprint>) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: dir.display().to_string(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue }; // vanished between readdir and stat
        if meta.is_dir() {
            scan_into(&path, out)?;
        } else if is_yaml(&path) {
            out.insert(path, (meta.len(), meta.modified().ok()));
        }
    }
    Ok(())
}

fn is_yaml(path: &Path) -> bool {
    // Editors' temp files (".x.yaml.swp", "x.yaml~") never match these extensions.
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

fn merge(into: &mut ApplyReport, from: ApplyReport) {
    into.added.extend(from.added);
    into.updated.extend(from.updated);
    into.removed.extend(from.removed);
    into.rejected.extend(from.rejected);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &crate::model::Resource) -> Result<(), ConfigError> {
        Ok(())
    }

    #[test]
    fn picks_up_new_changed_and_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = DirSource::new(dir.path());
        let mut store = ConfigStore::default();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        assert_eq!(src.poll(&mut store, &ok).unwrap().added.len(), 1);
        assert!(src.poll(&mut store, &ok).unwrap().is_noop());
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        )
        .unwrap();
        let r = src.poll(&mut store, &ok).unwrap();
        assert_eq!((r.added.len(), r.removed.len()), (1, 1));
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert_eq!(src.poll(&mut store, &ok).unwrap().removed.len(), 1);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let mut src = DirSource::new("/nonexistent/mesh-config");
        let err = src.poll(&mut ConfigStore::default(), &ok).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/mesh-config"), "{err}");
    }

    #[cfg(feature = "runner")]
    #[test]
    fn poller_announces_generations_and_keeps_the_last_good_state_when_the_directory_goes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("config");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(
            root.join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        let store = crate::source::SharedStore::default();
        let poller = DirPoller::new(
            &root,
            store.clone(),
            std::sync::Arc::new(ok),
            std::time::Duration::from_secs(1),
        );
        let (generation, status) = {
            use crate::source::runner::Source;
            (poller.generation(), poller.status())
        };
        poller.poll_once().unwrap();
        assert_eq!(*generation.borrow(), store.lock().unwrap().generation());
        assert!(status.borrow().synced && status.borrow().connected);

        std::fs::remove_dir_all(&root).unwrap();
        let err = poller.poll_once().unwrap_err().to_string();
        let s = status.borrow().clone();
        assert!(s.synced && !s.connected, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some(err.as_str()));
        assert_eq!(store.lock().unwrap().len(), 1, "the last good configuration is kept");
    }
}
