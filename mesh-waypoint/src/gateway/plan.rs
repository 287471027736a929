//! What the gateway serves, compiled from the `Gateway` objects that select it:
//! one [`PortPlan`] per distinct `port.number`, each with its servers (hosts,
//! `httpsRedirect`, certificate) and, for HTTPS, a rustls config choosing the
//! certificate by SNI. A server that does not compile is reported with its object
//! and field path and keeps its last good version, if it had one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use mesh_common::model::istio::networking::gateway::{Server, ServerTlsSettings};
use mesh_common::model::istio::networking::Gateway;
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
        Self { identity: identity.clone(), gateways: Vec::new(), ports: BTreeMap::new(), errors: Vec::new() }
    }

    fn server(&self, object: &ObjectRef, index: usize) -> Option<&ServerPlan> {
        self.ports.values().flat_map(|p| &p.servers).find(|s| &s.object == object && s.index == index)
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
    let inputs = Inputs { identity, secrets, rejected };
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
                    let suffix = if kept.is_some() { "; its last good version stays in force" } else { "" };
                    plan.errors.push(format!("{object}: {e}{suffix}"));
                    servers.extend(kept.cloned());
                }
            }
        }
    }
    plan.ports = assign_ports(servers, prev, &mut plan.errors);
    plan
}

fn compile_server(g: &Gateway, object: &ObjectRef, index: usize, s: &Server, inputs: &Inputs<'_>) -> Result<ServerPlan, FieldError> {
    let path = format!("spec.servers[{index}]");
    let ns = g.metadata.namespace_or_default();
    let port = u16::try_from(s.port.number).ok().filter(|p| *p != 0).ok_or_else(|| FieldError::new(format!("{path}.port.number"), format!("port {} is outside 1–65535", s.port.number)))?;
    let protocol = protocol(&s.port.protocol).map_err(|m| FieldError::new(format!("{path}.port.protocol"), m))?;
    if s.bind.is_some() {
        return Err(FieldError::new(format!("{path}.bind"), "bind is not supported: the gateway listens on its --bind-ip"));
    }
    if s.hosts.is_empty() {
        return Err(FieldError::new(format!("{path}.hosts"), "at least one host is required (`*` for any)"));
    }
    let hosts = s.hosts.iter().enumerate().map(|(j, h)| ServerHost::parse(h, ns).map_err(|m| FieldError::new(format!("{path}.hosts[{j}]"), m))).collect::<Result<_, _>>()?;
    let https_redirect = s.tls.as_ref().and_then(|t| t.https_redirect).unwrap_or(false);
    let credential = match protocol {
        Protocol::Http => {
            if s.tls.as_ref().is_some_and(|t| t.mode.is_some()) {
                return Err(FieldError::new(format!("{path}.tls.mode"), "tls.mode applies to HTTPS servers; an HTTP server only takes tls.httpsRedirect"));
            }
            None
        }
        Protocol::Https => Some(credential(s.tls.as_ref(), &path, inputs)?),
    };
    let gateway = format!("{ns}/{}", g.metadata.name);
    Ok(ServerPlan { object: object.clone(), gateway, index, port, protocol, hosts, https_redirect, credential })
}

fn protocol(written: &str) -> Result<Protocol, String> {
    match written.to_ascii_uppercase().as_str() {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Ok(Protocol::Http),
        "HTTPS" => Ok(Protocol::Https),
        "TCP" | "TLS" | "MONGO" => Err(format!("protocol `{written}` is not supported by this ingress gateway (HTTP, HTTP2, GRPC, GRPC-WEB and HTTPS are)")),
        _ => Err(format!("unknown protocol `{written}` (HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS or MONGO)")),
    }
}

fn credential(tls: Option<&ServerTlsSettings>, path: &str, inputs: &Inputs<'_>) -> Result<Credential, FieldError> {
    let ns = inputs.identity.namespace.as_str();
    let at = |field: &str| format!("{path}.tls{field}");
    let tls = tls.ok_or_else(|| FieldError::new(at(""), "an HTTPS server needs tls settings: mode SIMPLE and credentialName"))?;
    let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH").to_ascii_uppercase();
    if mode != "SIMPLE" {
        let unset = if tls.mode.is_none() { " (unset means PASSTHROUGH)" } else { "" };
        return Err(FieldError::new(at(".mode"), format!("tls mode `{mode}`{unset} is not supported by this ingress gateway; use SIMPLE")));
    }
    if tls.server_certificate.is_some() || tls.private_key.is_some() {
        return Err(FieldError::new(at(".serverCertificate"), "certificate files are not supported: put the certificate in a Secret and name it in credentialName"));
    }
    let name = tls.credential_name.as_deref().filter(|n| !n.is_empty()).or(tls.credential_names.first().map(String::as_str));
    let Some(name) = name else {
        return Err(FieldError::new(at(".credentialName"), format!("tls mode SIMPLE needs credentialName: a {} Secret in namespace {ns}", secret::TLS_TYPE)));
    };
    let Some(found) = inputs.secrets.get(&(ns, name)) else {
        let prefix = format!("Secret {ns}/{name}: ");
        let message = match inputs.rejected.iter().find(|r| r.starts_with(&prefix)) {
            Some(r) => format!("secret \"{name}\" in namespace {ns} was rejected: {}", &r[prefix.len()..]),
            None => format!("secret \"{name}\" not found in namespace {ns}"),
        };
        return Err(FieldError::new(at(".credentialName"), message));
    };
    let key = secret::tls_credential(found).map_err(|e| FieldError::new(at(".credentialName"), format!("secret \"{name}\" in namespace {ns}: {e}")))?;
    Ok(Credential { secret: format!("{ns}/{name}"), key })
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
        let before = prev.and_then(|p| p.ports.get(&port)).map(|p| p.protocol).filter(|was| candidates.iter().any(|c| c.protocol == *was));
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
        out.insert(port, PortPlan { port, protocol, servers: keep, tls });
    }
    out
}
