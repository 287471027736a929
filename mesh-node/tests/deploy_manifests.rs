//! `deploy/` is validated against the Kubernetes API schemas (kubernetes-validate, for
//! the Kubernetes version k8s-openapi targets) and Istio custom resources against our
//! own CRD schemas.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// Matches the k8s-openapi feature (`v1_33`) in the workspace Cargo.toml.
const KUBERNETES_VERSION: &str = "1.33.0";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn all_yaml() -> Vec<PathBuf> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The strings of a YAML sequence.
fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence().unwrap().iter().filter_map(Value::as_str).collect()
}

fn is_kustomization(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "kustomization.yaml")
}

fn is_istio(doc: &Value) -> bool {
    doc["apiVersion"].as_str().is_some_and(|v| v.contains(".istio.io/"))
}

/// `kubernetes-validate`, however pip installed it.
fn validator() -> Command {
    for candidate in [
        &["kubernetes-validate"][..],
        &["python3", "-m", "kubernetes_validate"][..],
    ] {
        let probe = Command::new(candidate[0])
            .args(&candidate[1..])
            .arg("--version")
            .output();
        if probe.is_ok_and(|o| o.status.success()) {
            let mut c = Command::new(candidate[0]);
            c.args(&candidate[1..]);
            return c;
        }
    }
    panic!(
        "kubernetes-validate is not installed, so deploy/ cannot be checked against the Kubernetes schemas: \
         run `cargo xtask bootstrap` (it runs `pip install kubernetes-validate==1.37.0`)"
    );
}

#[test]
fn deploy_passes_kubernetes_validate() {
    // Kustomizations are not API objects; Istio kinds are checked against our CRDs below.
    let files: Vec<PathBuf> = all_yaml()
        .into_iter()
        .filter(|f| !is_kustomization(f) && !documents(f).iter().any(is_istio))
        .collect();
    assert!(
        files.len() >= 12,
        "expected the CRDs, install/ and waypoint/ manifests, found {files:?}"
    );
    let out = validator()
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate rejected deploy/:\n{report}");
    assert!(!report.contains("ERROR") && !report.contains("WARN"), "{report}");
}

#[test]
fn kustomizations_list_existing_files() {
    for k in all_yaml().iter().filter(|f| is_kustomization(f)) {
        let doc = &documents(k)[0];
        for r in doc["resources"].as_sequence().unwrap() {
            let target = k.parent().unwrap().join(r.as_str().unwrap());
            assert!(target.exists(), "{} lists missing {}", k.display(), target.display());
        }
    }
}

fn daemonset(name: &str) -> Value {
    let file = deploy_dir().join("install/daemonset.yaml");
    documents(&file)
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("DaemonSet {name} in {}", file.display()))
}

fn env(container: &Value, name: &str) -> Option<String> {
    container["env"].as_sequence()?.iter().find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(str::to_owned)
}

