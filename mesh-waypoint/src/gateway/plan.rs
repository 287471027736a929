//! What the gateway serves, compiled from the `Gateway` objects that select it:
//! one [`PortPlan`] per distinct `port.number`, each with its servers (hosts,
//! `httpsRedirect`, certificate) and, for HTTPS, a rustls config choosing the
//! certificate by SNI. A server that does not compile is reported with its object
//! and field path and keeps its last good version, if it had one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use mesh_common::model::istio::networking::Gateway;
use mesh_common::model::istio::networking::gateway::{Server, ServerTlsSettings};
use mesh_common::model::k8s::Secret;
use mesh_common::model::{FieldError, ObjectRef, Resource};
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;

use super::identity::GatewayIdentity;
use super::secret;
use super::server_host::ServerHost;
use super::tls;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    /// HTTP/1.1 and h2 prior knowledge (`HTTP`, `HTTP2`, `GRPC`, `GRPC-WEB`).
    Http,
    /// TLS terminated here (`tls.mode: SIMPLE`), then HTTP/1.1 or h2 by ALPN.
    Https,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Credential {
    /// `namespace/name` of the Secret.
    pub secret: String,
    pub key: Arc<CertifiedKey>,
}

#[derive(Clone, Debug)]
pub struct ServerPlan {
    pub object: ObjectRef,
    /// `namespace/name`, as VirtualServices' `gateways` are normalized.
    pub gateway: String,
    pub index: usize,
    pub port: u16,
    pub protocol: Protocol,
    pub hosts: Vec<ServerHost>,
    pub https_redirect: bool,
    pub credential: Option<Credential>,
}

impl ServerPlan {
    fn path(&self) -> String {
        format!("spec.servers[{}]", self.index)
    }
}

#[derive(Debug)]
pub struct PortPlan {
    pub port: u16,
    pub protocol: Protocol,
    pub servers: Vec<ServerPlan>,
    /// HTTPS only: certificates chosen by SNI among the servers'.
    pub tls: Option<Arc<ServerConfig>>,
}

#[derive(Debug)]
pub struct Plan {
    pub identity: GatewayIdentity,
    /// The Gateways selecting this workload, in name order.
    pub gateways: Vec<ObjectRef>,
    pub ports: BTreeMap<u16, PortPlan>,
    /// One line per problem: `Gateway ns/name: spec.servers[1].tls.credentialName: ...`.
    pub errors: Vec<String>,
}

impl Plan {
    pub fn empty(identity: &GatewayIdentity) -> Self {
        Self {
            identity: identity.clone(),
            gateways: Vec::new(),
            ports: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    fn server(&self, object: &ObjectRef, index: usize) -> Option<&ServerPlan> {
        self.ports
            .values()
            .flat_map(|p| &p.servers)
            .find(|s| &s.object == object && s.index == index)
    }

    /// For the admin config dump (no key material).
    pub fn summary(&self) -> serde_json::Value {
        let ports: Vec<_> = self
            .ports
            .values()
            .map(|p| {
                let servers: Vec<_> = p
                    .servers
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "gateway": s.object.to_string(),
                            "server": s.path(),
                            "hosts": s.hosts,
                            "httpsRedirect": s.https_redirect,
                            "credential": s.credential.as_ref().map(|c| c.secret.clone()),
                        })
                    })
                    .collect();
                serde_json::json!({"port": p.port, "protocol": p.protocol, "servers": servers})
            })
            .collect();
        serde_json::json!({
            "namespace": self.identity.namespace,
            "podLabels": self.identity.labels,
            "gateways": self.gateways.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ports": ports,
            "errors": self.errors,
        })
    }
}

/// Inputs shared by every server's compilation.
struct Inputs<'a> {
    identity: &'a GatewayIdentity,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    /// Store rejections, to say "rejected" rather than "not found" for a bad Secret.
    rejected: &'a [String],
}

