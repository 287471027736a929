//! `kubectl apply` semantics over the watched directory: every object gets its own
//! file named after kind/namespace/name, so applying a new version of an object
//! replaces the old one, whichever file it first came from.

use std::fmt;
use std::path::{Path, PathBuf};

use mesh_common::model::{ObjectRef, Resource, parse_documents};
use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "{object}: the namespace from the provided object {found:?} does not match the namespace {given:?}; \
         pass `-n {found}` to apply it there, or remove metadata.namespace"
    )]
    NamespaceMismatch {
        object: String,
        found: String,
        given: String,
    },
}

/// Where objects that name no namespace go, like kubectl's `-n` and current namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// Left as written (the mesh then reads a missing namespace as `default`).
    AsWritten,
    /// The default for objects without `metadata.namespace`; objects naming one keep it.
    Default(String),
    /// Given explicitly (`-n`): objects without one go there, objects naming another are refused.
    Explicit(String),
}

/// Kinds that live in no namespace (kubectl learns this from the API server's
/// discovery; the demo has none, so the well-known ones are listed).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CertificateSigningRequest",
    "GatewayClass",
];

/// What happened to one object, printed like kubectl: `virtualservice.networking.istio.io/reviews created`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub object: ObjectRef,
    /// `kind.group` in lower case (`virtualservice.networking.istio.io`, `service` for core kinds).
    pub resource: String,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Deleted,
    /// `delete` of an object the watched directory does not hold.
    NotFound,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::NotFound => "not found",
        })
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.resource, self.object.name, self.outcome)?;
        match (&self.outcome, &self.object.namespace) {
            (Outcome::NotFound, Some(ns)) => write!(f, " in namespace {ns}"),
            _ => Ok(()),
        }
    }
}

/// File name of one object in the watched directory.
pub fn file_name(r: &ObjectRef) -> String {
    let ns = r.namespace.as_deref().unwrap_or("_cluster");
    format!("{}.{}.{}.yaml", r.kind.to_lowercase(), ns, r.name)
}

/// One object of an input file, its namespace settled, ready to write.
struct Doc {
    object: ObjectRef,
    resource: String,
    text: String,
}

/// Splits `yaml` into objects, gives each its namespace per `ns`, and checks them all
/// before anything is written: one bad document refuses the whole input.
fn documents(source_name: &str, yaml: &str, ns: &Namespace) -> Result<Vec<Doc>, ApplyError> {
    if let Some(Err(e)) = parse_documents(source_name, yaml).into_iter().find(Result::is_err) {
        return Err(ApplyError::Invalid(e.to_string()));
    }
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let mut value = Value::deserialize(doc).map_err(|e| ApplyError::Invalid(format!("{source_name}: {e}")))?;
        if value.is_null() {
            continue;
        }
        let resource = resource_name(&value);
        settle_namespace(&mut value, ns, &resource)?;
        let text = serde_yaml::to_string(&value).map_err(|e| ApplyError::Invalid(format!("{source_name}: {e}")))?;
        let object = Resource::from_value(source_name, value)
            .map_err(|e| ApplyError::Invalid(e.to_string()))?
            .object_ref();
        out.push(Doc { object, resource, text });
    }
    Ok(out)
}

fn resource_name(v: &Value) -> String {
    let kind = v["kind"].as_str().unwrap_or("").to_lowercase();
    match v["apiVersion"].as_str().and_then(|a| a.rsplit_once('/')) {
        Some((group, _)) => format!("{kind}.{group}"),
        None => kind,
    }
}

fn settle_namespace(v: &mut Value, ns: &Namespace, resource: &str) -> Result<(), ApplyError> {
    let kind = v["kind"].as_str().unwrap_or("");
    if CLUSTER_SCOPED.contains(&kind) {
        return Ok(());
    }
    let name = v["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_mapping_mut) else {
        return Ok(());
    };
    let written = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    match (written, ns) {
        (None, Namespace::Default(n) | Namespace::Explicit(n)) => {
            meta.insert("namespace".into(), n.as_str().into());
        }
        (Some(found), Namespace::Explicit(given)) if found != *given => {
            return Err(ApplyError::NamespaceMismatch {
                object: format!("{resource}/{name}"),
                found,
                given: given.clone(),
            });
        }
        _ => {}
    }
    Ok(())
}

/// Checks `yaml` as [`apply`] would, writing nothing (to refuse several inputs at once).
pub fn check(source_name: &str, yaml: &str, ns: &Namespace) -> Result<(), ApplyError> {
    documents(source_name, yaml, ns).map(drop)
}

/// `kubectl apply -f`: writes each object of `yaml` to `dir` (atomically: temp +
/// rename), replacing the object with the same kind/namespace/name.
pub fn apply(dir: &Path, source_name: &str, yaml: &str, ns: &Namespace) -> Result<Vec<Change>, ApplyError> {
    let docs = documents(source_name, yaml, ns)?;
    let mut changes = Vec::new();
    for d in docs {
        let path = dir.join(file_name(&d.object));
        let outcome = match std::fs::read_to_string(&path) {
            Ok(old) if old == d.text => Outcome::Unchanged,
            Ok(_) => Outcome::Configured,
            Err(_) => Outcome::Created,
        };
        if outcome != Outcome::Unchanged {
            write_atomic(&path, &d.text)?;
        }
        changes.push(Change {
            object: d.object,
            resource: d.resource,
            outcome,
        });
    }
    Ok(changes)
}

