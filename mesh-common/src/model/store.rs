//! The configuration store both sources feed: objects by reference, with the
//! "last good version stays in force" rule applied in one place.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use super::{ConfigError, ObjectRef, Resource};

/// Semantic validation a consumer adds on top of decoding (e.g. the waypoint
/// compiles VirtualService regexes). An object it rejects keeps its last good version.
pub type Validator<'a> = &'a dyn Fn(&Resource) -> Result<(), ConfigError>;

/// What one apply changed; `rejected` holds one operator-readable line per problem.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: Vec<ObjectRef>,
    pub updated: Vec<ObjectRef>,
    pub removed: Vec<ObjectRef>,
    pub rejected: Vec<String>,
}

impl ApplyReport {
    pub fn is_noop(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty() && self.rejected.is_empty()
    }
}

/// How many object changes the store remembers for [`ConfigStore::changes_since`]: a
/// consumer further behind than this (the first list of a large cluster) rebuilds
/// from everything instead. 64k references are a few MiB.
pub const JOURNAL_CAPACITY: usize = 65_536;

/// What changed since a generation: these objects (added, updated or removed), or more
/// than the journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    All,
    Some(BTreeSet<ObjectRef>),
}

impl Changes {
    pub fn any(&self, mut f: impl FnMut(&ObjectRef) -> bool) -> bool {
        match self {
            Changes::All => true,
            Changes::Some(refs) => refs.iter().any(&mut f),
        }
    }
}

#[derive(Debug, Default)]
pub struct ConfigStore {
    objects: BTreeMap<ObjectRef, Resource>,
    by_source: BTreeMap<String, BTreeSet<ObjectRef>>,
    /// Current problems, per source, for readiness detail and config dumps.
    errors: BTreeMap<String, Vec<String>>,
    generation: u64,
    /// `(generation, object)` for the last [`JOURNAL_CAPACITY`] changes, oldest first.
    journal: VecDeque<(u64, ObjectRef)>,
    /// Changes at or below this generation have left the journal.
    forgotten: u64,
}

impl ConfigStore {
    pub fn get(&self, r: &ObjectRef) -> Option<&Resource> {
        self.objects.get(r)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.objects.values()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Increases on every apply that changed something; consumers rebuild on change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Objects of `kind` in `namespace`, by name.
    pub fn in_namespace<'a>(&'a self, kind: &str, namespace: &str) -> impl Iterator<Item = &'a Resource> + 'a {
        let from = ObjectRef::new(kind, Some(namespace), "");
        let (kind, namespace) = (kind.to_owned(), namespace.to_owned());
        self.objects
            .range((Bound::Included(from), Bound::Unbounded))
            .take_while(move |(r, _)| r.kind == kind && r.namespace.as_deref() == Some(namespace.as_str()))
            .map(|(_, o)| o)
    }

    /// Objects changed after generation `since` (what a consumer that last saw `since`
    /// must look at again).
    pub fn changes_since(&self, since: u64) -> Changes {
        if since < self.forgotten || since == 0 {
            return Changes::All;
        }
        let start = self.journal.partition_point(|(g, _)| *g <= since);
        Changes::Some(self.journal.range(start..).map(|(_, r)| r.clone()).collect())
    }

    pub fn errors(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.errors.iter().map(|(s, e)| (s.as_str(), e.as_slice()))
    }

    /// Replaces everything `source` (a file, a watch) contributed with `results`.
    ///
    /// A document that cannot even be identified (malformed YAML, no name) makes the
    /// whole source keep its previous objects: we cannot tell which object it meant,
    /// and dropping them all would turn a typo into an outage.
    pub fn apply_source(
        &mut self,
        source: &str,
        results: Vec<Result<Resource, ConfigError>>,
        validate: Validator<'_>,
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        let (fresh, unidentified, invalid) = self.sort_results(results, validate, &mut report);
        if unidentified {
            self.record_errors(source, &report);
            return report;
        }
        let previous = self.by_source.remove(source).unwrap_or_default();
        let mut now = BTreeSet::new();
        for resource in fresh {
            let r = resource.object_ref();
            now.insert(r.clone());
            self.put(r, resource, &mut report);
        }
        // A rejected object stays at its last good version, if it had one.
        now.extend(invalid.into_iter().filter(|r| self.objects.contains_key(r)));
        for gone in previous.difference(&now) {
            if self.objects.remove(gone).is_some() {
                report.removed.push(gone.clone());
            }
        }
        self.by_source.insert(source.to_owned(), now);
        self.record_errors(source, &report);
        report
    }

    /// Drops everything a source contributed (its file was deleted).
    pub fn remove_source(&mut self, source: &str) -> ApplyReport {
        self.apply_source(source, Vec::new(), &|_| Ok(()))
    }