pub fn build(resources: &[Resource], rejected: &[String], identity: &GatewayIdentity, prev: Option<&Plan>) -> Plan {
    let secrets = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Secret(s) => Some(((s.metadata.namespace_or_default(), s.metadata.name.as_str()), &**s)),
            _ => None,
        })
        .collect();
    let inputs = Inputs {
        identity,
        secrets,
        rejected,
    };
    let mut plan = Plan::empty(identity);
    let mut servers = Vec::new();
    for r in resources {
        let Resource::Gateway(g) = r else { continue };
        if !identity.selects(g) {
            continue;
        }
        let object = r.object_ref();
        plan.gateways.push(object.clone());
        for (index, server) in g.spec.servers.iter().enumerate() {
            match compile_server(g, &object, index, server, &inputs) {
                Ok(s) => servers.push(s),
                Err(e) => {
                    let kept = prev.and_then(|p| p.server(&object, index));
                    let suffix = if kept.is_some() {
                        "; its last good version stays in force"
                    } else {
                        ""
                    };
                    plan.errors.push(format!("{object}: {e}{suffix}"));
                    servers.extend(kept.cloned());
                }
            }
        }
    }
    plan.ports = assign_ports(servers, prev, &mut plan.errors);
    plan
}

fn compile_server(
    g: &Gateway,
    object: &ObjectRef,
    index: usize,
    s: &Server,
    inputs: &Inputs<'_>,
) -> Result<ServerPlan, FieldError> {
    let path = format!("spec.servers[{index}]");
    let ns = g.metadata.namespace_or_default();
    let port = u16::try_from(s.port.number).ok().filter(|p| *p != 0).ok_or_else(|| {
        FieldError::new(
            format!("{path}.port.number"),
            format!("port {} is outside 1–65535", s.port.number),
        )
    })?;
    let protocol = protocol(&s.port.protocol).map_err(|m| FieldError::new(format!("{path}.port.protocol"), m))?;
    if s.bind.is_some() {
        return Err(FieldError::new(
            format!("{path}.bind"),
            "bind is not supported: the gateway listens on its --bind-ip",
        ));
    }
    if s.hosts.is_empty() {
        return Err(FieldError::new(
            format!("{path}.hosts"),
            "at least one host is required (`*` for any)",
        ));
    }
    let hosts = s
        .hosts
        .iter()
        .enumerate()
        .map(|(j, h)| ServerHost::parse(h, ns).map_err(|m| FieldError::new(format!("{path}.hosts[{j}]"), m)))
        .collect::<Result<_, _>>()?;
    let https_redirect = s.tls.as_ref().and_then(|t| t.https_redirect).unwrap_or(false);
    let credential = match protocol {
        Protocol::Http => {
            if s.tls.as_ref().is_some_and(|t| t.mode.is_some()) {
                return Err(FieldError::new(
                    format!("{path}.tls.mode"),
                    "tls.mode applies to HTTPS servers; an HTTP server only takes tls.httpsRedirect",
                ));
            }
            None
        }
        Protocol::Https => Some(credential(s.tls.as_ref(), &path, inputs)?),
    };
    let gateway = format!("{ns}/{}", g.metadata.name);
    Ok(ServerPlan {
        object: object.clone(),
        gateway,
        index,
        port,
        protocol,
        hosts,
        https_redirect,
        credential,
    })
}

fn protocol(written: &str) -> Result<Protocol, String> {
    match written.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Ok(Protocol::Http),
        "HTTPS" => Ok(Protocol::Https),
        "TCP" | "TLS" | "MONGO" => Err(format!(
            "protocol `{written}` is not supported by this ingress gateway (HTTP, HTTP2, GRPC, GRPC-WEB and HTTPS are)"
        )),
        _ => Err(format!(
            "unknown protocol `{written}` (HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS or MONGO)"
        )),
    }
}

