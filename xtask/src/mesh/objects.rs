//! `kubectl apply` semantics over the watched directory: every object gets its own
//! file named after kind/namespace/name, so applying a new version of an object
//! replaces the old one, whichever file it first came from.

use std::path::{Path, PathBuf};

use mesh_common::model::{ObjectRef, parse_documents};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// File name of one object in the watched directory.
pub fn file_name(r: &ObjectRef) -> String {
    let ns = r.namespace.as_deref().unwrap_or("_cluster");
    format!("{}.{}.{}.yaml", r.kind.to_lowercase(), ns, r.name)
}

/// Splits `yaml` into objects and writes each to `dir` (atomically: temp + rename).
/// Documents that do not even parse are refused before anything is written.
pub fn apply_objects(dir: &Path, source_name: &str, yaml: &str) -> Result<Vec<ObjectRef>, ApplyError> {
    let parsed = parse_documents(source_name, yaml);
    let mut refs = Vec::new();
    for r in &parsed {
        match r {
            Ok(res) => refs.push(res.object_ref()),
            Err(e) => return Err(ApplyError::Invalid(e.to_string())),
        }
    }
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect();
    for (r, doc) in refs.iter().zip(docs) {
        let text = serde_yaml::to_string(&doc).map_err(|e| ApplyError::Invalid(format!("{r}: {e}")))?;
        write_atomic(&dir.join(file_name(r)), &text)?;
    }
    Ok(refs)
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

    #[test]
    fn malformed_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = apply_objects(dir.path(), "bad.yaml", "kind: [").unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