/// `kubectl delete -f`: removes each object of `yaml` from `dir`; objects it does not
/// hold come back as [`Outcome::NotFound`] (the others are still deleted).
pub fn delete(dir: &Path, source_name: &str, yaml: &str, ns: &Namespace) -> Result<Vec<Change>, ApplyError> {
    let docs = documents(source_name, yaml, ns)?;
    let mut changes = Vec::new();
    for d in docs {
        let path = dir.join(file_name(&d.object));
        let outcome = match std::fs::remove_file(&path) {
            Ok(()) => Outcome::Deleted,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::NotFound,
            Err(source) => return Err(ApplyError::Write { path, source }),
        };
        changes.push(Change {
            object: d.object,
            resource: d.resource,
            outcome,
        });
    }
    Ok(changes)
}

/// [`apply`] with namespaces as written, for callers that only need the object names.
pub fn apply_objects(dir: &Path, source_name: &str, yaml: &str) -> Result<Vec<ObjectRef>, ApplyError> {
    Ok(apply(dir, source_name, yaml, &Namespace::AsWritten)?
        .into_iter()
        .map(|c| c.object)
        .collect())
}

pub fn write_atomic(path: &Path, text: &str) -> Result<(), ApplyError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    let io = |source| ApplyError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_object_and_replace_on_reapply() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: bookinfo}\nspec: {hosts: [reviews]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo}\n";
        let refs = apply_objects(dir.path(), "a.yaml", v1).unwrap();
        assert_eq!(refs.len(), 2);
        let path = dir.path().join("virtualservice.bookinfo.reviews.yaml");
        assert!(path.is_file());
        assert!(dir.path().join("namespace._cluster.bookinfo.yaml").is_file());
        let v2 = v1.replace("hosts: [reviews]", "hosts: [reviews, x]");
        apply_objects(dir.path(), "b.yaml", &v2).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("- x"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// Istio's own sample, unchanged: no metadata.namespace.
    const ISTIO_SAMPLE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n";

    #[test]
    fn objects_without_a_namespace_go_to_the_default_and_print_like_kubectl() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::Default("bookinfo".into());
        let changes = apply(dir.path(), "vs.yaml", ISTIO_SAMPLE, &ns).unwrap();
        let printed: Vec<String> = changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "virtualservice.networking.istio.io/reviews created",
                "namespace/extra created"
            ]
        );
        let written = std::fs::read_to_string(dir.path().join("virtualservice.bookinfo.reviews.yaml")).unwrap();
        assert!(written.contains("namespace: bookinfo"), "{written}");
        let ns_file = std::fs::read_to_string(dir.path().join("namespace._cluster.extra.yaml")).unwrap();
        assert!(
            !ns_file.contains("namespace:"),
            "cluster-scoped kinds get no namespace: {ns_file}"
        );
        let again = apply(dir.path(), "vs.yaml", ISTIO_SAMPLE, &ns).unwrap();
        assert!(again.iter().all(|c| c.outcome == Outcome::Unchanged), "{again:?}");
        let v3 = ISTIO_SAMPLE.replace("subset: v1", "subset: v3");
        assert_eq!(
            apply(dir.path(), "vs.yaml", &v3, &ns).unwrap()[0].to_string(),
            "virtualservice.networking.istio.io/reviews configured"
        );
        // Another -n puts the same file elsewhere; a namespace written in the object wins over a default.
        let other = apply(dir.path(), "vs.yaml", ISTIO_SAMPLE, &Namespace::Explicit("shop".into())).unwrap();
        assert_eq!(other[0].object.namespace.as_deref(), Some("shop"));
        let pinned = ISTIO_SAMPLE.replace("name: reviews\n", "name: reviews\n  namespace: team\n");
        assert_eq!(
            apply(dir.path(), "vs.yaml", &pinned, &ns).unwrap()[0]
                .object
                .namespace
                .as_deref(),
            Some("team")
        );
    }

    #[test]
    fn an_explicit_namespace_refuses_objects_naming_another() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = ISTIO_SAMPLE.replace("name: reviews\n", "name: reviews\n  namespace: team\n");
        let err = apply(dir.path(), "vs.yaml", &pinned, &Namespace::Explicit("bookinfo".into())).unwrap_err();
        assert!(
            err.to_string().contains("virtualservice.networking.istio.io/reviews"),
            "{err}"
        );
        assert!(
            err.to_string().contains("\"team\"") && err.to_string().contains("\"bookinfo\""),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    }

    #[test]
    fn delete_removes_what_apply_wrote_and_reports_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let ns = Namespace::Default("bookinfo".into());
        apply(dir.path(), "vs.yaml", ISTIO_SAMPLE, &ns).unwrap();
        let deleted = delete(dir.path(), "vs.yaml", ISTIO_SAMPLE, &ns).unwrap();
        let printed: Vec<String> = deleted.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "virtualservice.networking.istio.io/reviews deleted",
                "namespace/extra deleted"
            ]
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let again = delete(dir.path(), "vs.yaml", ISTIO_SAMPLE, &ns).unwrap();
        assert_eq!(
            again[0].to_string(),
            "virtualservice.networking.istio.io/reviews not found in namespace bookinfo"
        );
    }

    #[test]
    fn malformed_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = apply_objects(dir.path(), "bad.yaml", "kind: [").unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
