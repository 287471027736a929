//! A compiled AuthorizationPolicy: validated once when the object arrives, with every
//! value parsed into a matcher and every check remembering its field path.

use std::collections::BTreeMap;

use serde::Serialize;

use super::matcher::{Cidr, StringMatch};
use crate::model::istio::security::authorization_policy::{
    Action, AuthorizationPolicy, Condition, Operation, Rule as SpecRule, Source,
};
use crate::model::istio::security::target_ref::validate_attachment;
pub use crate::model::istio::security::target_ref::{Target, TargetKind};
use crate::model::{ConfigError, FieldError, ObjectRef};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Policy {
    pub object: ObjectRef,
    pub namespace: String,
    /// `selector.matchLabels`, when it names at least one label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// `targetRef` / `targetRefs`: the policy belongs to these waypoints / gateways /
    /// Services, not to workloads (the node daemon does not apply it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    pub action: Action,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// Any of (each: all of its checks); empty matches every source.
    pub from: Vec<Vec<Check>>,
    /// Any of (each: all of its checks); empty matches every operation.
    pub to: Vec<Vec<Check>>,
    /// All of.
    pub when: Vec<Check>,
    /// Paths of the checks that need HTTP attributes (see [`Attr::is_l7`]).
    pub l7_fields: Vec<String>,
}

/// One field of a `source`, `operation` or `when`: the attribute must match one of the
/// values (or, negated, none of them).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// e.g. `spec.rules[0].from[1].source.notPrincipals`.
    pub path: String,
    pub attr: Attr,
    pub values: Values,
    pub negate: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Values {
    Strings(Vec<StringMatch>),
    Ips(Vec<Cidr>),
    Ports(Vec<u16>),
}

/// The request attribute a check reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Attr {
    SourcePrincipal,
    /// From the source principal (`<td>/ns/<ns>/sa/<sa>`), never from the IP.
    SourceNamespace,
    SourceIp,
    DestinationIp,
    DestinationPort,
    RemoteIp,
    Sni,
    Host,
    Method,
    Path,
    RequestPrincipal,
    Header(String),
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Vec<String>),
}

impl Attr {
    /// Needs what only a waypoint or gateway sees. Istio's ztunnel supports exactly
    /// source principal / namespace / IP and destination IP / port.
    pub fn is_l7(&self) -> bool {
        !matches!(
            self,
            Attr::SourcePrincipal
                | Attr::SourceNamespace
                | Attr::SourceIp
                | Attr::DestinationIp
                | Attr::DestinationPort
        )
    }
}

impl Policy {
    pub fn compile(ap: &AuthorizationPolicy) -> Result<Policy, ConfigError> {
        let object = ap.object_ref();
        let fail = |e: FieldError| ConfigError::invalid(&object, e.path, e.message);
        let namespace = ap.metadata.namespace_or_default().to_owned();
        let spec = &ap.spec;
        let selector = spec
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .filter(|l| !l.is_empty());
        let targets = validate_attachment(
            selector.is_some(),
            spec.target_ref.as_ref(),
            &spec.target_refs,
            &namespace,
        )
        .and_then(supported_targets)
        .map_err(fail)?;
        match (spec.action, &spec.provider) {
            // CUSTOM is kept whatever its rules say: it fails closed (see `Policy::unsupported`).
            (Action::Custom, _) => {
                return Ok(Policy {
                    object,
                    namespace,
                    selector,
                    targets,
                    action: Action::Custom,
                    rules: Vec::new(),
                });
            }
            (_, Some(_)) => {
                return Err(fail(FieldError::new(
                    "spec.provider",
                    "provider is only valid with action CUSTOM",
                )));
            }
            _ => {}
        }
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, &format!("spec.rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        Ok(Policy {
            object,
            namespace,
            selector,
            targets,
            action: spec.action,
            rules,
        })
    }

    /// Why the mesh cannot enforce this policy as written (its targets then refuse
    /// everything): an operator-readable line naming the object and field.
    pub fn unsupported(&self) -> Option<String> {
        (self.action == Action::Custom).then(|| {
            format!(
                "{}: spec.action: CUSTOM (external authorization) is not supported; \
                 the workloads it selects refuse every connection until it is changed or deleted",
                self.object
            )
        })
    }

    /// Field paths that need HTTP attributes: where only L4 is visible (the node
    /// daemon) ALLOW rules using them never match and DENY rules ignore them.
    pub fn l7_fields(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().flat_map(|r| r.l7_fields.iter().map(String::as_str))
    }
}

