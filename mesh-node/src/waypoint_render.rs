//! `mesh-node waypoint render`: the Kubernetes objects of one namespace's waypoint,
//! like `istioctl waypoint apply` (ServiceAccount + Deployment + Service, and
//! the ClusterRoleBinding that lets it read the mesh configuration).
//!
//! Selection follows Istio: a namespace or Service labelled
//! `istio.io/use-waypoint: <name>` sends its traffic to the waypoint Service `<name>`
//! in the same namespace, on port 15008 (HBONE). The waypoint's identity is its
//! ServiceAccount, `spiffe://cluster.local/ns/<namespace>/sa/<name>`.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

pub const DEFAULT_NAME: &str = "waypoint";
/// The image `deploy/Containerfile` builds (both binaries).
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/mesh-io/mesh:", env!("CARGO_PKG_VERSION"));
/// Label Istio puts on waypoint pods; the Service selects on it.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

#[derive(Debug, Subcommand)]
pub enum WaypointCommand {
    /// Print a waypoint's ServiceAccount, ClusterRoleBinding, Deployment and Service as
    /// YAML, for `kubectl apply -f -`.
    Render(RenderArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Namespace the waypoint serves (and runs in).
    #[arg(long, short = 'n', value_parser = dns_label)]
    pub namespace: String,
    /// Waypoint name: the value of `istio.io/use-waypoint` that selects it.
    #[arg(long, default_value = DEFAULT_NAME, value_parser = dns_label)]
    pub name: String,
    /// Image with the mesh-waypoint binary (built by deploy/Containerfile).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
}

/// Namespace and object names must be RFC 1123 labels; say so before kubectl does.
fn dns_label(s: &str) -> Result<String, String> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends =
        s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_chars && ok_ends && s.len() <= 63 {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a valid Kubernetes name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

pub fn run(cmd: WaypointCommand) -> anyhow::Result<()> {
    let WaypointCommand::Render(args) = cmd;
    let spec = WaypointSpec {
        name: args.name,
        image: args.image,
        replicas: args.replicas,
        ..WaypointSpec::new(&args.namespace)
    };
    std::io::stdout().lock().write_all(render(&spec)?.as_bytes())?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct WaypointSpec {
    pub namespace: String,
    pub name: String,
    pub image: String,
    pub replicas: u32,
}

impl WaypointSpec {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: DEFAULT_NAME.into(),
            image: DEFAULT_IMAGE.into(),
            replicas: 1,
        }
    }

    fn labels(&self) -> Value {
        json!({
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": "waypoint",
            "app.kubernetes.io/part-of": "mesh",
            GATEWAY_NAME_LABEL: self.name,
            "istio.io/waypoint-for": "service",
        })
    }

    fn metadata(&self) -> Value {
        json!({"name": self.name, "namespace": self.namespace, "labels": self.labels()})
    }
}

/// The objects, in apply order.
pub fn objects(spec: &WaypointSpec) -> Vec<Value> {
    vec![
        service_account(spec),
        role_binding(spec),
        deployment(spec),
        service(spec),
    ]
}

/// Multi-document YAML, with a header saying how to select the waypoint.
pub fn render(spec: &WaypointSpec) -> Result<String, serde_yaml::Error> {
    let mut out = format!(
        "# Waypoint `{name}` for namespace `{ns}`. Select it with:\n\
         #   kubectl label namespace {ns} istio.io/use-waypoint={name}\n\
         # or, for one Service: kubectl label service -n {ns} <service> istio.io/use-waypoint={name}\n",
        name = spec.name,
        ns = spec.namespace
    );
    for object in objects(spec) {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&object)?);
    }
    Ok(out)
}

fn service_account(spec: &WaypointSpec) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": spec.metadata()})
}

/// The waypoint reads the same kinds as mesh-node (ClusterRole `mesh-config-reader`
/// from `deploy/install/rbac.yaml`): Services and endpoints of any namespace it routes to.
fn role_binding(spec: &WaypointSpec) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("mesh-waypoint-{}-{}", spec.namespace, spec.name), "labels": spec.labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mesh-config-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": spec.name, "namespace": spec.namespace}],
    })
}

fn service(spec: &WaypointSpec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": spec.metadata(),
        "spec": {
            "selector": {GATEWAY_NAME_LABEL: spec.name},
            "ports": [
                {"name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP", "appProtocol": "all"},
                {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                {"name": "metrics", "port": 15020, "targetPort": 15020, "protocol": "TCP"},
            ],
        },
    })
}

fn deployment(spec: &WaypointSpec) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": spec.metadata(),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: spec.name}},
            "template": {
                "metadata": {
                    "labels": spec.labels(),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "15020"},
                },
                "spec": {
                    "serviceAccountName": spec.name,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container(spec)],
                    // The certificate comes from mesh-ca by CSR (key kept in the process):
                    // a token bound to this pod, and the root published by the CA.
                    "volumes": [
                        {"name": "mesh-ca-token", "projected": {"sources": [
                            {"serviceAccountToken": {"audience": "mesh-ca", "expirationSeconds": 3600, "path": "mesh-ca-token"}},
                        ]}},
                        {"name": "mesh-ca-root-cert", "configMap": {"name": "mesh-ca-root-cert"}},
                    ],
                },
            },
        },
    })
}

