//! The matcher and evaluator against Istio's documented semantics: every field and its
//! negation, each matching type, CIDRs, nested claims, the L4 fail-safe, `spec: {}`,
//! `rules: [{}]`, scope and CUSTOM failing closed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::model::istio::security::authorization_policy::Action;
use crate::model::store::ConfigStore;
use crate::model::{ConfigError, Resource, parse_documents};

fn policy_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

fn compile(spec: &str) -> Result<Policy, ConfigError> {
    let yaml = policy_yaml("shop", "p", spec);
    match parse_documents("t.yaml", &yaml).remove(0)? {
        Resource::AuthorizationPolicy(ap) => ap.validate(),
        other => panic!("decoded as {other:?}"),
    }
}

fn set(yaml: &str) -> PolicySet {
    let mut store = ConfigStore::default();
    let report = store.apply_source("t", parse_documents("t", yaml), &|_| Ok(()));
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    PolicySet::from_store(&store, "istio-system")
}

const WEB: &str = "cluster.local/ns/shop/sa/web";
const DB_IP: &str = "198.18.1.9";

/// An L4 request from `principal` at 198.18.1.2 to 198.18.1.9:`port`.
fn l4(principal: Option<&str>, port: u16) -> Request<'_> {
    Request {
        source_principal: principal,
        source_ip: Some(ip("198.18.1.2")),
        destination_ip: ip(DB_IP),
        destination_port: port,
        http: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Evaluates one policy (spec in flow YAML) against `req`.
fn allowed(spec: &str, req: &Request<'_>) -> bool {
    let p = compile(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    evaluate([&p], req).is_allowed()
}

/// For single-rule ALLOW specs: does the rule match `req`?
fn rule_matches(rule: &str, req: &Request<'_>) -> bool {
    allowed(&format!("{{rules: [{rule}]}}"), req)
}

struct Http {
    headers: http::HeaderMap,
    auth: Option<AuthAttributes>,
}

impl Http {
    fn new() -> Self {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "jason".parse().unwrap());
        headers.append("x-tag", "a".parse().unwrap());
        headers.append("x-tag", "b".parse().unwrap());
        let auth = AuthAttributes {
            principal: "https://issuer.example/jason".into(),
            audiences: vec!["bookinfo".into(), "other".into()],
            presenter: Some("web-app".into()),
            claims: serde_json::json!({
                "groups": ["dev", "admins"],
                "sub": "jason",
                "org": {"team": {"name": "payments"}},
                "admin": true,
            }),
        };
        Self {
            headers,
            auth: Some(auth),
        }
    }

    fn attrs(&self) -> HttpAttributes<'_> {
        HttpAttributes {
            host: "Reviews.shop:9080",
            method: "GET",
            path: "/api/v1/ratings?user=1",
            headers: &self.headers,
            remote_ip: Some(ip("203.0.113.7")),
            sni: Some("reviews.shop.svc"),
            auth: self.auth.as_ref(),
        }
    }
}

fn l7<'a>(principal: Option<&'a str>, http: &'a HttpAttributes<'a>) -> Request<'a> {
    Request {
        http: Some(http),
        ..l4(principal, 9080)
    }
}

#[test]
fn empty_spec_allows_nothing_and_empty_rule_matches_everything() {
    assert!(!allowed("{}", &l4(Some(WEB), 80)), "spec: {{}} is allow-nothing");
    assert!(!allowed("{action: ALLOW, rules: []}", &l4(None, 80)));
    assert!(allowed("{rules: [{}]}", &l4(Some(WEB), 80)), "rules: [{{}}] allows all");
    assert!(allowed("{rules: [{}]}", &l4(None, 80)));
    assert!(!allowed("{action: DENY, rules: [{}]}", &l4(None, 80)), "deny all");
    assert!(
        allowed("{action: DENY}", &l4(None, 80)),
        "a DENY without rules denies nothing"
    );
    // No policy at all: allowed.
    assert!(evaluate(std::iter::empty::<&Policy>(), &l4(None, 80)).is_allowed());
}