fn host_path_of(spec: &Value, container: &Value, mount: &str) -> Option<String> {
    let volume = container["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| m["mountPath"] == mount)?["name"]
        .clone();
    spec["volumes"].as_sequence()?.iter().find(|v| v["name"] == volume)?["hostPath"]["path"]
        .as_str()
        .map(str::to_owned)
}

/// What the hand-over needs from the DaemonSet (README.md, "Upgrades"): a surge pod
/// beside the old one, the shared state hostPath, no hostPort clash, a grace period
/// above the drain, a startup probe of its own, and an fd holder in its own DaemonSet.
#[test]
fn daemonset_rolls_out_by_hand_over() {
    let node = daemonset("mesh-node");
    let strategy = &node["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(
        strategy["rollingUpdate"]["maxSurge"], 1,
        "the new pod starts beside the old one"
    );
    assert_eq!(
        strategy["rollingUpdate"]["maxUnavailable"], 0,
        "the old pod stays until the new one is ready"
    );
    let spec = &node["spec"]["template"]["spec"];
    let daemon = &spec["containers"][0];
    assert_eq!(
        host_path_of(spec, daemon, "/var/lib/mesh").as_deref(),
        Some("/var/lib/mesh"),
        "handoff.sock and fdstore.sock on a hostPath both pods see"
    );
    assert!(
        daemon["ports"].is_null() && daemon["ports"].as_sequence().is_none(),
        "hostNetwork ports become hostPorts, which a surge pod cannot share"
    );
    let drain: u64 = env(daemon, "MESH_DRAIN_TIMEOUT_SECS").unwrap().parse().unwrap();
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(grace > drain, "grace {grace} s must exceed the drain {drain} s");
    assert_eq!(env(daemon, "MESH_FD_HOLDER_SPAWN").as_deref(), Some("false"));
    let started = env(daemon, "MESH_STARTED_FILE").unwrap();
    let probe = daemon["startupProbe"]["exec"]["command"].as_sequence().unwrap();
    assert!(probe.iter().any(|a| a == "started") && probe.iter().any(|a| a.as_str() == Some(&*started)));
    assert!(
        host_path_of(spec, daemon, "/run/mesh-node").is_none(),
        "the startup marker is the container's own"
    );

    let holder = daemonset("mesh-fd-holder");
    assert_eq!(
        holder["spec"]["updateStrategy"]["type"], "OnDelete",
        "a rollout never takes the holder down"
    );
    let hspec = &holder["spec"]["template"]["spec"];
    let c = &hspec["containers"][0];
    assert_eq!(
        host_path_of(hspec, c, "/var/lib/mesh").as_deref(),
        Some("/var/lib/mesh")
    );
    let args: Vec<&str> = strings(&c["args"]);
    assert_eq!(
        args,
        ["fd-holder", "--socket", "/var/lib/mesh/$(NODE_NAME)/fdstore.sock"]
    );
}

/// Istio CRs in deploy/ (samples) against deploy/crds: a structural check of the
/// OpenAPI subset our CRDs use (type, properties, required, enum, items,
/// additionalProperties, x-kubernetes-preserve-unknown-fields).
#[test]
fn samples_match_our_crd_schemas() {
    let crds = load_crds();
    assert_eq!(crds.len(), 7);
    let mut checked = 0;
    for file in &all_yaml() {
        for doc in documents(file).iter().filter(|d| is_istio(d)) {
            if let Err(e) = validate_cr(&crds, doc) {
                panic!("{}: {e}", file.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} custom resources checked");
}

#[test]
fn crd_check_rejects_bad_resources() {
    let crds = load_crds();
    let bad = |yaml: &str| validate_cr(&crds, &serde_yaml::from_str(yaml).unwrap()).unwrap_err();
    let e = bad(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: x}\nspec: {mtls: {mode: STRICTEST}}",
    );
    assert!(e.contains("spec.mtls.mode"), "{e}");
    let e =
        bad("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: reviews}");
    assert!(e.contains("spec.hosts: expected array"), "{e}");
    let e = bad("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: x}\nspec: {}");
    assert!(e.contains("not served"), "{e}");
    let e = bad("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\nspec: {subsets: []}");
    assert!(e.contains("spec.host: required"), "{e}");
}

/// Every kind the Kubernetes source watches (mesh-common/src/source/kube/kinds.rs) is
/// granted list+watch, and nothing else is: least privilege.
#[test]
fn rbac_grants_list_watch_on_exactly_the_watched_kinds() {
    let rbac = documents(&deploy_dir().join("install/rbac.yaml"));
    let role = rbac.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let mut granted = Vec::new();
    for rule in role["rules"].as_sequence().unwrap() {
        let verbs: Vec<&str> = strings(&rule["verbs"]);
        for r in rule["resources"].as_sequence().unwrap() {
            if verbs == ["list", "watch"] {
                granted.push(r.as_str().unwrap().to_owned());
            } else {
                assert_eq!(
                    (r.as_str().unwrap(), verbs.as_slice()),
                    ("events", &["create", "patch"][..])
                );
            }
        }
    }
    granted.sort();
    let kinds =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../mesh-common/src/source/kube/kinds.rs"))
            .unwrap();
    let mut watched: Vec<String> = watched_plurals(&kinds);
    watched.sort();
    assert_eq!(granted, watched);
    let text = std::fs::read_to_string(deploy_dir().join("install/rbac.yaml")).unwrap();
    assert!(
        !text.contains("secrets"),
        "no Secret access: the kubelet mounts the CA Secret"
    );
}

/// The args the DaemonSet and the waypoint template pass are flags the binaries
/// have: `<binary> <args> --help` fails on an unknown flag before printing help.
#[test]
fn manifests_pass_only_flags_the_binaries_accept() {
    let daemonset = documents(&deploy_dir().join("install/daemonset.yaml"));
    let waypoint = documents(&deploy_dir().join("waypoint/waypoint.yaml"));
    let ca = documents(&deploy_dir().join("install/ca.yaml"));
    let gateway = documents(&deploy_dir().join("gateway/gateway.yaml"));
    let containers = |docs: &[Value]| -> Vec<Value> {
        docs.iter()
            .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
            .flat_map(|d| {
                d["spec"]["template"]["spec"]["containers"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mesh-node")).parent().unwrap().to_owned();
    let mut checked = 0;
    for c in containers(&daemonset)
        .into_iter()
        .chain(containers(&waypoint))
        .chain(containers(&ca))
        .chain(containers(&gateway))
    {
        let command = c["command"][0].as_str().unwrap();
        let binary = bin_dir.join(Path::new(command).file_name().unwrap());
        let args: Vec<&str> = strings(&c["args"]);
        if !binary.exists() {
            assert!(
                command.ends_with("mesh-waypoint") || command.ends_with("mesh-ca"),
                "{} is not built",
                binary.display()
            );
            eprintln!("skipping {command}: not built (cargo build --workspace builds it)");
            continue;
        }
        let out = Command::new(&binary)
            .args(&args)
            .arg("--help")
            .env_clear()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command} {args:?}: {stderr}");
        checked += 1;
    }
    assert!(checked >= 1, "no container checked");
}

/// Issue 15: the node daemons hold no CA key. The DaemonSet mounts no Secret, no RBAC
/// rule bound to its ServiceAccount reaches `secrets`, and the only pod that mounts the
/// CA Secret `cacerts` runs as the CA's ServiceAccount.
#[test]
fn only_the_ca_can_read_the_ca_key() {
    let docs: Vec<Value> = all_yaml()
        .iter()
        .filter(|p| !is_kustomization(p))
        .flat_map(|p| documents(p))
        .collect();
    let daemonset = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let ds_sa = pod["serviceAccountName"].as_str().expect("DaemonSet ServiceAccount");
    for v in pod["volumes"].as_sequence().into_iter().flatten() {
        assert!(v["secret"].is_null(), "the DaemonSet mounts a Secret: {v:?}");
        for source in v["projected"]["sources"].as_sequence().into_iter().flatten() {
            assert!(source["secret"].is_null(), "the DaemonSet projects a Secret: {v:?}");
        }
    }
    let text = serde_yaml::to_string(pod).unwrap();
    for forbidden in ["secretKeyRef", "secretRef", "MESH_CA_DIR", "ca-dir"] {
        assert!(!text.contains(forbidden), "{forbidden} in the DaemonSet:\n{text}");
    }
    // Every rule bound to the DaemonSet's ServiceAccount, from any (Cluster)RoleBinding.
    let bound_roles: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| {
            d["subjects"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == ds_sa && s["namespace"] == "mesh-system")
        })
        .filter_map(|d| d["roleRef"]["name"].as_str())
        .collect();
    assert!(!bound_roles.is_empty(), "the DaemonSet's ServiceAccount has its roles");
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        if !bound_roles.contains(&name) {
            continue;
        }
        for rule in d["rules"].as_sequence().into_iter().flatten() {
            for r in rule["resources"].as_sequence().into_iter().flatten() {
                assert!(r != "secrets" && r != "*", "role {name} bound to {ds_sa} grants {r:?}");
            }
        }
    }
    // Pods that mount the CA Secret: exactly the CA's Deployment, as the CA's ServiceAccount.
    let mounting: Vec<(String, String)> = docs
        .iter()
        .filter(|d| d["spec"]["template"]["spec"].is_mapping())
        .filter(|d| {
            let spec = &d["spec"]["template"]["spec"];
            spec["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|v| v["secret"]["secretName"] == "cacerts")
        })
        .map(|d| {
            (
                str_of(&d["metadata"]["name"]),
                str_of(&d["spec"]["template"]["spec"]["serviceAccountName"]),
            )
        })
        .collect();
    assert_eq!(mounting, vec![("mesh-ca".to_owned(), "mesh-ca".to_owned())]);
}

/// Issue 15: the ingress gateway reads its `credentialName` Secrets in its own namespace
/// only. The one rule in deploy/ that reaches `secrets` (besides the CA's `cacerts`
/// mount) is a namespace-scoped Role in the gateway's namespace (get/list/watch), bound
/// by a RoleBinding there to the gateway Deployment's ServiceAccount alone; no
/// ClusterRole grants `secrets`.
#[test]
fn only_the_gateway_reads_secrets_and_only_in_its_namespace() {
    let docs: Vec<Value> = all_yaml()
        .iter()
        .filter(|p| !is_kustomization(p))
        .flat_map(|p| documents(p))
        .collect();
    let grants_secrets = |d: &Value| {
        d["rules"].as_sequence().into_iter().flatten().any(|rule| {
            rule["resources"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|r| r == "secrets" || r == "*")
        })
    };
    for d in docs.iter().filter(|d| d["kind"] == "ClusterRole") {
        assert!(
            !grants_secrets(d),
            "ClusterRole {} grants secrets",
            str_of(&d["metadata"]["name"])
        );
    }
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && grants_secrets(d))
        .collect();
    assert_eq!(roles.len(), 1, "exactly one Role grants secrets: {roles:?}");
    let role = roles[0];
    let (role_name, ns) = (
        str_of(&role["metadata"]["name"]),
        str_of(&role["metadata"]["namespace"]),
    );
    for rule in role["rules"].as_sequence().into_iter().flatten() {
        assert_eq!(rule["resources"], Value::from(vec!["secrets"]), "{rule:?}");
        assert_eq!(rule["verbs"], Value::from(vec!["get", "list", "watch"]), "{rule:?}");
    }
    let gateway = docs
        .iter()
        .find(|d| {
            d["kind"] == "Deployment"
                && d["spec"]["template"]["spec"]["containers"][0]["args"]
                    .as_sequence()
                    .is_some_and(|a| a.iter().any(|x| x == "gateway"))
        })
        .expect("the gateway Deployment");
    assert_eq!(
        str_of(&gateway["metadata"]["namespace"]),
        ns,
        "the Role is in the gateway's namespace"
    );
    let gateway_sa = str_of(&gateway["spec"]["template"]["spec"]["serviceAccountName"]);
    let bindings: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
        .filter(|d| d["roleRef"]["name"] == role_name.as_str())
        .collect();
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    let b = bindings[0];
    assert_eq!(b["kind"], "RoleBinding");
    assert_eq!(str_of(&b["metadata"]["namespace"]), ns);
    assert_eq!(b["roleRef"]["kind"], "Role");
    let subjects: Vec<(String, String)> = b["subjects"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|s| (str_of(&s["name"]), str_of(&s["namespace"])))
        .collect();
    assert_eq!(subjects, vec![(gateway_sa, ns)]);
}

/// The plural names in the `WATCHED` table: the second string literal of each
/// `core(..)` / `istio(..)` / `WatchedKind {..}` entry.
fn watched_plurals(source: &str) -> Vec<String> {
    let table = source
        .split("pub const WATCHED")
        .nth(1)
        .unwrap()
        .split("];")
        .next()
        .unwrap();
    // rustfmt splits long entries over several lines: read the table as one line.
    let flat = table.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut plurals = Vec::new();
    // Which quoted argument is the plural: core(kind, plural, ..), istio(group, kind, plural, ..),
    // WatchedKind { group, kind, plural, .. }.
    for (opener, index) in [("core(", 1), ("istio(", 2), ("WatchedKind {", 2)] {
        for entry in flat.split(opener).skip(1) {
            let end = entry.find([')', '}']).unwrap_or(entry.len());
            let quoted: Vec<&str> = entry[..end].split('"').skip(1).step_by(2).collect();
            plurals.extend(quoted.get(index).map(|s| s.to_string()));
        }
    }
    plurals
}

struct Crd {
    group: String,
    kind: String,
    /// (version, served, openAPIV3Schema)
    versions: Vec<(String, bool, Value)>,
}

fn load_crds() -> Vec<Crd> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir().join("crds"), &mut files);
    files
        .iter()
        .flat_map(|f| documents(f))
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .map(|d| {
            let spec = &d["spec"];
            let versions = spec["versions"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| {
                    let name = v["name"].as_str().unwrap().to_owned();
                    (
                        name,
                        v["served"].as_bool().unwrap_or(false),
                        v["schema"]["openAPIV3Schema"].clone(),
                    )
                })
                .collect();
            Crd {
                group: str_of(&spec["group"]),
                kind: str_of(&spec["names"]["kind"]),
                versions,
            }
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn validate_cr(crds: &[Crd], doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().ok_or("no apiVersion")?;
    let (group, version) = api_version.split_once('/').ok_or("apiVersion without group")?;
    let kind = doc["kind"].as_str().ok_or("no kind")?;
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or(format!("{kind}: metadata.name: required"))?;
    let crd = crds
        .iter()
        .find(|c| c.group == group && c.kind == kind)
        .ok_or(format!("{kind} {name}: no CRD for {group}"))?;
    let schema = crd
        .versions
        .iter()
        .find(|(v, served, _)| v == version && *served)
        .map(|(_, _, s)| s)
        .ok_or(format!("{kind} {name}: version {version} is not served by the CRD"))?;
    let mut body = doc.as_mapping().cloned().unwrap_or_default();
    for k in ["apiVersion", "kind", "metadata"] {
        body.remove(k);
    }
    check(schema, &Value::Mapping(body), "").map_err(|e| format!("{kind} {name}: {e}"))
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let at = if path.is_empty() { "<root>" } else { path };
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_mapping(),
        Some("array") => value.is_sequence(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_bool(),
        _ => true,
    };
    if !type_ok {
        return Err(format!(
            "{at}: expected {}",
            schema["type"].as_str().unwrap_or_default()
        ));
    }
    if let Some(allowed) = schema["enum"].as_sequence()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value:?} is not one of {allowed:?}"));
    }
    match value {
        Value::Mapping(map) => check_object(schema, map, path),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_object(schema: &Value, map: &Mapping, path: &str) -> Result<(), String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    for req in schema["required"].as_sequence().into_iter().flatten() {
        let key = req.as_str().unwrap_or_default();
        if !map.contains_key(key) {
            return Err(format!("{}: required", join(key)));
        }
    }
    let preserve = schema["x-kubernetes-preserve-unknown-fields"]
        .as_bool()
        .unwrap_or(false);
    for (k, v) in map {
        let key = k.as_str().ok_or(format!("{path}: non-string key"))?;
        let sub = if let Some(p) = schema["properties"].get(key) {
            p
        } else if let Some(a) = schema.get("additionalProperties") {
            a
        } else if preserve {
            continue;
        } else {
            return Err(format!("{}: unknown field", join(key)));
        };
        check(sub, v, &join(key))?;
    }
    Ok(())
}