    fn sort_results(
        &self,
        results: Vec<Result<Resource, ConfigError>>,
        validate: Validator<'_>,
        report: &mut ApplyReport,
    ) -> (Vec<Resource>, bool, Vec<ObjectRef>) {
        let (mut fresh, mut invalid, mut unidentified) = (Vec::new(), Vec::new(), false);
        for result in results {
            match result.and_then(|r| validate(&r).map(|()| r)) {
                Ok(resource) => fresh.push(resource),
                Err(e) => {
                    match object_of(&e) {
                        Some(r) => invalid.push(r),
                        None => unidentified = true,
                    }
                    report.rejected.push(e.to_string());
                }
            }
        }
        (fresh, unidentified, invalid)
    }

    fn put(&mut self, r: ObjectRef, resource: Resource, report: &mut ApplyReport) {
        match self.objects.insert(r.clone(), resource) {
            None => report.added.push(r),
            Some(old) if Some(&old) != self.objects.get(&r) => report.updated.push(r),
            Some(_) => {}
        }
    }

    /// A new set of errors is a change too: consumers show what was rejected
    /// (`/config_dump`, readiness) and must see it even when every object kept its
    /// last good version.
    fn record_errors(&mut self, source: &str, report: &ApplyReport) {
        let errors_changed = if report.rejected.is_empty() {
            self.errors.remove(source).is_some()
        } else {
            let old = self.errors.insert(source.to_owned(), report.rejected.clone());
            old.as_ref() != Some(&report.rejected)
        };
        let objects_changed = !report.added.is_empty() || !report.updated.is_empty() || !report.removed.is_empty();
        if objects_changed || errors_changed {
            self.generation += 1;
            let changed = report.added.iter().chain(&report.updated).chain(&report.removed);
            for r in changed {
                self.journal.push_back((self.generation, r.clone()));
            }
            while self.journal.len() > JOURNAL_CAPACITY {
                if let Some((g, _)) = self.journal.pop_front() {
                    self.forgotten = self.forgotten.max(g);
                }
            }
        }
    }
}

fn object_of(e: &ConfigError) -> Option<ObjectRef> {
    match e {
        ConfigError::Invalid { object, .. } | ConfigError::UnsupportedVersion { object, .. } => Some(object.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_documents;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a, labels: {v: '1'}}\n";
    const BAD_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec: {nodeName: [1]}\n";

    fn ok(_: &Resource) -> Result<(), ConfigError> {
        Ok(())
    }

    #[test]
    fn bad_update_keeps_last_good_version() {
        let mut store = ConfigStore::default();
        let r = store.apply_source("f", parse_documents("f", POD), &ok);
        assert_eq!(r.added.len(), 1);
        let r = store.apply_source("f", parse_documents("f", BAD_POD), &ok);
        assert_eq!(r.rejected.len(), 1);
        assert!(r.removed.is_empty());
        let Some(Resource::Pod(p)) = store.iter().next() else {
            panic!("pod gone")
        };
        assert_eq!(p.metadata.labels["v"], "1");
    }

    #[test]
    fn malformed_file_keeps_everything_it_had() {
        let mut store = ConfigStore::default();
        store.apply_source("f", parse_documents("f", POD), &ok);
        let r = store.apply_source("f", parse_documents("f", "{{{"), &ok);
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(store.iter().count(), 1);
        assert_eq!(store.errors().count(), 1);
    }

    #[test]
    fn new_errors_are_a_change_the_same_errors_again_are_not() {
        let mut store = ConfigStore::default();
        store.apply_source("f", parse_documents("f", POD), &ok);
        let g = store.generation();
        store.apply_source("f", parse_documents("f", "{{{"), &ok);
        assert_eq!(store.generation(), g + 1, "a rejection must reach the consumers");
        store.apply_source("f", parse_documents("f", "{{{"), &ok);
        assert_eq!(store.generation(), g + 1, "the same rejection again is no change");
        store.apply_source("f", parse_documents("f", POD), &ok);
        assert_eq!(store.generation(), g + 2, "the error cleared is a change");
        assert_eq!(store.errors().count(), 0);
    }

    #[test]
    fn removing_a_source_removes_its_objects() {
        let mut store = ConfigStore::default();
        store.apply_source("f", parse_documents("f", POD), &ok);
        let g = store.generation();
        let r = store.remove_source("f");
        assert_eq!(r.removed.len(), 1);
        assert_eq!(store.iter().count(), 0);
        assert!(store.generation() > g);
    }

    #[test]
    fn validator_rejection_names_the_object() {
        let mut store = ConfigStore::default();
        let deny = |r: &Resource| Err(ConfigError::invalid(&r.object_ref(), "spec.x", "nope"));
        let r = store.apply_source("f", parse_documents("f", POD), &deny);
        assert_eq!(r.rejected, vec!["Pod a/p: spec.x: nope".to_string()]);
        assert_eq!(store.iter().count(), 0);
    }
}
