//! The cluster view the node daemon and the waypoint share: workloads (pods with an IPv4
//! address) by IP and by name, Services by name and by VIP, and namespaces — kept
//! current change by change from the configuration store ([`ClusterView::apply`]).
//!
//! Selector → pods and the enrollment rule are evaluated here and nowhere else. A
//! label index makes one Service's endpoints cost the size of its rarest selector
//! label's member set instead of a scan of every workload, and one pod's change touch
//! only the Services whose selector names one of its labels. The maps are persistent
//! (`imbl`): publishing the view after a change shares everything else with the
//! previous one, so readers keep a consistent snapshot at no copying cost.

mod labels;
mod service;
mod workload;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use imbl::{HashMap, OrdMap};
use serde::Serialize;

use crate::model::k8s::{Namespace, Pod, Service};
use crate::model::store::{Changes, ConfigStore};
use crate::model::{ObjectRef, Resource};

pub use labels::LabelIndex;
pub use service::{INGRESS_USE_WAYPOINT_LABEL, ServiceEntry};
pub use workload::Workload;

/// A namespaced object's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn of(r: &ObjectRef) -> Self {
        Self::new(r.namespace.as_deref().unwrap_or("default"), &r.name)
    }

    fn object_ref(&self, kind: &str) -> ObjectRef {
        ObjectRef::new(kind, Some(&self.namespace), &self.name)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    trust_domain: String,
    namespaces: OrdMap<String, Arc<Namespace>>,
    pods: HashMap<NamespacedName, Arc<Workload>>,
    /// The pod an IP means. Two pods may claim one IP for a moment (a terminating pod
    /// and its replacement): the newest wins, the others wait in `shadowed`.
    by_ip: HashMap<Ipv4Addr, Arc<Workload>>,
    shadowed: HashMap<Ipv4Addr, Vec<NamespacedName>>,
    services: HashMap<NamespacedName, Arc<ServiceEntry>>,
    by_vip: HashMap<Ipv4Addr, Arc<ServiceEntry>>,
    /// Labels of the pods in `by_ip`.
    pod_labels: LabelIndex<Ipv4Addr>,
    /// Services by every label of their selector: a pod's labels find the Services
    /// that may select it.
    selectors: LabelIndex<NamespacedName>,
}

/// What one [`ClusterView::apply`] changed, for consumers that follow it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ViewChanges {
    pub workloads: usize,
    pub services: usize,
    pub namespaces: usize,
}

