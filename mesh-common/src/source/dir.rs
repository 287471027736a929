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
}