/// ServiceEntry is not modelled yet: a policy naming one would silently apply nowhere.
fn supported_targets(targets: Vec<Target>) -> Result<Vec<Target>, FieldError> {
    match targets.iter().position(|t| t.kind == TargetKind::ServiceEntry) {
        Some(i) => Err(FieldError::new(
            format!("spec.targetRefs[{i}].kind"),
            "ServiceEntry targets are not supported by this mesh",
        )),
        None => Ok(targets),
    }
}

fn rule(r: &SpecRule, path: &str) -> Result<Rule, FieldError> {
    let mut from = Vec::new();
    for (j, f) in r.from.iter().enumerate() {
        let p = format!("{path}.from[{j}].source");
        let source = f
            .source
            .as_ref()
            .ok_or_else(|| FieldError::new(&p, "must be set: a `from` entry needs a source"))?;
        from.push(source_checks(source, &p)?);
    }
    let mut to = Vec::new();
    for (j, t) in r.to.iter().enumerate() {
        let p = format!("{path}.to[{j}].operation");
        let op = t
            .operation
            .as_ref()
            .ok_or_else(|| FieldError::new(&p, "must be set: a `to` entry needs an operation"))?;
        to.push(operation_checks(op, &p)?);
    }
    let mut when = Vec::new();
    for (k, c) in r.when.iter().enumerate() {
        when.extend(condition_checks(c, &format!("{path}.when[{k}]"))?);
    }
    let l7_fields = from
        .iter()
        .chain(to.iter())
        .flatten()
        .chain(when.iter())
        .filter(|c| c.attr.is_l7())
        .map(|c| c.path.clone())
        .collect();
    Ok(Rule {
        from,
        to,
        when,
        l7_fields,
    })
}

/// Adds a check for `values` (or their negation) unless the list is empty.
struct Checks {
    base: String,
    out: Vec<Check>,
}