fn credential(tls: Option<&ServerTlsSettings>, path: &str, inputs: &Inputs<'_>) -> Result<Credential, FieldError> {
    let ns = inputs.identity.namespace.as_str();
    let at = |field: &str| format!("{path}.tls{field}");
    let tls = tls.ok_or_else(|| {
        FieldError::new(
            at(""),
            "an HTTPS server needs tls settings: mode SIMPLE and credentialName",
        )
    })?;
    let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH").to_ascii_uppercase();
    if mode != "SIMPLE" {
        let unset = if tls.mode.is_none() {
            " (unset means PASSTHROUGH)"
        } else {
            ""
        };
        return Err(FieldError::new(
            at(".mode"),
            format!("tls mode `{mode}`{unset} is not supported by this ingress gateway; use SIMPLE"),
        ));
    }
    if tls.server_certificate.is_some() || tls.private_key.is_some() {
        return Err(FieldError::new(
            at(".serverCertificate"),
            "certificate files are not supported: put the certificate in a Secret and name it in credentialName",
        ));
    }
    let name = tls
        .credential_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(tls.credential_names.first().map(String::as_str));
    let Some(name) = name else {
        return Err(FieldError::new(
            at(".credentialName"),
            format!(
                "tls mode SIMPLE needs credentialName: a {} Secret in namespace {ns}",
                secret::TLS_TYPE
            ),
        ));
    };
    let Some(found) = inputs.secrets.get(&(ns, name)) else {
        let prefix = format!("Secret {ns}/{name}: ");
        let message = match inputs.rejected.iter().find(|r| r.starts_with(&prefix)) {
            Some(r) => format!(
                "secret \"{name}\" in namespace {ns} was rejected: {}",
                &r[prefix.len()..]
            ),
            None => format!("secret \"{name}\" not found in namespace {ns}"),
        };
        return Err(FieldError::new(at(".credentialName"), message));
    };
    let key = secret::tls_credential(found).map_err(|e| {
        FieldError::new(
            at(".credentialName"),
            format!("secret \"{name}\" in namespace {ns}: {e}"),
        )
    })?;
    Ok(Credential {
        secret: format!("{ns}/{name}"),
        key,
    })
}

