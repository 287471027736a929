//! Label index: `(namespace, key, value)` → members carrying that label. Selectors match
//! only inside a namespace, so a selector's candidates are its rarest label's members.

use std::collections::BTreeMap;
use std::hash::Hash;

use imbl::{HashMap, OrdSet};

type LabelKey = (String, String, String);

#[derive(Clone, Debug)]
pub struct LabelIndex<T: Clone + Ord> {
    members: HashMap<LabelKey, OrdSet<T>>,
}

impl<T: Clone + Ord> Default for LabelIndex<T> {
    fn default() -> Self {
        Self {
            members: HashMap::default(),
        }
    }
}

impl<T: Clone + Ord + Hash> LabelIndex<T> {
    pub fn insert<'a>(&mut self, ns: &str, labels: impl IntoIterator<Item = (&'a String, &'a String)>, member: &T) {
        for (k, v) in labels {
            self.members
                .entry((ns.to_owned(), k.clone(), v.clone()))
                .or_default()
                .insert(member.clone());
        }
    }

    pub fn remove<'a>(&mut self, ns: &str, labels: impl IntoIterator<Item = (&'a String, &'a String)>, member: &T) {
        for (k, v) in labels {
            let key = (ns.to_owned(), k.clone(), v.clone());
            if let Some(set) = self.members.get_mut(&key) {
                set.remove(member);
                if set.is_empty() {
                    self.members.remove(&key);
                }
            }
        }
    }

    /// Members with label `k=v` in `ns`.
    pub fn get(&self, ns: &str, k: &str, v: &str) -> Option<&OrdSet<T>> {
        self.members.get(&(ns.to_owned(), k.to_owned(), v.to_owned()))
    }

    /// The smallest member set among `selector`'s labels: every member matching the
    /// whole selector is in it. `None` for an empty selector.
    pub fn candidates(&self, ns: &str, selector: &BTreeMap<String, String>) -> Option<OrdSet<T>> {
        let mut best: Option<&OrdSet<T>> = None;
        for (k, v) in selector {
            match self.get(ns, k, v) {
                None => return Some(OrdSet::new()),
                Some(set) if best.is_none_or(|b| set.len() < b.len()) => best = Some(set),
                Some(_) => {}
            }
        }
        best.cloned()
    }
}