#[test]
fn principals_and_negation_with_every_match_type() {
    let from = |field: &str, v: &str| format!("{{from: [{{source: {{{field}: ['{v}']}}}}]}}");
    let cases = [
        (WEB, true),
        ("cluster.local/ns/shop/*", true),
        ("*/sa/web", true),
        ("*", true),
        ("cluster.local/ns/shop/sa/we", false),
        ("*/sa/db", false),
    ];
    for (pattern, want) in cases {
        assert_eq!(
            rule_matches(&from("principals", pattern), &l4(Some(WEB), 80)),
            want,
            "{pattern}"
        );
        assert_eq!(
            rule_matches(&from("notPrincipals", pattern), &l4(Some(WEB), 80)),
            !want,
            "not {pattern}"
        );
    }
    // Plaintext has no principal: no positive list matches it, every negative one does.
    assert!(!rule_matches(&from("principals", "*"), &l4(None, 80)));
    assert!(rule_matches(&from("notPrincipals", "*"), &l4(None, 80)));
    assert!(rule_matches(&from("notPrincipals", WEB), &l4(None, 80)));
}

#[test]
fn namespaces_come_from_the_principal() {
    let r = |field: &str, v: &str, p: Option<&str>| {
        rule_matches(&format!("{{from: [{{source: {{{field}: [{v}]}}}}]}}"), &l4(p, 80))
    };
    assert!(r("namespaces", "shop", Some(WEB)));
    assert!(r("namespaces", "'sh*'", Some(WEB)));
    assert!(!r("namespaces", "other", Some(WEB)));
    assert!(!r("namespaces", "shop", None), "plaintext has no namespace");
    assert!(r("notNamespaces", "other", Some(WEB)));
    assert!(!r("notNamespaces", "shop", Some(WEB)));
    assert!(r("notNamespaces", "shop", None));
}

#[test]
fn ip_blocks_and_negation() {
    let r =
        |field: &str, v: &str| rule_matches(&format!("{{from: [{{source: {{{field}: ['{v}']}}}}]}}"), &l4(None, 80));
    assert!(r("ipBlocks", "198.18.0.0/15"));
    assert!(r("ipBlocks", "198.18.1.2"));
    assert!(!r("ipBlocks", "198.18.1.3"));
    assert!(!r("ipBlocks", "10.0.0.0/8"));
    assert!(r("notIpBlocks", "10.0.0.0/8"));
    assert!(!r("notIpBlocks", "198.18.1.0/24"));
}

#[test]
fn ports_and_negation() {
    let r = |field: &str, v: &str, port| {
        rule_matches(
            &format!("{{to: [{{operation: {{{field}: ['{v}']}}}}]}}"),
            &l4(None, port),
        )
    };
    assert!(r("ports", "9080", 9080));
    assert!(!r("ports", "9080", 80));
    assert!(r("notPorts", "9080", 80));
    assert!(!r("notPorts", "9080", 9080));
}

#[test]
fn l4_when_conditions() {
    let when = |key: &str, field: &str, v: &str| format!("{{when: [{{key: {key}, {field}: ['{v}']}}]}}");
    let req = l4(Some(WEB), 9080);
    let cases = [
        ("source.ip", "198.18.1.0/24", true),
        ("source.ip", "10.0.0.1", false),
        ("destination.ip", DB_IP, true),
        ("destination.ip", "198.18.2.0/24", false),
        ("destination.port", "9080", true),
        ("destination.port", "80", false),
        ("source.namespace", "shop", true),
        ("source.namespace", "other", false),
        ("source.principal", "*/sa/web", true),
        ("source.principal", "*/sa/db", false),
    ];
    for (key, v, want) in cases {
        assert_eq!(rule_matches(&when(key, "values", v), &req), want, "{key} {v}");
        assert_eq!(rule_matches(&when(key, "notValues", v), &req), !want, "{key} not {v}");
    }
    // values and notValues together: both must hold.
    let both = "{when: [{key: destination.port, values: ['9080', '80'], notValues: ['80']}]}";
    assert!(rule_matches(both, &req));
    assert!(!rule_matches(both, &l4(Some(WEB), 80)));
}