impl Checks {
    fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            out: Vec::new(),
        }
    }

    fn strings(&mut self, field: &str, attr: Attr, values: &[String], negate: bool) {
        self.strings_with(field, attr, values, negate, |m| m);
    }

    fn strings_with(
        &mut self,
        field: &str,
        attr: Attr,
        values: &[String],
        negate: bool,
        map: fn(StringMatch) -> StringMatch,
    ) {
        if values.is_empty() {
            return;
        }
        let values = Values::Strings(values.iter().map(|v| map(StringMatch::parse(v))).collect());
        self.push(field, attr, values, negate);
    }

    fn ips(&mut self, field: &str, attr: Attr, values: &[String], negate: bool) -> Result<(), FieldError> {
        if values.is_empty() {
            return Ok(());
        }
        let parsed = values
            .iter()
            .enumerate()
            .map(|(i, v)| Cidr::parse(v).map_err(|e| FieldError::new(format!("{}.{field}[{i}]", self.base), e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.push(field, attr, Values::Ips(parsed), negate);
        Ok(())
    }

    fn ports(&mut self, field: &str, values: &[String], negate: bool) -> Result<(), FieldError> {
        if values.is_empty() {
            return Ok(());
        }
        let parsed = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.trim().parse::<u16>().map_err(|_| {
                    FieldError::new(
                        format!("{}.{field}[{i}]", self.base),
                        format!("{v:?} is not a port number (0..=65535)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.push(field, Attr::DestinationPort, Values::Ports(parsed), negate);
        Ok(())
    }

    fn push(&mut self, field: &str, attr: Attr, values: Values, negate: bool) {
        self.out.push(Check {
            path: format!("{}.{field}", self.base),
            attr,
            values,
            negate,
        });
    }
}

fn source_checks(s: &Source, path: &str) -> Result<Vec<Check>, FieldError> {
    let mut c = Checks::new(path);
    c.strings("principals", Attr::SourcePrincipal, &s.principals, false);
    c.strings("notPrincipals", Attr::SourcePrincipal, &s.not_principals, true);
    c.strings(
        "requestPrincipals",
        Attr::RequestPrincipal,
        &s.request_principals,
        false,
    );
    c.strings(
        "notRequestPrincipals",
        Attr::RequestPrincipal,
        &s.not_request_principals,
        true,
    );
    c.strings("namespaces", Attr::SourceNamespace, &s.namespaces, false);
    c.strings("notNamespaces", Attr::SourceNamespace, &s.not_namespaces, true);
    c.ips("ipBlocks", Attr::SourceIp, &s.ip_blocks, false)?;
    c.ips("notIpBlocks", Attr::SourceIp, &s.not_ip_blocks, true)?;
    c.ips("remoteIpBlocks", Attr::RemoteIp, &s.remote_ip_blocks, false)?;
    c.ips("notRemoteIpBlocks", Attr::RemoteIp, &s.not_remote_ip_blocks, true)?;
    non_empty(c.out, path, "source")
}

fn operation_checks(o: &Operation, path: &str) -> Result<Vec<Check>, FieldError> {
    let mut c = Checks::new(path);
    c.strings_with("hosts", Attr::Host, &o.hosts, false, StringMatch::lowercase);
    c.strings_with("notHosts", Attr::Host, &o.not_hosts, true, StringMatch::lowercase);
    c.ports("ports", &o.ports, false)?;
    c.ports("notPorts", &o.not_ports, true)?;
    c.strings("methods", Attr::Method, &o.methods, false);
    c.strings("notMethods", Attr::Method, &o.not_methods, true);
    for (field, paths) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        if let Some(i) = paths.iter().position(|p| p.contains('{')) {
            return Err(FieldError::new(
                format!("{path}.{field}[{i}]"),
                "path templates ({*}, {**}) are not supported; use exact, `prefix*` or `*suffix`",
            ));
        }
    }
    c.strings("paths", Attr::Path, &o.paths, false);
    c.strings("notPaths", Attr::Path, &o.not_paths, true);
    non_empty(c.out, path, "operation")
}

fn non_empty(checks: Vec<Check>, path: &str, what: &str) -> Result<Vec<Check>, FieldError> {
    if checks.is_empty() {
        Err(FieldError::new(
            path,
            format!("an empty {what} is not allowed (it would match everything); name at least one field"),
        ))
    } else {
        Ok(checks)
    }
}

/// The `when` keys Istio defines, with how their values parse.
enum KeyKind {
    Strings(Attr),
    Ips(Attr),
    Port,
}

fn when_key(key: &str) -> Result<KeyKind, String> {
    Ok(match key {
        "source.ip" => KeyKind::Ips(Attr::SourceIp),
        "remote.ip" => KeyKind::Ips(Attr::RemoteIp),
        "destination.ip" => KeyKind::Ips(Attr::DestinationIp),
        "destination.port" => KeyKind::Port,
        "source.namespace" => KeyKind::Strings(Attr::SourceNamespace),
        "source.principal" => KeyKind::Strings(Attr::SourcePrincipal),
        "connection.sni" => KeyKind::Strings(Attr::Sni),
        "request.auth.principal" => KeyKind::Strings(Attr::RequestPrincipal),
        "request.auth.audiences" => KeyKind::Strings(Attr::AuthAudiences),
        "request.auth.presenter" => KeyKind::Strings(Attr::AuthPresenter),
        _ => {
            if let Some(rest) = key.strip_prefix("request.headers") {
                match brackets(rest)?.as_slice() {
                    [name] => KeyKind::Strings(Attr::Header(name.to_ascii_lowercase())),
                    _ => return Err(format!("{key:?}: write one header name, request.headers[name]")),
                }
            } else if let Some(rest) = key.strip_prefix("request.auth.claims") {
                KeyKind::Strings(Attr::AuthClaim(brackets(rest)?))
            } else {
                return Err(format!(
                    "unknown key {key:?}; supported: source.ip, source.namespace, source.principal, remote.ip, \
                     destination.ip, destination.port, connection.sni, request.headers[...], request.auth.principal, \
                     request.auth.audiences, request.auth.presenter, request.auth.claims[...]"
                ));
            }
        }
    })
}

/// `[a][b]` → `["a", "b"]`; at least one non-empty segment.
fn brackets(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let inner = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .filter(|(name, _)| !name.is_empty() && !name.contains('['));
        let Some((name, after)) = inner else {
            return Err(format!("{text:?} is not of the form [name] or [a][b]"));
        };
        out.push(name.to_owned());
        rest = after;
    }
    if out.is_empty() {
        return Err("a name in brackets is required, e.g. [x-user]".to_owned());
    }
    Ok(out)
}

fn condition_checks(c: &Condition, path: &str) -> Result<Vec<Check>, FieldError> {
    let kind = when_key(&c.key).map_err(|e| FieldError::new(format!("{path}.key"), e))?;
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(FieldError::new(path, "needs values or notValues"));
    }
    let mut checks = Checks::new(path);
    for (field, values, negate) in [("values", &c.values, false), ("notValues", &c.not_values, true)] {
        match &kind {
            KeyKind::Strings(attr) => checks.strings(field, attr.clone(), values, negate),
            KeyKind::Ips(attr) => checks.ips(field, attr.clone(), values, negate)?,
            KeyKind::Port => checks.ports(field, values, negate)?,
        }
    }
    Ok(checks.out)
}