impl ClusterView {
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            ..Self::default()
        }
    }

    /// The view of every object in `resources` (a waypoint snapshot's input).
    pub fn from_resources<'a>(trust_domain: &str, resources: impl IntoIterator<Item = &'a Resource>) -> Self {
        let mut store = ConfigStore::default();
        let all: Vec<_> = resources
            .into_iter()
            .filter(|r| matches!(r, Resource::Namespace(_) | Resource::Pod(_) | Resource::Service(_)))
            .map(|r| Ok(r.clone()))
            .collect();
        store.apply_source("view", all, &|_| Ok(()));
        let mut view = Self::new(trust_domain);
        view.apply(&store, &Changes::All);
        view
    }

    pub fn workload(&self, ip: Ipv4Addr) -> Option<&Arc<Workload>> {
        self.by_ip.get(&ip)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.by_ip.values()
    }

    pub fn workload_count(&self) -> usize {
        self.by_ip.len()
    }

    pub fn service(&self, vip: Ipv4Addr) -> Option<&Arc<ServiceEntry>> {
        self.by_vip.get(&vip)
    }

    pub fn service_named(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(&NamespacedName::new(namespace, name))
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.services.values()
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn namespace(&self, name: &str) -> Option<&Arc<Namespace>> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = (&String, &Arc<Namespace>)> {
        self.namespaces.iter()
    }

    /// Workloads of `svc`'s endpoints that are ready: the only ones load balancing may
    /// pick (like ztunnel).
    pub fn ready_endpoints<'a>(&'a self, svc: &'a ServiceEntry) -> impl Iterator<Item = &'a Arc<Workload>> {
        svc.endpoints
            .iter()
            .filter_map(|ip| self.workload(*ip))
            .filter(|w| w.ready)
    }

    /// The Service a connection to `w`'s `port` is for: among the Services whose
    /// endpoints include `w` and whose port targets `port` on it, the first by
    /// namespace/name (the label index finds the candidates; no scan of every Service).
    pub fn service_of(&self, w: &Workload, port: u16) -> Option<&Arc<ServiceEntry>> {
        let mut candidates = BTreeSet::new();
        for (k, v) in &w.labels {
            if let Some(keys) = self.selectors.get(&w.namespace, k, v) {
                candidates.extend(keys.iter());
            }
        }
        candidates
            .into_iter()
            .filter_map(|key| self.services.get(key))
            .find(|svc| {
                svc.endpoints.binary_search(&w.ip).is_ok()
                    && svc.ports.iter().any(|p| w.port(&p.target()) == Some(port))
            })
    }

    /// Workloads in `namespace` whose labels contain `selector`, by IP. An empty
    /// selector selects nothing (a Service without one has no automatic endpoints).
    pub fn select(&self, namespace: &str, selector: &std::collections::BTreeMap<String, String>) -> Vec<Ipv4Addr> {
        let Some(candidates) = self.pod_labels.candidates(namespace, selector) else {
            return Vec::new();
        };
        candidates
            .into_iter()
            .filter(|ip| self.by_ip.get(ip).is_some_and(|w| w.has_labels(selector)))
            .collect()
    }

    /// Brings the view up to date with `store` for `changes` (everything for
    /// [`Changes::All`]). Kinds other than Namespace, Pod and Service are ignored.
    pub fn apply(&mut self, store: &ConfigStore, changes: &Changes) -> ViewChanges {
        let mut dirty = Dirty::default();
        match changes {
            Changes::All => {
                *self = Self::new(&std::mem::take(&mut self.trust_domain));
                self.apply_all(store, &mut dirty);
            }
            Changes::Some(refs) => self.apply_refs(store, refs, &mut dirty),
        }
        for key in std::mem::take(&mut dirty.services) {
            self.update_service(store, &key);
        }
        dirty.counts
    }

    fn apply_all(&mut self, store: &ConfigStore, dirty: &mut Dirty) {
        for r in store.iter() {
            if let Resource::Namespace(n) = r {
                self.namespaces.insert(n.metadata.name.clone(), Arc::new(n.clone()));
                dirty.counts.namespaces += 1;
            }
        }
        for r in store.iter() {
            match r {
                Resource::Pod(p) => {
                    let key = NamespacedName::new(p.metadata.namespace_or_default(), &p.metadata.name);
                    self.update_pod(&key, Some(p), dirty);
                }
                Resource::Service(s) => {
                    dirty
                        .services
                        .insert(NamespacedName::new(s.metadata.namespace_or_default(), &s.metadata.name));
                }
                _ => {}
            }
        }
    }

    fn apply_refs(&mut self, store: &ConfigStore, refs: &BTreeSet<ObjectRef>, dirty: &mut Dirty) {
        for r in refs {
            match r.kind.as_str() {
                "Namespace" => self.update_namespace(store, &r.name, dirty),
                "Pod" => {
                    let pod = match store.get(r) {
                        Some(Resource::Pod(p)) => Some(p),
                        _ => None,
                    };
                    self.update_pod(&NamespacedName::of(r), pod, dirty);
                }
                "Service" => {
                    dirty.services.insert(NamespacedName::of(r));
                }
                _ => {}
            }
        }
    }

    /// A namespace's enrollment and waypoint labels are read by every pod and Service in
    /// it: all of them are recomputed.
    fn update_namespace(&mut self, store: &ConfigStore, name: &str, dirty: &mut Dirty) {
        dirty.counts.namespaces += 1;
        match store.get(&ObjectRef::new("Namespace", None, name)) {
            Some(Resource::Namespace(n)) => self.namespaces.insert(name.to_owned(), Arc::new(n.clone())),
            _ => self.namespaces.remove(name),
        };
        for r in store.in_namespace("Pod", name) {
            if let Resource::Pod(p) = r {
                self.update_pod(&NamespacedName::new(name, &p.metadata.name), Some(p), dirty);
            }
        }
        for r in store.in_namespace("Service", name) {
            dirty.services.insert(NamespacedName::new(name, &r.object_ref().name));
        }
    }

    fn update_pod(&mut self, key: &NamespacedName, pod: Option<&Pod>, dirty: &mut Dirty) {
        let namespace = self.namespaces.get(&key.namespace).map(Arc::as_ref);
        let new = pod
            .and_then(|p| Workload::from_pod(p, namespace, &self.trust_domain))
            .map(Arc::new);
        let old = match &new {
            Some(w) => self.pods.insert(key.clone(), w.clone()),
            None => self.pods.remove(key),
        };
        if old.is_none() && new.is_none() {
            return;
        }
        dirty.counts.workloads += 1;
        if let Some(old) = old {
            self.release_ip(old.ip, key, dirty);
        }
        if let Some(new) = new {
            if let Some(current) = self.by_ip.get(&new.ip).filter(|w| !w.is(key)) {
                let displaced = NamespacedName::new(&current.namespace, &current.name);
                self.shadowed.entry(new.ip).or_default().push(displaced);
            }
            self.set_ip(new.ip, Some(new), dirty);
        }
    }

    /// `key` no longer claims `ip`: the newest other claimant still holding it takes over.
    fn release_ip(&mut self, ip: Ipv4Addr, key: &NamespacedName, dirty: &mut Dirty) {
        if !self.by_ip.get(&ip).is_some_and(|w| w.is(key)) {
            if let Some(waiting) = self.shadowed.get_mut(&ip) {
                waiting.retain(|k| k != key);
            }
            return;
        }
        let mut next = None;
        while let Some(k) = self.shadowed.get_mut(&ip).and_then(Vec::pop) {
            if let Some(w) = self.pods.get(&k).filter(|w| w.ip == ip) {
                next = Some(w.clone());
                break;
            }
        }
        if self.shadowed.get(&ip).is_some_and(Vec::is_empty) {
            self.shadowed.remove(&ip);
        }
        self.set_ip(ip, next, dirty);
    }

    fn set_ip(&mut self, ip: Ipv4Addr, owner: Option<Arc<Workload>>, dirty: &mut Dirty) {
        let old = match &owner {
            Some(w) => self.by_ip.insert(ip, w.clone()),
            None => self.by_ip.remove(&ip),
        };
        for w in old.iter().chain(owner.iter()) {
            self.mark_selecting(w, dirty);
        }
        if let Some(old) = old {
            self.pod_labels.remove(&old.namespace, &old.labels, &ip);
        }
        if let Some(new) = owner {
            self.pod_labels.insert(&new.namespace, &new.labels, &ip);
        }
    }

    /// Services whose selector shares a label with `w` may have gained or lost it.
    fn mark_selecting(&self, w: &Workload, dirty: &mut Dirty) {
        for (k, v) in &w.labels {
            if let Some(services) = self.selectors.get(&w.namespace, k, v) {
                dirty.services.extend(services.iter().cloned());
            }
        }
    }

    fn update_service(&mut self, store: &ConfigStore, key: &NamespacedName) {
        let svc = match store.get(&key.object_ref("Service")) {
            Some(Resource::Service(s)) => Some(s),
            _ => None,
        };
        if let Some(old) = self.services.remove(key) {
            self.selectors.remove(&old.namespace, &old.selector, key);
            if let Some(vip) = old.vip.filter(|v| {
                self.by_vip
                    .get(v)
                    .is_some_and(|s| s.name == old.name && s.namespace == old.namespace)
            }) {
                self.by_vip.remove(&vip);
            }
        }
        let Some(svc) = svc else { return };
        let entry = Arc::new(self.entry(svc));
        self.selectors.insert(&entry.namespace, &entry.selector, key);
        if let Some(vip) = entry.vip {
            self.by_vip.insert(vip, entry.clone());
        }
        self.services.insert(key.clone(), entry);
    }

    fn entry(&self, svc: &Service) -> ServiceEntry {
        let ns = svc.metadata.namespace_or_default();
        let endpoints = self.select(ns, &svc.spec.selector);
        ServiceEntry::new(svc, self.namespaces.get(ns).map(Arc::as_ref), endpoints)
    }
}

#[derive(Default)]
struct Dirty {
    services: BTreeSet<NamespacedName>,
    counts: ViewChanges,
}

impl Serialize for ClusterView {
    /// Sorted by name, for `/config_dump`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut workloads: Vec<_> = self.by_ip.values().collect();
        workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let services: std::collections::BTreeMap<_, _> = self.services.iter().collect();
        let namespaces: Vec<_> = self.namespaces.values().collect();
        let mut st = s.serialize_struct("ClusterView", 3)?;
        st.serialize_field("namespaces", &namespaces)?;
        st.serialize_field("workloads", &workloads)?;
        st.serialize_field("services", &services.values().collect::<Vec<_>>())?;
        st.end()
    }
}