/// Servers grouped by port. Plain HTTP and HTTPS cannot share a port: the port
/// keeps the protocol it had (or its first server's), the others are reported.
fn assign_ports(servers: Vec<ServerPlan>, prev: Option<&Plan>, errors: &mut Vec<String>) -> BTreeMap<u16, PortPlan> {
    let mut by_port: BTreeMap<u16, Vec<ServerPlan>> = BTreeMap::new();
    for s in servers {
        by_port.entry(s.port).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (port, candidates) in by_port {
        let before = prev
            .and_then(|p| p.ports.get(&port))
            .map(|p| p.protocol)
            .filter(|was| candidates.iter().any(|c| c.protocol == *was));
        let protocol = before.unwrap_or(candidates[0].protocol);
        let (keep, conflicting): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|c| c.protocol == protocol);
        let Some(first) = keep.first() else { continue };
        for c in conflicting {
            errors.push(format!(
                "{}: {}.port.protocol: port {port} is already served as {protocol} by {} {}; {} on the same port conflicts, so this server is ignored",
                c.object,
                c.path(),
                first.object,
                first.path(),
                c.protocol
            ));
        }
        let tls = (protocol == Protocol::Https).then(|| tls::server_config(&keep));
        out.insert(
            port,
            PortPlan {
                port,
                protocol,
                servers: keep,
                tls,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> GatewayIdentity {
        GatewayIdentity {
            namespace: "istio-system".into(),
            labels: [("istio".into(), "ingressgateway".into())].into(),
        }
    }

    fn resources(yaml: &str) -> Vec<Resource> {
        mesh_common::model::parse_documents("t.yaml", yaml)
            .into_iter()
            .map(|r| r.expect("valid document"))
            .collect()
    }

    fn gateway(name: &str, selector: &str, servers: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: bookinfo}}\nspec:\n  selector: {{{selector}}}\n  servers:\n{servers}---\n"
        )
    }

    const HTTP_80: &str = "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}\n";
    const HTTPS_80: &str = "  - {port: {number: 80, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}\n";

    #[test]
    fn only_selecting_gateways_count_and_ports_group_servers() {
        let yaml = gateway(
            "a",
            "istio: ingressgateway",
            &format!("{HTTP_80}  - {{port: {{number: 81, name: h, protocol: HTTP2}}, hosts: [x.example.com]}}\n"),
        ) + &gateway("b", "istio: ingressgateway", HTTP_80)
            + &gateway(
                "other",
                "istio: egressgateway",
                "  - {port: {number: 99, name: h, protocol: HTTP}, hosts: ['*']}\n",
            );
        let plan = build(&resources(&yaml), &[], &identity(), None);
        assert!(plan.errors.is_empty(), "{:?}", plan.errors);
        assert_eq!(plan.gateways.len(), 2);
        assert_eq!(plan.ports.keys().copied().collect::<Vec<_>>(), vec![80, 81]);
        assert_eq!(plan.ports[&80].servers.len(), 2, "two Gateways share port 80");
        assert_eq!(plan.ports[&81].protocol, Protocol::Http);
    }

    fn secret_c() -> String {
        let cert = rcgen::generate_simple_self_signed(vec!["x.example.com".to_owned()]).expect("rcgen");
        let indent = |pem: String| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: c, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
            indent(cert.cert.pem()),
            indent(cert.signing_key.serialize_pem())
        )
    }

    #[test]
    fn conflicting_protocol_keeps_what_the_port_had() {
        let yaml = secret_c()
            + &gateway("a", "istio: ingressgateway", HTTPS_80)
            + &gateway("z", "istio: ingressgateway", HTTP_80);
        // Fresh start: the first server (Gateway `a`) sets the port's protocol.
        let fresh = build(&resources(&yaml), &[], &identity(), None);
        assert_eq!(fresh.ports[&80].protocol, Protocol::Https);
        assert!(fresh.ports[&80].tls.is_some());
        assert!(fresh.errors[0].starts_with("Gateway bookinfo/z: spec.servers[0].port.protocol: port 80 is already served as HTTPS by Gateway bookinfo/a spec.servers[0]; HTTP on the same port conflicts"), "{:?}", fresh.errors);
        // A port already serving HTTP keeps it when an HTTPS server arrives.
        let before = build(
            &resources(&(secret_c() + &gateway("z", "istio: ingressgateway", HTTP_80))),
            &[],
            &identity(),
            None,
        );
        let plan = build(&resources(&yaml), &[], &identity(), Some(&before));
        assert_eq!(
            (plan.ports[&80].protocol, plan.ports[&80].servers.len()),
            (Protocol::Http, 1)
        );
        assert_eq!(plan.errors.len(), 1);
        assert!(plan.errors[0].starts_with("Gateway bookinfo/a: spec.servers[0].port.protocol: port 80 is already served as HTTP by Gateway bookinfo/z spec.servers[0]; HTTPS on the same port conflicts, so this server is ignored"), "{:?}", plan.errors);
    }

    #[test]
    fn a_server_that_stops_compiling_keeps_its_last_good_version() {
        let good = build(
            &resources(&gateway("g", "istio: ingressgateway", HTTP_80)),
            &[],
            &identity(),
            None,
        );
        let bad = gateway(
            "g",
            "istio: ingressgateway",
            "  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ['a*b']}\n",
        );
        let plan = build(&resources(&bad), &[], &identity(), Some(&good));
        assert_eq!(plan.errors, vec!["Gateway bookinfo/g: spec.servers[0].hosts[0]: `a*b`: a wildcard is only allowed as the whole first label (`*` or `*.example.com`); its last good version stays in force".to_owned()]);
        assert_eq!(
            plan.ports[&80].servers[0].hosts[0].pattern,
            crate::config::hosts::HostPattern::Any
        );
        let fresh = build(&resources(&bad), &[], &identity(), None);
        assert!(fresh.ports.is_empty(), "nothing to keep on a fresh start");
    }

    #[test]
    fn unsupported_settings_are_named() {
        let servers = "  - {port: {number: 70000, name: a, protocol: HTTP}, hosts: ['*']}\n\
                       \x20 - {port: {number: 81, name: b, protocol: TLS}, hosts: ['*']}\n\
                       \x20 - {port: {number: 82, name: c, protocol: HTTPS}, hosts: ['*'], tls: {credentialName: c}}\n\
                       \x20 - {port: {number: 83, name: d, protocol: HTTP}, hosts: []}\n";
        let plan = build(&resources(&gateway("g", "", servers)), &[], &identity(), None);
        let want = [
            "Gateway bookinfo/g: spec.servers[0].port.number: port 70000 is outside 1–65535",
            "Gateway bookinfo/g: spec.servers[1].port.protocol: protocol `TLS` is not supported",
            "Gateway bookinfo/g: spec.servers[2].tls.mode: tls mode `PASSTHROUGH` (unset means PASSTHROUGH) is not supported",
            "Gateway bookinfo/g: spec.servers[3].hosts: at least one host is required",
        ];
        for (got, want) in plan.errors.iter().zip(want) {
            assert!(got.starts_with(want), "{got}");
        }
        assert_eq!(plan.errors.len(), 4);
    }
}
