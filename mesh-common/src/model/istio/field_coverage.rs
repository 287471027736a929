//! No silent ignore, checked against the CRDs we ship: every property path of each
//! kind's `spec` schema in `deploy/crds/` is either enforced (the list below) or
//! reported as not supported ([`super::unsupported`]), itself or through an ancestor.
//!
//! The shipped schemas are trimmed: below the top-level fields most objects are
//! `x-kubernetes-preserve-unknown-fields` with no properties listed ("opaque"). Such a
//! subtree is enforced as a whole by the model (every spec type is `deny_unknown_fields`,
//! so a field it does not know is refused with its path, never dropped; the two raw-YAML
//! fields, `localityLbSetting` and cookie `attributes`, are reported whole) and its reported
//! fields come from the unsupported list; the walk covers whatever the schemas list, so
//! it grows with them when the full upstream schemas ship.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::unsupported;

/// Paths (indices written `[]`) each kind implements, as the shipped CRDs list them.
const ENFORCED: &[(&str, &[&str])] = &[
    (
        "DestinationRule",
        &[
            "spec.host",
            "spec.trafficPolicy",
            "spec.subsets",
            "spec.subsets[].name",
            "spec.subsets[].labels",
            "spec.subsets[].trafficPolicy",
            "spec.exportTo",
        ],
    ),
    (
        "VirtualService",
        &["spec.hosts", "spec.gateways", "spec.exportTo", "spec.http", "spec.tcp"],
    ),
    ("Gateway", &["spec.selector", "spec.servers"]),
    (
        "PeerAuthentication",
        &[
            "spec.selector",
            "spec.selector.matchLabels",
            "spec.mtls",
            "spec.mtls.mode",
            "spec.portLevelMtls",
        ],
    ),
    (
        "AuthorizationPolicy",
        &[
            "spec.selector",
            "spec.selector.matchLabels",
            "spec.targetRef",
            "spec.targetRefs",
            "spec.action",
            // CUSTOM: its targets refuse every request, said by the authorization warnings.
            "spec.provider",
            "spec.rules",
        ],
    ),
    ("HTTPRoute", HTTP_ROUTE),
    (
        "RequestAuthentication",
        &[
            "spec.selector",
            "spec.selector.matchLabels",
            "spec.targetRef",
            "spec.targetRefs",
            "spec.jwtRules",
        ],
    ),
];

