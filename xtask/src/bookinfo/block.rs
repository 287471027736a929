//! Blocking a misbehaving version and restoring it, the Istio-native way (the tutorial's
//! quiz): the Service's VirtualService is replaced by one that routes over the subsets
//! it routed to before, minus the blocked one, keeping their relative weights (over all
//! other subsets of the DestinationRule when no VirtualService routed by subset); restoring puts the saved
//! VirtualService back (or removes ours when there was none). One command in the demo:
//! `cargo xtask demo block reviews v3` / `cargo xtask demo restore reviews`.

use std::path::{Path, PathBuf};

use mesh_common::model::{ObjectRef, Resource, parse_documents};

use crate::mesh::objects::{ApplyError, apply_objects, file_name, write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error(
        "DestinationRule {namespace}/{service} not found in {dir}: blocking needs its subsets (apply destination-rule-all.yaml)"
    )]
    NoSubsets {
        namespace: String,
        service: String,
        dir: PathBuf,
    },
    #[error("DestinationRule {namespace}/{service} has no subset `{version}` (it has: {known})")]
    UnknownVersion {
        namespace: String,
        service: String,
        version: String,
        known: String,
    },
    #[error("blocking {version} would leave {namespace}/{service} with no subset to route to")]
    LastVersion {
        namespace: String,
        service: String,
        version: String,
    },
    #[error("nothing to restore for {namespace}/{service}: it is not blocked")]
    NotBlocked { namespace: String, service: String },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// Where the replaced VirtualService is kept while blocked: beside, not inside, the
/// watched directory.
fn saved_path(dir: &Path, namespace: &str, service: &str) -> PathBuf {
    let parent = dir.parent().unwrap_or(dir);
    parent.join("blocked").join(format!("{namespace}.{service}.yaml"))
}

fn vs_ref(namespace: &str, service: &str) -> ObjectRef {
    ObjectRef {
        kind: "VirtualService".into(),
        namespace: Some(namespace.into()),
        name: service.into(),
    }
}

fn subsets(dir: &Path, namespace: &str, service: &str) -> Result<Vec<String>, BlockError> {
    let dr = ObjectRef {
        kind: "DestinationRule".into(),
        namespace: Some(namespace.into()),
        name: service.into(),
    };
    let path = dir.join(file_name(&dr));
    let missing = || BlockError::NoSubsets {
        namespace: namespace.into(),
        service: service.into(),
        dir: dir.into(),
    };
    let text = std::fs::read_to_string(&path).map_err(|_| missing())?;
    parse_documents(&path.display().to_string(), &text)
        .into_iter()
        .find_map(|r| match r {
            Ok(Resource::DestinationRule(d)) => Some(d.spec.subsets.into_iter().map(|s| s.name).collect()),
            _ => None,
        })
        .ok_or_else(missing)
}

/// (subset, weight) of the first HTTP route's destinations in `yaml`'s VirtualService.
fn routed(yaml: &str) -> Vec<(String, i64)> {
    let vs = parse_documents("current", yaml).into_iter().find_map(|r| match r {
        Ok(Resource::VirtualService(v)) => Some(v),
        _ => None,
    });
    let Some(route) = vs.and_then(|v| v.spec.http.into_iter().next()) else {
        return Vec::new();
    };
    let n = route.route.len() as i64;
    route
        .route
        .into_iter()
        .filter_map(|d| Some((d.destination.subset?, d.weight.unwrap_or(if n == 1 { 100 } else { 0 }))))
        .collect()
}

/// Routes `service` away from `version`; returns the remaining (subset, weight).
pub fn block(dir: &Path, namespace: &str, service: &str, version: &str) -> Result<Vec<(String, u32)>, BlockError> {
    let all = subsets(dir, namespace, service)?;
    if !all.iter().any(|s| s == version) {
        return Err(BlockError::UnknownVersion {
            namespace: namespace.into(),
            service: service.into(),
            version: version.into(),
            known: all.join(", "),
        });
    }
    let current = dir.join(file_name(&vs_ref(namespace, service)));
    let saved = saved_path(dir, namespace, service);
    // While blocked, the saved original (not our own rewrite) says what was routed.
    let original = std::fs::read_to_string(&saved)
        .or_else(|_| std::fs::read_to_string(&current))
        .unwrap_or_default();
    let mut keep: Vec<(String, i64)> = routed(&original)
        .into_iter()
        .filter(|(s, w)| s != version && *w > 0)
        .collect();
    if keep.is_empty() && routed(&original).is_empty() {
        keep = all.iter().filter(|s| *s != version).map(|s| (s.clone(), 1)).collect();
    }
    if keep.is_empty() {
        return Err(BlockError::LastVersion {
            namespace: namespace.into(),
            service: service.into(),
            version: version.into(),
        });
    }
    let keep = normalize(&keep);
    let saved = saved_path(dir, namespace, service);
    if !saved.exists() {
        // Keep the user's own VirtualService (or mark that there was none).
        let before = std::fs::read_to_string(&current).unwrap_or_default();
        if let Some(p) = saved.parent() {
            std::fs::create_dir_all(p).map_err(|source| BlockError::Read { path: p.into(), source })?;
        }
        write_atomic(&saved, &before)?;
    }
    apply_objects(
        dir,
        &format!("block {service} {version}"),
        &routes_yaml(namespace, service, &keep),
    )?;
    Ok(keep)
}