#[test]
fn l7_operation_fields_and_negation() {
    let h = Http::new();
    let attrs = h.attrs();
    let req = l7(Some(WEB), &attrs);
    let op = |field: &str, v: &str| format!("{{to: [{{operation: {{{field}: ['{v}']}}}}]}}");
    let cases = [
        ("hosts", "reviews.shop", true),
        ("hosts", "REVIEWS.shop:9080", true),
        ("hosts", "*.shop", true),
        ("hosts", "reviews.other", false),
        ("methods", "GET", true),
        ("methods", "POST", false),
        ("paths", "/api/v1/ratings", true),
        ("paths", "/api/*", true),
        ("paths", "*/ratings", true),
        ("paths", "/api/v1/ratings?user=1", false),
        ("paths", "/admin*", false),
    ];
    for (field, v, want) in cases {
        assert_eq!(rule_matches(&op(field, v), &req), want, "{field} {v}");
        let neg = format!("not{}{}", field[..1].to_uppercase(), &field[1..]);
        assert_eq!(rule_matches(&op(&neg, v), &req), !want, "{neg} {v}");
    }
}

#[test]
fn l7_source_fields_and_negation() {
    let h = Http::new();
    let attrs = h.attrs();
    let req = l7(Some(WEB), &attrs);
    let from = |field: &str, v: &str| format!("{{from: [{{source: {{{field}: ['{v}']}}}}]}}");
    let cases = [
        ("requestPrincipals", "https://issuer.example/jason", true),
        ("requestPrincipals", "https://issuer.example/*", true),
        ("requestPrincipals", "*", true),
        ("requestPrincipals", "*/alice", false),
        ("remoteIpBlocks", "203.0.113.0/24", true),
        ("remoteIpBlocks", "198.18.1.2", false),
    ];
    for (field, v, want) in cases {
        assert_eq!(rule_matches(&from(field, v), &req), want, "{field} {v}");
        let neg = format!("not{}{}", field[..1].to_uppercase(), &field[1..]);
        assert_eq!(rule_matches(&from(&neg, v), &req), !want, "{neg} {v}");
    }
    // No token: requestPrincipals ["*"] (a required JWT) does not match; its negation does.
    let anonymous = Http {
        auth: None,
        ..Http::new()
    };
    let anon_attrs = anonymous.attrs();
    let anon = l7(Some(WEB), &anon_attrs);
    assert!(!rule_matches(&from("requestPrincipals", "*"), &anon));
    assert!(rule_matches(&from("notRequestPrincipals", "*"), &anon));
    // Without X-Forwarded-For knowledge, remote.ip is the source address.
    let direct = HttpAttributes {
        remote_ip: None,
        ..anon_attrs
    };
    assert!(rule_matches(&from("remoteIpBlocks", "198.18.1.2"), &l7(None, &direct)));
}