fn container(spec: &WaypointSpec) -> Value {
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    json!({
        "name": "waypoint",
        "image": spec.image,
        "command": ["/usr/local/bin/mesh-waypoint"],
        // Configuration from the API server (mesh-common's Kubernetes source, all nodes).
        "args": ["run", "--kubernetes"],
        "env": [
            {"name": "WAYPOINT_NAME", "value": spec.name},
            {"name": "MESH_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName")},
            {"name": "MESH_SERVICE_ACCOUNT", "valueFrom": field("spec.serviceAccountName")},
            {"name": "MESH_CA_ADDRESS", "value": "https://mesh-ca.mesh-system.svc:15012"},
            {"name": "MESH_CA_ROOT_CERT", "value": "/var/run/mesh/root-cert/root-cert.pem"},
            {"name": "MESH_CA_TOKEN_FILE", "value": "/var/run/secrets/tokens/mesh-ca-token"},
            {"name": "NODE_NAME", "valueFrom": field("spec.nodeName")},
            // Istio's request metrics for Prometheus (the scrape annotations name this port).
            {"name": "MESH_STATS_ADDR", "value": "0.0.0.0:15020"},
            // glibc's memcpy slows proxies by ~28% on this CPU class (docs/tunnel-tuning.md).
            {"name": "GLIBC_TUNABLES", "value": "glibc.cpu.x86_rep_movsb_threshold=4294967295"},
        ],
        "ports": [
            {"name": "mesh", "containerPort": 15008, "protocol": "TCP"},
            {"name": "status-port", "containerPort": 15021, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 15020, "protocol": "TCP"},
        ],
        "volumeMounts": [
            {"name": "mesh-ca-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
            {"name": "mesh-ca-root-cert", "mountPath": "/var/run/mesh/root-cert", "readOnly": true},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}, "initialDelaySeconds": 10, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 1337,
            "capabilities": {"drop": ["ALL"]},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_common::model::{Resource, parse_documents};

    fn docs(text: &str) -> Vec<serde_yaml::Value> {
        use serde::Deserialize;
        serde_yaml::Deserializer::from_str(text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect()
    }

    #[test]
    fn renders_service_account_deployment_and_service() {
        let mut spec = WaypointSpec::new("bookinfo");
        spec.name = "reviews-wp".into();
        let text = render(&spec).unwrap();
        let docs = docs(&text);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ServiceAccount", "ClusterRoleBinding", "Deployment", "Service"]);
        for d in docs.iter().filter(|d| d["kind"] != "ClusterRoleBinding") {
            assert_eq!(d["metadata"]["name"], "reviews-wp");
            assert_eq!(d["metadata"]["namespace"], "bookinfo");
        }
        assert_eq!(docs[1]["subjects"][0]["namespace"], "bookinfo");
        assert_eq!(docs[1]["subjects"][0]["name"], "reviews-wp");
        let (deploy, svc) = (&docs[2], &docs[3]);
        let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
        for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(&pod_labels[k], v, "the Service selects the waypoint pods");
        }
        assert_eq!(deploy["spec"]["selector"]["matchLabels"], svc["spec"]["selector"]);
        assert_eq!(deploy["spec"]["template"]["spec"]["serviceAccountName"], "reviews-wp");
        let ports: Vec<u64> = svc["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [15008, 15021, 15020]);
        assert!(text.contains("istio.io/use-waypoint=reviews-wp"));
    }

    #[test]
    fn rendered_objects_load_into_the_mesh_model() {
        let text = render(&WaypointSpec::new("bookinfo")).unwrap();
        let parsed = parse_documents("waypoint", &text);
        assert_eq!(parsed.len(), 4);
        let Ok(Resource::Service(svc)) = &parsed[3] else {
            panic!("{:?}", parsed[3])
        };
        assert_eq!(svc.metadata.name, DEFAULT_NAME);
        assert_eq!(svc.spec.ports[0].port, 15008);
    }

    #[test]
    fn cli_parses_render() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "mesh-node",
            "waypoint",
            "render",
            "--namespace",
            "bookinfo",
            "--name",
            "wp",
        ])
        .unwrap();
        let crate::cli::Command::Waypoint(WaypointCommand::Render(args)) = cli.command else {
            panic!("not render")
        };
        assert_eq!(
            (args.namespace.as_str(), args.name.as_str(), args.replicas),
            ("bookinfo", "wp", 1)
        );
        let err = crate::cli::Cli::try_parse_from(["mesh-node", "waypoint", "render", "--namespace", "Book_Info"])
            .unwrap_err();
        assert!(err.to_string().contains("not a valid Kubernetes name"), "{err}");
    }

    /// `deploy/waypoint/` is this renderer's output for `default/waypoint`; keep them equal.
    #[test]
    fn deploy_template_matches_the_renderer() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/waypoint/waypoint.yaml");
        let rendered = render(&WaypointSpec::new("default")).unwrap();
        if std::env::var_os("MESH_BLESS").is_some() {
            std::fs::write(path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            docs(&on_disk),
            docs(&rendered),
            "regenerate {path}: MESH_BLESS=1 cargo test -p mesh-node deploy_template"
        );
    }
}