/// Scales weights to sum to exactly 100, keeping their ratios (largest remainders).
fn normalize(w: &[(String, i64)]) -> Vec<(String, u32)> {
    let total: i64 = w.iter().map(|(_, x)| x).sum::<i64>().max(1);
    let mut out: Vec<(String, u32)> = w.iter().map(|(s, x)| (s.clone(), (x * 100 / total) as u32)).collect();
    let mut rest = 100 - out.iter().map(|(_, x)| x).sum::<u32>();
    for o in out.iter_mut() {
        if rest == 0 {
            break;
        }
        o.1 += 1;
        rest -= 1;
    }
    out
}

/// Puts back the VirtualService that [`block`] replaced.
pub fn restore(dir: &Path, namespace: &str, service: &str) -> Result<(), BlockError> {
    let saved = saved_path(dir, namespace, service);
    let before = std::fs::read_to_string(&saved).map_err(|_| BlockError::NotBlocked {
        namespace: namespace.into(),
        service: service.into(),
    })?;
    let current = dir.join(file_name(&vs_ref(namespace, service)));
    if before.trim().is_empty() {
        let _ = std::fs::remove_file(&current);
    } else {
        write_atomic(&current, &before)?;
    }
    let _ = std::fs::remove_file(&saved);
    Ok(())
}

fn routes_yaml(namespace: &str, service: &str, subsets: &[(String, u32)]) -> String {
    let mut routes = String::new();
    for (s, weight) in subsets {
        routes.push_str(&format!(
            "    - destination: {{host: {service}, subset: {s}}}\n      weight: {weight}\n"
        ));
    }
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {service}\n  namespace: {namespace}\nspec:\n  hosts: [{service}]\n  http:\n  - route:\n{routes}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: bookinfo}\n\
                      spec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n";

    #[test]
    fn block_routes_around_a_version_and_restore_puts_the_original_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("config");
        std::fs::create_dir_all(&dir).unwrap();
        apply_objects(&dir, "dr", DR).unwrap();
        let original = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: bookinfo}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
        apply_objects(&dir, "vs", original).unwrap();
        let vs = dir.join(file_name(&vs_ref("bookinfo", "reviews")));
        // Only v3 was routed: nothing would be left.
        assert!(matches!(
            block(&dir, "bookinfo", "reviews", "v3"),
            Err(BlockError::LastVersion { .. })
        ));
        std::fs::remove_file(&vs).unwrap();
        // No VirtualService: every other subset, equally.
        assert_eq!(
            block(&dir, "bookinfo", "reviews", "v3").unwrap(),
            vec![("v1".into(), 50), ("v2".into(), 50)]
        );
        let blocked = std::fs::read_to_string(&vs).unwrap();
        assert!(!blocked.contains("v3") && blocked.contains("weight: 50"), "{blocked}");
        restore(&dir, "bookinfo", "reviews").unwrap();
        assert!(!vs.exists(), "restored to no VirtualService");
        let split = original.replace("- destination: {host: reviews, subset: v3}", "- destination: {host: reviews, subset: v1}\n      weight: 20\n    - destination: {host: reviews, subset: v2}\n      weight: 60\n    - destination: {host: reviews, subset: v3}\n      weight: 20");
        apply_objects(&dir, "vs", &split).unwrap();
        let before = std::fs::read_to_string(&vs).unwrap();
        assert_eq!(
            block(&dir, "bookinfo", "reviews", "v3").unwrap(),
            vec![("v1".into(), 25), ("v2".into(), 75)],
            "ratios kept"
        );
        let parsed = parse_documents("b", &blocked);
        assert!(
            matches!(parsed.first(), Some(Ok(Resource::VirtualService(_)))),
            "valid Istio YAML: {parsed:?}"
        );
        restore(&dir, "bookinfo", "reviews").unwrap();
        assert_eq!(std::fs::read_to_string(&vs).unwrap(), before);
        assert!(matches!(
            restore(&dir, "bookinfo", "reviews"),
            Err(BlockError::NotBlocked { .. })
        ));
        assert!(matches!(
            block(&dir, "bookinfo", "reviews", "v9"),
            Err(BlockError::UnknownVersion { .. })
        ));
        assert_eq!(
            normalize(&[("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]),
            vec![("a".into(), 34), ("b".into(), 33), ("c".into(), 33)]
        );
    }
}