#[test]
fn l7_when_conditions_with_nested_claims() {
    let h = Http::new();
    let attrs = h.attrs();
    let req = l7(Some(WEB), &attrs);
    let cases = [
        ("request.headers[x-user]", "jason", true),
        ("request.headers[X-User]", "jas*", true),
        ("request.headers[x-user]", "alice", false),
        ("request.headers[x-tag]", "a,b", true),
        ("request.headers[x-missing]", "*", false),
        ("request.auth.principal", "*/jason", true),
        ("request.auth.principal", "*/alice", false),
        ("request.auth.audiences", "bookinfo", true),
        ("request.auth.audiences", "book*", true),
        ("request.auth.audiences", "nope", false),
        ("request.auth.presenter", "web-app", true),
        ("request.auth.presenter", "cli", false),
        ("request.auth.claims[groups]", "admins", true),
        ("request.auth.claims[groups]", "ops", false),
        ("request.auth.claims[sub]", "jason", true),
        ("request.auth.claims[admin]", "true", true),
        ("request.auth.claims[org][team][name]", "payments", true),
        ("request.auth.claims[org][team][name]", "pay*", true),
        ("request.auth.claims[org][team]", "payments", false),
        ("request.auth.claims[org][missing]", "*", false),
        ("remote.ip", "203.0.113.7", true),
        ("remote.ip", "198.18.1.2", false),
        ("connection.sni", "*.svc", true),
        ("connection.sni", "other", false),
    ];
    for (key, v, want) in cases {
        let when = |field: &str| format!("{{when: [{{key: '{key}', {field}: ['{v}']}}]}}");
        assert_eq!(rule_matches(&when("values"), &req), want, "{key} {v}");
        assert_eq!(rule_matches(&when("notValues"), &req), !want, "{key} not {v}");
    }
}

#[test]
fn fields_and_and_alternatives_or() {
    let spec = "{rules: [{from: [{source: {principals: ['*/sa/db']}}, {source: {namespaces: [shop], ipBlocks: ['198.18.1.2']}}], \
                to: [{operation: {ports: ['80']}}, {operation: {ports: ['9080']}}]}]}";
    assert!(allowed(spec, &l4(Some(WEB), 9080)), "second from, second to");
    assert!(!allowed(spec, &l4(Some(WEB), 443)), "no `to` matches");
    assert!(
        !allowed(spec, &l4(Some("cluster.local/ns/x/sa/web"), 80)),
        "namespace AND ipBlocks"
    );
}

#[test]
fn l4_fail_safe_allow_never_matches_deny_always_matches() {
    // ALLOW with an HTTP field: never matches at L4, even where the L4 part would.
    let allow = "{rules: [{from: [{source: {principals: ['*']}}], to: [{operation: {paths: ['/public*']}}]}]}";
    let p = compile(allow).unwrap();
    let e = evaluate([&p], &l4(Some(WEB), 80));
    assert!(!e.is_allowed());
    assert_eq!(
        e.fail_safe,
        vec!["AuthorizationPolicy shop/p: spec.rules[0].to[0].operation.paths".to_string()]
    );
    assert_eq!(
        p.l7_fields().collect::<Vec<_>>(),
        vec!["spec.rules[0].to[0].operation.paths"]
    );
    // The same rule with HTTP attributes decides on the path.
    let h = Http::new();
    let attrs = HttpAttributes {
        path: "/public/x",
        ..h.attrs()
    };
    assert!(evaluate([&p], &l7(Some(WEB), &attrs)).is_allowed());
    assert!(evaluate([&p], &l7(Some(WEB), &h.attrs())).fail_safe.is_empty());

    // DENY: the HTTP part counts as matched, the L4 part still decides.
    let deny = "{action: DENY, rules: [{from: [{source: {principals: ['*/sa/web']}}], when: [{key: 'request.headers[x]', values: [y]}]}]}";
    let p = compile(deny).unwrap();
    let e = evaluate([&p], &l4(Some(WEB), 80));
    assert!(!e.is_allowed(), "denied although the header is unknown");
    assert_eq!(
        e.fail_safe,
        vec!["AuthorizationPolicy shop/p: spec.rules[0].when[0].values".to_string()]
    );
    assert!(evaluate([&p], &l4(Some("cluster.local/ns/shop/sa/db"), 80)).is_allowed());
    // A negated HTTP field is not inverted at L4 either.
    let deny_not = "{action: DENY, rules: [{to: [{operation: {notMethods: [GET]}}]}]}";
    assert!(!allowed(deny_not, &l4(Some(WEB), 80)));
    // ALLOW with only L4 fields in one rule and HTTP in another: the L4 rule still allows.
    let mixed = "{rules: [{to: [{operation: {methods: [GET]}}]}, {from: [{source: {principals: ['*/sa/web']}}]}]}";
    assert!(allowed(mixed, &l4(Some(WEB), 80)));
}

