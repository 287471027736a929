//! Objects by kind/namespace/name with one cluster-wide resourceVersion counter, and the
//! history of changes watches are served from (bounded: a watch from a version older
//! than the history gets `410 Gone`, like after etcd compaction).

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::kinds::Kind;

/// Changes kept for watches; older versions are "compacted".
pub const HISTORY: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub rv: u64,
    pub kind: &'static Kind,
    pub event: EventType,
    pub object: Value,
}

type Key = (&'static str, &'static str, String, String);

#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    rv: u64,
    /// Changes up to this version are no longer in `history`.
    compacted: u64,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            // Start above 0: kube-rs lists with resourceVersion=0 ("any").
            rv: 100,
            compacted: 100,
        }
    }
}

/// A watch asked for a version whose changes were compacted away.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired;

fn key(kind: &'static Kind, object: &Value) -> Key {
    let meta = &object["metadata"];
    let ns = if kind.namespaced {
        meta["namespace"].as_str().unwrap_or("default")
    } else {
        ""
    };
    (
        kind.group,
        kind.plural,
        ns.to_owned(),
        meta["name"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Equal but for what the server sets (`resourceVersion`, `uid`): an object applied again
/// from the same YAML, which carries neither, is no change.
fn same_content(stored: &Value, applied: &Value) -> bool {
    let without_server_fields = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("uid");
        }
        v
    };
    without_server_fields(stored) == without_server_fields(applied)
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Creates or replaces `object` (apiVersion/kind set to the served version); returns
    /// it as stored. An unchanged object keeps its version and makes no event.
    pub fn put(&mut self, kind: &'static Kind, mut object: Value) -> Value {
        object["apiVersion"] = kind.api_version().into();
        object["kind"] = kind.kind.into();
        if kind.namespaced && object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = "default".into();
        }
        let k = key(kind, &object);
        let previous = self.objects.get(&k);
        if let Some(prev) = previous.filter(|p| same_content(p, &object)) {
            return prev.clone();
        }
        let event = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let uid = previous
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
            .or_else(|| object["metadata"]["uid"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("00000000-0000-4000-8000-{:012x}", self.rv + 1));
        object["metadata"]["uid"] = uid.into();
        self.record(kind, event, object)
    }

    /// Removes the object named like `object`; `None` if there was none.
    pub fn delete(&mut self, kind: &'static Kind, object: &Value) -> Option<Value> {
        let mut namespaced = object.clone();
        if kind.namespaced && namespaced["metadata"]["namespace"].is_null() {
            namespaced["metadata"]["namespace"] = "default".into();
        }
        let old = self.objects.remove(&key(kind, &namespaced))?;
        Some(self.record(kind, EventType::Deleted, old))
    }

    fn record(&mut self, kind: &'static Kind, event: EventType, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = self.rv.to_string().into();
        if event != EventType::Deleted {
            self.objects.insert(key(kind, &object), object.clone());
        }
        self.history.push_back(Change {
            rv: self.rv,
            kind,
            event,
            object: object.clone(),
        });
        while self.history.len() > HISTORY {
            if let Some(c) = self.history.pop_front() {
                self.compacted = c.rv;
            }
        }
        object
    }

    /// Forgets every change so far and moves the version on, as a restarted API
    /// server finds etcd compacted and written to meanwhile: every watch resuming
    /// from a version it had seen gets `410 Gone` and relists.
    pub fn compact(&mut self) {
        self.rv += 1;
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Objects of `kind` (in `namespace` when given), in key order.
    pub fn list(&self, kind: &'static Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, ns, _), _)| *g == kind.group && *p == kind.plural && namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes of `kind` after version `since`.
    pub fn changes_since(&self, kind: &'static Kind, since: u64) -> Result<Vec<Change>, Expired> {
        if since < self.compacted {
            return Err(Expired);
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > since && std::ptr::eq(c.kind, kind))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static Kind {
        Kind::of("v1", "Pod").unwrap()
    }

    #[test]
    fn versions_events_and_compaction() {
        let mut s = Store::default();
        let start = s.resource_version();
        let a = s.put(pods(), json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {}}));
        assert_eq!(a["kind"], "Pod");
        let same = s.put(pods(), json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {}}));
        assert_eq!(
            same["metadata"]["resourceVersion"], a["metadata"]["resourceVersion"],
            "no-op"
        );
        s.put(
            pods(),
            json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {"nodeName": "n"}}),
        );
        s.delete(pods(), &json!({"metadata": {"name": "a", "namespace": "x"}}));
        let events: Vec<_> = s
            .changes_since(pods(), start)
            .unwrap()
            .iter()
            .map(|c| c.event)
            .collect();
        assert_eq!(events, [EventType::Added, EventType::Modified, EventType::Deleted]);
        assert!(s.list(pods(), None).is_empty());
        s.compact();
        assert_eq!(s.changes_since(pods(), start), Err(Expired));
        assert!(s.changes_since(pods(), s.resource_version()).unwrap().is_empty());
    }
}
