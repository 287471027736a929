//! A Gateway server's `hosts` entry: `[namespace/]dnsName`. The namespace part
//! says which namespaces' VirtualServices may bind (`*` any, `.` the Gateway's
//! own); the DNS name (`*`, `*.example.com`, `example.com`) is matched against the
//! request's host as written — gateway hosts are not Service names.

use crate::config::hosts::HostPattern;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServerHost {
    /// `None`: VirtualServices from any namespace.
    pub namespace: Option<String>,
    pub pattern: HostPattern,
}

impl ServerHost {
    pub fn parse(raw: &str, gateway_namespace: &str) -> Result<Self, String> {
        let (ns, name) = match raw.split_once('/') {
            Some((ns, name)) => (Some(ns.trim()), name.trim()),
            None => (None, raw.trim()),
        };
        let namespace = match ns {
            None | Some("*") => None,
            Some(".") => Some(gateway_namespace.to_owned()),
            Some("") | Some("~") => {
                return Err(format!(
                    "`{raw}`: the namespace part must be `*`, `.` or a namespace name"
                ));
            }
            Some(ns) => Some(ns.to_owned()),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let pattern = match name.as_str() {
            "" => return Err(format!("`{raw}`: empty host name")),
            "*" => HostPattern::Any,
            n if n.starts_with("*.") && !n[2..].contains('*') && n.len() > 2 => HostPattern::Suffix(n[1..].to_owned()),
            n if n.contains('*') => {
                return Err(format!(
                    "`{raw}`: a wildcard is only allowed as the whole first label (`*` or `*.example.com`)"
                ));
            }
            n if n.contains('/') || n.contains(':') || n.contains(' ') => {
                return Err(format!("`{raw}`: not a DNS name"));
            }
            n => HostPattern::Exact(n.to_owned()),
        };
        Ok(Self { namespace, pattern })
    }

    /// Whether a VirtualService in `namespace` may bind through this host entry.
    pub fn admits(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// The host a request names (`Host`/`:authority` without port), normalized.
pub fn request_host(authority: &str) -> String {
    crate::config::hosts::split_authority(authority)
        .0
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_server_hosts() {
        let h = ServerHost::parse("*", "gw").unwrap();
        assert!(h.admits("anything") && h.pattern.matches("x.example.com"));
        let h = ServerHost::parse("bookinfo/*.example.com", "gw").unwrap();
        assert!(h.admits("bookinfo") && !h.admits("other"));
        assert!(h.pattern.matches("uk.example.com") && !h.pattern.matches("example.com"));
        let h = ServerHost::parse("./Example.COM", "gw").unwrap();
        assert!(h.admits("gw") && !h.admits("bookinfo"));
        assert!(h.pattern.matches("example.com"));
        let h = ServerHost::parse("*/shop.example.com", "gw").unwrap();
        assert!(h.admits("x") && !h.pattern.matches("other.example.com"));
        for bad in ["", "a*.example.com", "ns/", "/x", "*.*.com"] {
            assert!(ServerHost::parse(bad, "gw").is_err(), "{bad}");
        }
    }

    #[test]
    fn request_hosts_drop_port_and_case() {
        assert_eq!(request_host("Shop.Example.com:8443"), "shop.example.com");
        assert_eq!(request_host("example.com."), "example.com");
    }
}