#[test]
fn order_custom_then_deny_then_allow_and_audit() {
    let yaml = [
        policy_yaml(
            "shop",
            "allow-web",
            "{rules: [{from: [{source: {principals: ['*/sa/web']}}]}]}",
        ),
        policy_yaml(
            "shop",
            "deny-admin-port",
            "{action: DENY, rules: [{to: [{operation: {ports: ['9090']}}]}]}",
        ),
        policy_yaml("shop", "audit-all", "{action: AUDIT, rules: [{}]}"),
    ]
    .concat();
    let s = set(&yaml);
    let labels = BTreeMap::new();
    let run = |req: &Request<'_>| evaluate(s.for_workload("shop", &labels), req);
    let e = run(&l4(Some(WEB), 80));
    assert_eq!(e.decision, Decision::Allow);
    assert_eq!(e.audits.len(), 1, "AUDIT reports the match");
    let e = run(&l4(Some(WEB), 9090));
    let Decision::Deny(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.policy.to_string(), "AuthorizationPolicy shop/deny-admin-port");
    assert_eq!(d.reason, DenyReason::DenyRule { rule: 0 });
    let e = run(&l4(Some("cluster.local/ns/shop/sa/db"), 80));
    let Decision::Deny(d) = &e.decision else {
        panic!("{e:?}")
    };
    assert_eq!(d.policy.to_string(), "AuthorizationPolicy shop/allow-web");
    assert_eq!(
        d.to_string(),
        "AuthorizationPolicy shop/allow-web: no ALLOW rule matched"
    );

    // AUDIT alone changes nothing.
    let audit = set(&policy_yaml("shop", "audit", "{action: AUDIT, rules: [{}]}"));
    assert!(evaluate(audit.for_workload("shop", &labels), &l4(None, 80)).is_allowed());
}

#[test]
fn custom_is_kept_and_fails_closed_for_its_targets() {
    let custom = "{action: CUSTOM, provider: {name: ext-authz}, selector: {matchLabels: {app: db}}, rules: [{to: [{operation: {paths: ['/x']}}]}]}";
    let p = compile(custom).expect("CUSTOM is not a decode error: it must stay in force to fail closed");
    assert_eq!(p.action, Action::Custom);
    let line = p.unsupported().unwrap();
    assert!(
        line.starts_with("AuthorizationPolicy shop/p: spec.action: CUSTOM"),
        "{line}"
    );
    let yaml = [
        policy_yaml("shop", "ext", custom),
        policy_yaml("shop", "allow-all", "{rules: [{}]}"),
    ]
    .concat();
    let s = set(&yaml);
    let db: BTreeMap<String, String> = [("app".to_owned(), "db".to_owned())].into();
    let e = evaluate(s.for_workload("shop", &db), &l4(Some(WEB), 80));
    let Decision::Deny(d) = e.decision else {
        panic!("CUSTOM must fail closed")
    };
    assert_eq!(d.reason, DenyReason::Unsupported);
    assert_eq!(d.policy.to_string(), "AuthorizationPolicy shop/ext");
    // Other workloads of the namespace are not its targets.
    let web: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
    assert!(evaluate(s.for_workload("shop", &web), &l4(Some(WEB), 80)).is_allowed());
    assert_eq!(s.unsupported().count(), 1);
    // Even CUSTOM with a malformed rule stays in force (closed), never rejected open.
    assert!(compile("{action: CUSTOM, rules: [{from: [{source: {ipBlocks: [nope]}}]}]}").is_ok());
}