/// The Gateway API CRD lists its whole schema: every path the waypoint compiles
/// (mesh-waypoint/src/config/http_route.rs), the reported ones left out.
const HTTP_ROUTE: &[&str] = &[
    "spec.parentRefs",
    "spec.parentRefs[].group",
    "spec.parentRefs[].kind",
    "spec.parentRefs[].namespace",
    "spec.parentRefs[].name",
    "spec.parentRefs[].port",
    "spec.rules",
    "spec.rules[].name",
    "spec.rules[].matches",
    "spec.rules[].matches[].path",
    "spec.rules[].matches[].path.type",
    "spec.rules[].matches[].path.value",
    "spec.rules[].matches[].headers",
    "spec.rules[].matches[].headers[].type",
    "spec.rules[].matches[].headers[].name",
    "spec.rules[].matches[].headers[].value",
    "spec.rules[].matches[].queryParams",
    "spec.rules[].matches[].queryParams[].type",
    "spec.rules[].matches[].queryParams[].name",
    "spec.rules[].matches[].queryParams[].value",
    "spec.rules[].matches[].method",
    "spec.rules[].filters",
    "spec.rules[].filters[].type",
    "spec.rules[].filters[].requestHeaderModifier",
    "spec.rules[].filters[].requestHeaderModifier.set",
    "spec.rules[].filters[].requestHeaderModifier.set[].name",
    "spec.rules[].filters[].requestHeaderModifier.set[].value",
    "spec.rules[].filters[].requestHeaderModifier.add",
    "spec.rules[].filters[].requestHeaderModifier.add[].name",
    "spec.rules[].filters[].requestHeaderModifier.add[].value",
    "spec.rules[].filters[].requestHeaderModifier.remove",
    "spec.rules[].filters[].responseHeaderModifier",
    "spec.rules[].filters[].responseHeaderModifier.set",
    "spec.rules[].filters[].responseHeaderModifier.set[].name",
    "spec.rules[].filters[].responseHeaderModifier.set[].value",
    "spec.rules[].filters[].responseHeaderModifier.add",
    "spec.rules[].filters[].responseHeaderModifier.add[].name",
    "spec.rules[].filters[].responseHeaderModifier.add[].value",
    "spec.rules[].filters[].responseHeaderModifier.remove",
    "spec.rules[].filters[].requestMirror",
    "spec.rules[].filters[].requestMirror.backendRef",
    "spec.rules[].filters[].requestMirror.backendRef.group",
    "spec.rules[].filters[].requestMirror.backendRef.kind",
    "spec.rules[].filters[].requestMirror.backendRef.name",
    "spec.rules[].filters[].requestMirror.backendRef.namespace",
    "spec.rules[].filters[].requestMirror.backendRef.port",
    "spec.rules[].filters[].requestMirror.percent",
    "spec.rules[].filters[].requestMirror.fraction",
    "spec.rules[].filters[].requestMirror.fraction.numerator",
    "spec.rules[].filters[].requestMirror.fraction.denominator",
    "spec.rules[].filters[].requestRedirect",
    "spec.rules[].filters[].requestRedirect.scheme",
    "spec.rules[].filters[].requestRedirect.hostname",
    "spec.rules[].filters[].requestRedirect.path",
    "spec.rules[].filters[].requestRedirect.path.type",
    "spec.rules[].filters[].requestRedirect.path.replaceFullPath",
    "spec.rules[].filters[].requestRedirect.path.replacePrefixMatch",
    "spec.rules[].filters[].requestRedirect.port",
    "spec.rules[].filters[].requestRedirect.statusCode",
    "spec.rules[].filters[].urlRewrite",
    "spec.rules[].filters[].urlRewrite.hostname",
    "spec.rules[].filters[].urlRewrite.path",
    "spec.rules[].filters[].urlRewrite.path.type",
    "spec.rules[].filters[].urlRewrite.path.replaceFullPath",
    "spec.rules[].filters[].urlRewrite.path.replacePrefixMatch",
    "spec.rules[].backendRefs",
    "spec.rules[].backendRefs[].group",
    "spec.rules[].backendRefs[].kind",
    "spec.rules[].backendRefs[].name",
    "spec.rules[].backendRefs[].namespace",
    "spec.rules[].backendRefs[].port",
    "spec.rules[].backendRefs[].weight",
    "spec.rules[].backendRefs[].filters",
    "spec.rules[].backendRefs[].filters[].type",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.set",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.set[].name",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.set[].value",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.add",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.add[].name",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.add[].value",
    "spec.rules[].backendRefs[].filters[].requestHeaderModifier.remove",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.set",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.set[].name",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.set[].value",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.add",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.add[].name",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.add[].value",
    "spec.rules[].backendRefs[].filters[].responseHeaderModifier.remove",
    "spec.rules[].timeouts",
    "spec.rules[].timeouts.request",
    "spec.rules[].timeouts.backendRequest",
];

/// What a CRD's `spec` schema lists, over all its served versions.
#[derive(Default)]
struct Schema {
    paths: BTreeSet<String>,
    /// Preserve-unknown objects that list no properties.
    opaque: BTreeSet<String>,
}

fn walk(node: &Value, path: &str, out: &mut Schema) {
    let props = node.get("properties").and_then(Value::as_object);
    let preserve = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if preserve && props.is_none_or(|p| p.is_empty()) {
        out.opaque.insert(path.to_owned());
    }
    for (name, child) in props.into_iter().flatten() {
        let p = format!("{path}.{name}");
        out.paths.insert(p.clone());
        walk(child, &p, out);
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), out);
    }
}

