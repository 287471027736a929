//! Turns one kind's watch events into store updates.
//!
//! Each watched object is its own store source, named `kube:<Kind>/<namespace>/<name>`
//! (`kube:<Kind>/<name>` when cluster-scoped): a bad object then rejects only itself and
//! keeps its own last good version, exactly like one file of the directory source.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::core::ApiResource;

use crate::model::Resource;
use crate::model::store::{ConfigStore, Validator};

/// An object the store refused (decode or validation failure), to log and report.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub object: ObjectReference,
    /// Operator-readable: `Kind namespace/name: field.path: problem`.
    pub message: String,
}

pub(crate) struct KindSync {
    resource: ApiResource,
    /// Sources this kind currently has in the store.
    known: BTreeSet<String>,
    /// Objects of a relist in progress (`Init` .. `InitDone`).
    relist: Option<Vec<DynamicObject>>,
    /// resourceVersion last reported as rejected, so a relist does not repeat the Event.
    reported: BTreeMap<String, String>,
    synced: bool,
}

impl KindSync {
    pub fn new(resource: ApiResource) -> Self {
        Self {
            resource,
            known: BTreeSet::new(),
            relist: None,
            reported: BTreeMap::new(),
            synced: false,
        }
    }

    pub fn kind(&self) -> &str {
        &self.resource.kind
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn relist_started(&mut self) {
        self.relist = Some(Vec::new());
    }

    pub fn relisted(&mut self, obj: DynamicObject) {
        self.relist.get_or_insert_with(Vec::new).push(obj);
    }

    /// The relist is complete: apply it and drop what the API server no longer has
    /// (objects deleted while we were not watching).
    pub fn relist_done(&mut self, store: &mut ConfigStore, validate: Validator<'_>) -> Vec<Rejection> {
        let objects = self.relist.take().unwrap_or_default();
        let mut listed = BTreeSet::new();
        let mut rejected = Vec::new();
        for obj in objects {
            listed.insert(self.source_name(&obj));
            rejected.extend(self.apply(store, obj, validate));
        }
        for gone in self.known.difference(&listed).cloned().collect::<Vec<_>>() {
            store.remove_source(&gone);
            self.forget(&gone);
        }
        self.synced = true;
        rejected
    }

    pub fn apply(&mut self, store: &mut ConfigStore, obj: DynamicObject, validate: Validator<'_>) -> Option<Rejection> {
        let name = self.source_name(&obj);
        let result = match self.to_value(&obj) {
            Ok(value) => Resource::from_value(&name, value),
            Err(e) => Err(e),
        };
        let report = store.apply_source(&name, vec![result], validate);
        self.known.insert(name.clone());
        if report.rejected.is_empty() {
            self.reported.remove(&name);
            return None;
        }
        let version = obj.metadata.resource_version.clone().unwrap_or_default();
        if self.reported.get(&name) == Some(&version) {
            return None;
        }
        self.reported.insert(name, version);
        Some(Rejection {
            object: self.reference(&obj),
            message: report.rejected.join("; "),
        })
    }

    pub fn delete(&mut self, store: &mut ConfigStore, obj: &DynamicObject) {
        let name = self.source_name(obj);
        store.remove_source(&name);
        self.forget(&name);
    }

    fn forget(&mut self, name: &str) {
        self.known.remove(name);
        self.reported.remove(name);
    }

    fn source_name(&self, obj: &DynamicObject) -> String {
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        match &obj.metadata.namespace {
            Some(ns) => format!("kube:{}/{ns}/{name}", self.resource.kind),
            None => format!("kube:{}/{name}", self.resource.kind),
        }
    }

    /// The object as the YAML a user would have written: list items from the API
    /// server carry no apiVersion/kind, so they come from the watched resource.
    fn to_value(&self, obj: &DynamicObject) -> Result<serde_yaml::Value, crate::model::ConfigError> {
        let mut json = serde_json::to_value(obj).map_err(|e| self.unreadable(obj, e.to_string()))?;
        if let Some(map) = json.as_object_mut() {
            map.insert("apiVersion".into(), self.resource.api_version.clone().into());
            map.insert("kind".into(), self.resource.kind.clone().into());
        }
        serde_yaml::to_value(json).map_err(|e| self.unreadable(obj, e.to_string()))
    }

    fn unreadable(&self, obj: &DynamicObject, message: String) -> crate::model::ConfigError {
        let r = self.reference(obj);
        let object = crate::model::ObjectRef::new(
            &self.resource.kind,
            r.namespace.as_deref(),
            r.name.as_deref().unwrap_or_default(),
        );
        crate::model::ConfigError::invalid(&object, "", message)
    }

    fn reference(&self, obj: &DynamicObject) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.resource.api_version.clone()),
            kind: Some(self.resource.kind.clone()),
            name: obj.metadata.name.clone(),
            namespace: obj.metadata.namespace.clone(),
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
            field_path: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConfigError;

    fn ok(_: &Resource) -> Result<(), ConfigError> {
        Ok(())
    }

    fn pod(name: &str, rv: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "a", "resourceVersion": rv},
            "spec": {"nodeName": "n1"}
        }))
        .unwrap()
    }

    fn pods() -> KindSync {
        KindSync::new(ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
        })
    }

    #[test]
    fn relist_removes_objects_deleted_while_not_watching() {
        let (mut sync, mut store) = (pods(), ConfigStore::default());
        sync.apply(&mut store, pod("p1", "1"), &ok);
        sync.apply(&mut store, pod("p2", "2"), &ok);
        sync.relist_started();
        sync.relisted(pod("p2", "3"));
        assert!(sync.relist_done(&mut store, &ok).is_empty());
        let names: Vec<_> = store.iter().map(|r| r.object_ref().name).collect();
        assert_eq!(names, vec!["p2".to_string()]);
        assert!(sync.synced());
    }

    #[test]
    fn bad_object_is_reported_once_per_version_and_keeps_last_good() {
        let (mut sync, mut store) = (pods(), ConfigStore::default());
        sync.apply(&mut store, pod("p1", "1"), &ok);
        let mut bad = pod("p1", "2");
        bad.data["spec"]["nodeName"] = serde_json::json!([1]);
        let r = sync.apply(&mut store, bad.clone(), &ok).expect("rejected");
        assert!(r.message.starts_with("Pod a/p1: spec.nodeName:"), "{}", r.message);
        assert_eq!(r.object.resource_version.as_deref(), Some("2"));
        assert!(
            sync.apply(&mut store, bad, &ok).is_none(),
            "same version reported twice"
        );
        let Some(Resource::Pod(p)) = store.iter().next() else {
            panic!("last good pod gone")
        };
        assert_eq!(p.spec.node_name.as_deref(), Some("n1"));
    }
}