#[test]
fn scope_root_namespace_selector_and_target_refs() {
    let yaml = [
        policy_yaml("istio-system", "mesh-deny-9999", "{action: DENY, rules: [{to: [{operation: {ports: ['9999']}}]}]}"),
        policy_yaml("istio-system", "mesh-db", "{selector: {matchLabels: {app: db}}, action: DENY, rules: [{to: [{operation: {ports: ['1']}}]}]}"),
        policy_yaml("shop", "ns-wide", "{action: DENY, rules: [{to: [{operation: {ports: ['2']}}]}]}"),
        policy_yaml("shop", "web-only", "{selector: {matchLabels: {app: web}}, action: DENY, rules: [{to: [{operation: {ports: ['3']}}]}]}"),
        policy_yaml("other", "elsewhere", "{action: DENY, rules: [{}]}"),
        policy_yaml(
            "shop",
            "at-waypoint",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], action: DENY, rules: [{}]}",
        ),
        policy_yaml("shop", "at-service", "{targetRef: {kind: Service, group: '', name: reviews}, rules: [{}]}"),
    ]
    .concat();
    let s = set(&yaml);
    let names = |ns: &str, app: &str| {
        let labels: BTreeMap<String, String> = [("app".to_owned(), app.to_owned())].into();
        s.for_workload(ns, &labels)
            .map(|p| p.object.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("shop", "db"), ["mesh-db", "mesh-deny-9999", "ns-wide"]);
    assert_eq!(names("shop", "web"), ["mesh-deny-9999", "ns-wide", "web-only"]);
    assert_eq!(
        names("third", "db"),
        ["mesh-db", "mesh-deny-9999"],
        "root selector is mesh-wide"
    );
    let waypoint = Target {
        kind: TargetKind::Gateway,
        namespace: "shop".into(),
        name: "waypoint".into(),
    };
    let at: Vec<_> = s.for_target(&waypoint).map(|p| p.object.name.as_str()).collect();
    assert_eq!(at, ["at-waypoint"]);
    let svc = Target {
        kind: TargetKind::Service,
        namespace: "shop".into(),
        name: "reviews".into(),
    };
    assert_eq!(s.for_target(&svc).count(), 1);
    let other_ns = Target {
        namespace: "other".into(),
        ..svc
    };
    assert_eq!(s.for_target(&other_ns).count(), 0);
    // A custom root namespace.
    let mut store = ConfigStore::default();
    store.apply_source("t", parse_documents("t", &yaml), &|_| Ok(()));
    let custom_root = PolicySet::from_store(&store, "other");
    let labels = BTreeMap::new();
    assert!(
        custom_root
            .for_workload("shop", &labels)
            .any(|p| p.object.name == "elsewhere")
    );
    let _: &[Arc<Policy>] = custom_root.policies();
}

