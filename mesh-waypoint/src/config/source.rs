//! Local-directory source with the "last good version stays" rule, per file.
//!
//! Stand-in until the shared `mesh_common::source::dir` loader lands on main; it
//! keeps that loader's shape (`apply_source(name, results, validate)`), so
//! switching is an import change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use mesh_common::model::{ConfigError, ObjectRef, Resource, parse_documents};

pub type Validator<'a> = &'a dyn Fn(&Resource) -> Result<(), ConfigError>;

#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectRef, Resource>,
    by_source: BTreeMap<String, BTreeSet<ObjectRef>>,
    errors: BTreeMap<String, Vec<String>>,
    generation: u64,
}

impl Store {
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.objects.values()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.values().flatten().cloned().collect()
    }

    /// Replaces what `source` contributed. A rejected object keeps its last good
    /// version; a document that names no object (malformed YAML) freezes the source.
    pub fn apply_source(&mut self, source: &str, results: Vec<Result<Resource, ConfigError>>, validate: Validator<'_>) -> bool {
        let (mut fresh, mut invalid, mut errors, mut unidentified) = (Vec::new(), Vec::new(), Vec::new(), false);
        for result in results {
            match result.and_then(|r| validate(&r).map(|()| r)) {
                Ok(r) => fresh.push(r),
                Err(e) => {
                    match &e {
                        ConfigError::Invalid { object, .. } | ConfigError::UnsupportedVersion { object, .. } => invalid.push(object.clone()),
                        _ => unidentified = true,
                    }
                    tracing::warn!("rejected: {e}");
                    errors.push(e.to_string());
                }
            }
        }
        let changed_errors = self.errors.get(source) != Some(&errors);
        if errors.is_empty() {
            self.errors.remove(source);
        } else {
            self.errors.insert(source.to_owned(), errors);
        }
        if unidentified {
            if changed_errors {
                self.generation += 1;
            }
            return changed_errors;
        }
        let previous = self.by_source.remove(source).unwrap_or_default();
        let mut now = BTreeSet::new();
        let mut changed = changed_errors;
        for r in fresh {
            let key = r.object_ref();
            now.insert(key.clone());
            if self.objects.get(&key) != Some(&r) {
                self.objects.insert(key, r);
                changed = true;
            }
        }
        now.extend(invalid.into_iter().filter(|r| self.objects.contains_key(r)));
        for gone in previous.difference(&now) {
            changed |= self.objects.remove(gone).is_some();
        }
        self.by_source.insert(source.to_owned(), now);
        if changed {
            self.generation += 1;
        }
        changed
    }
}

/// Size and modification time per YAML file: enough to notice edits.
#[derive(Debug, Default)]
pub struct DirSource {
    root: PathBuf,
    seen: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), seen: BTreeMap::new() }
    }

    /// Re-reads changed files into `store`; true if anything changed.
    pub fn poll(&mut self, store: &mut Store, validate: Validator<'_>) -> Result<bool, ConfigError> {
        let current = scan(&self.root)?;
        let mut changed = false;
        for (path, fp) in &current {
            if self.seen.get(path) != Some(fp) {
                let name = path.display().to_string();
                let results = match std::fs::read_to_string(path) {
                    Ok(text) => parse_documents(&name, &text),
                    Err(source) => vec![Err(ConfigError::Io { path: name.clone(), source })],
                };
                changed |= store.apply_source(&name, results, validate);
            }
        }
        for gone in self.seen.keys().filter(|p| !current.contains_key(*p)) {
            changed |= store.apply_source(&gone.display().to_string(), Vec::new(), &|_| Ok(()));
        }
        self.seen = current;
        Ok(changed)
    }
}

fn scan(dir: &Path) -> Result<BTreeMap<PathBuf, (u64, Option<SystemTime>)>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let io = |source| ConfigError::Io { path: d.display().to_string(), source };
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.insert(path, (meta.len(), meta.modified().ok()));
            }
        }
    }
    Ok(out)
}