/// Kind → its `spec` schema, from every CRD file in `deploy/crds/`.
fn shipped_schemas() -> BTreeMap<String, Schema> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let mut out: BTreeMap<String, Schema> = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let crd: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .expect("spec.names.kind")
            .to_owned();
        let versions = crd["spec"]["versions"].as_array().expect("spec.versions");
        let schema = out.entry(kind).or_default();
        for v in versions {
            let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert!(spec.is_object(), "{}: a version without a spec schema", path.display());
            walk(spec, "spec", schema);
        }
    }
    out
}

fn reported(kind: &str) -> BTreeSet<String> {
    unsupported::patterns()
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, p)| p)
        .collect()
}

/// `path` itself or one of its ancestors is in `set`.
fn at_or_below(path: &str, set: &BTreeSet<String>) -> bool {
    set.iter().any(|s| {
        path == s
            || path
                .strip_prefix(s.as_str())
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    })
}

#[test]
fn every_shipped_crd_field_is_enforced_or_reported() {
    let schemas = shipped_schemas();
    let kinds: BTreeSet<&str> = schemas.keys().map(String::as_str).collect();
    let listed: BTreeSet<&str> = ENFORCED.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds, listed,
        "a kind in deploy/crds/ without its list here, or the reverse"
    );
    let mut gaps = Vec::new();
    for (kind, enforced) in ENFORCED {
        let schema = &schemas[*kind];
        let enforced: BTreeSet<String> = enforced.iter().map(|p| p.to_string()).collect();
        let reported = reported(kind);
        for path in &schema.paths {
            if !enforced.contains(path) && !at_or_below(path, &reported) {
                gaps.push(format!("{kind} {path}"));
            }
        }
        for path in &enforced {
            assert!(
                schema.paths.contains(path),
                "{kind} {path} is listed as enforced but is not in its CRD"
            );
        }
        eprintln!(
            "FIGURE {kind}: {} schema paths ({} enforced, {} reported), {} opaque subtrees",
            schema.paths.len(),
            enforced.len(),
            schema.paths.iter().filter(|p| at_or_below(p, &reported)).count(),
            schema.opaque.len(),
        );
    }
    assert!(
        gaps.is_empty(),
        "neither enforced nor reported as not supported (add to ENFORCED with the code that enforces it, or to unsupported.rs): {gaps:#?}"
    );
}

#[test]
fn every_reported_field_is_a_field_of_its_crd() {
    let schemas = shipped_schemas();
    for (kind, pattern) in unsupported::patterns() {
        let schema = &schemas[kind];
        // Below an opaque subtree the shipped schema cannot tell; the model's
        // deny_unknown_fields types can (the unsupported tests parse each pattern).
        assert!(
            schema.paths.contains(&pattern) || at_or_below(&pattern, &schema.opaque),
            "{kind} {pattern} is reported but its CRD has no such field"
        );
    }
}

#[test]
fn an_unlisted_field_is_a_gap() {
    let mut schema = Schema::default();
    let crd: Value = serde_json::json!({
        "properties": {
            "host": {"type": "string"},
            "extra": {"type": "object", "properties": {"deep": {"type": "string"}}},
            "items": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
        }
    });
    walk(&crd, "spec", &mut schema);
    let paths: Vec<&str> = schema.paths.iter().map(String::as_str).collect();
    assert_eq!(paths, ["spec.extra", "spec.extra.deep", "spec.host", "spec.items"]);
    assert_eq!(schema.opaque.iter().collect::<Vec<_>>(), ["spec.items[]"]);
    let reported: BTreeSet<String> = ["spec.extra".to_owned()].into();
    assert!(at_or_below("spec.extra.deep", &reported));
    assert!(!at_or_below("spec.extraneous", &reported));
    assert!(!at_or_below("spec.host", &reported));
}