#[test]
fn invalid_policies_name_the_object_and_field() {
    let cases = [
        (
            "{rules: [{from: [{source: {ipBlocks: ['10.0.0.0/8', '10.0.0.0/40']}}]}]}",
            "AuthorizationPolicy shop/p: spec.rules[0].from[0].source.ipBlocks[1]: \"10.0.0.0/40\": prefix length",
        ),
        (
            "{rules: [{from: [{source: {notRemoteIpBlocks: [nope]}}]}]}",
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]: \"nope\" is not an IP address",
        ),
        (
            "{rules: [{}, {when: [{key: request.foo, values: [x]}]}]}",
            "spec.rules[1].when[0].key: unknown key \"request.foo\"",
        ),
        (
            "{rules: [{when: [{key: 'request.headers', values: [x]}]}]}",
            "spec.rules[0].when[0].key:",
        ),
        (
            "{rules: [{when: [{key: 'request.auth.claims[]', values: [x]}]}]}",
            "spec.rules[0].when[0].key:",
        ),
        (
            "{rules: [{when: [{key: source.ip}]}]}",
            "spec.rules[0].when[0]: needs values or notValues",
        ),
        (
            "{rules: [{when: [{key: source.ip, notValues: ['1.2.3.4/99']}]}]}",
            "spec.rules[0].when[0].notValues[0]:",
        ),
        (
            "{rules: [{when: [{key: destination.port, values: [http]}]}]}",
            "spec.rules[0].when[0].values[0]: \"http\" is not a port",
        ),
        (
            "{rules: [{to: [{operation: {notPorts: ['99999']}}]}]}",
            "spec.rules[0].to[0].operation.notPorts[0]:",
        ),
        (
            "{rules: [{to: [{operation: {paths: ['/a/{*}/b']}}]}]}",
            "spec.rules[0].to[0].operation.paths[0]: path templates",
        ),
        (
            "{rules: [{from: [{source: {}}]}]}",
            "spec.rules[0].from[0].source: an empty source",
        ),
        ("{rules: [{to: [{}]}]}", "spec.rules[0].to[0].operation: must be set"),
        (
            "{rules: [{from: [{source: {principal: [x]}}]}]}",
            "spec.rules[0].from[0].source.principal: unknown field `principal`",
        ),
        ("{action: ALLOWED}", "spec.action: unknown variant `ALLOWED`"),
        (
            "{selector: {matchLabels: {a: b}}, targetRefs: [{kind: Service, name: s}]}",
            "spec.selector: only one of selector and targetRef/targetRefs can be set",
        ),
        (
            "{targetRefs: [{kind: Deployment, group: apps, name: s}]}",
            "spec.targetRefs[0].kind: cannot attach to Deployment (group `apps`)",
        ),
        (
            "{targetRefs: [{kind: Service, name: s, namespace: elsewhere}]}",
            "spec.targetRefs[0].namespace:",
        ),
        (
            "{provider: {name: x}, rules: [{}]}",
            "spec.provider: provider is only valid with action CUSTOM",
        ),
    ];
    for (spec, want) in cases {
        let err = compile(spec).expect_err(spec).to_string();
        assert!(err.contains(want), "{spec}:\n  got  {err}\n  want {want}");
        assert!(err.starts_with("AuthorizationPolicy shop/p: spec"), "{err}");
    }
}

#[test]
fn decodes_every_version_and_keeps_the_last_good_version_on_a_bad_update() {
    for v in ["v1", "v1beta1"] {
        let yaml = format!(
            "apiVersion: security.istio.io/{v}\nkind: AuthorizationPolicy\nmetadata: {{name: a, namespace: shop}}\nspec: {{rules: [{{}}]}}\n"
        );
        assert!(matches!(
            parse_documents("t", &yaml).remove(0),
            Ok(Resource::AuthorizationPolicy(_))
        ));
    }
    let bad_version = "apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: a}\n";
    assert!(matches!(
        parse_documents("t", bad_version).remove(0),
        Err(ConfigError::UnsupportedVersion { .. })
    ));

    let good = policy_yaml("shop", "a", "{rules: [{from: [{source: {ipBlocks: ['198.18.1.2']}}]}]}");
    let bad = policy_yaml(
        "shop",
        "a",
        "{rules: [{from: [{source: {ipBlocks: ['198.18.1.2/99']}}]}]}",
    );
    let mut store = ConfigStore::default();
    store.apply_source("f", parse_documents("f", &good), &|_| Ok(()));
    let report = store.apply_source("f", parse_documents("f", &bad), &|_| Ok(()));
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    let s = PolicySet::from_store(&store, "istio-system");
    let labels = BTreeMap::new();
    let other_source = Request {
        source_ip: Some(ip("198.18.7.7")),
        ..l4(None, 80)
    };
    assert!(
        !evaluate(s.for_workload("shop", &labels), &other_source).is_allowed(),
        "the last good ALLOW is still in force"
    );
    assert!(evaluate(s.for_workload("shop", &labels), &l4(None, 80)).is_allowed());
}
