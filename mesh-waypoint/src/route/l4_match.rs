//! `L4MatchAttributes` of a VirtualService `tcp` route: blocks are OR'ed, fields
//! inside a block AND'ed, as for HTTP matches.

use std::collections::BTreeMap;
use std::net::IpAddr;

use mesh_common::authz::matcher::Cidr;

use super::matching::Source;

/// What a `tcp` match reads of one stream.
pub struct StreamInfo<'a> {
    /// The port the client addressed (the Service port).
    pub port: u16,
    /// The address the client addressed (a Service VIP); `None` when it named a host.
    pub destination: Option<IpAddr>,
    pub source: &'a Source,
}

#[derive(Clone, Debug, Default)]
pub struct L4Match {
    pub port: Option<u16>,
    /// `destinationSubnets`: the addressed IP is in one of them.
    pub destination_subnets: Vec<Cidr>,
    /// `sourceSubnet`: the client's address is in it.
    pub source_subnet: Option<Cidr>,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
}

impl L4Match {
    pub fn matches(&self, s: &StreamInfo<'_>) -> bool {
        let in_block = |c: &Cidr, ip: Option<IpAddr>| ip.is_some_and(|ip| c.contains(ip));
        self.port.is_none_or(|p| p == s.port)
            && (self.destination_subnets.is_empty()
                || self.destination_subnets.iter().any(|c| in_block(c, s.destination)))
            && self.source_subnet.as_ref().is_none_or(|c| in_block(c, s.source.ip))
            && self
                .source_labels
                .iter()
                .all(|(k, v)| s.source.labels.get(k) == Some(v))
            && self
                .source_namespace
                .as_ref()
                .is_none_or(|ns| s.source.namespace.as_ref() == Some(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("cidr")
    }

    fn source(ip: &str, ns: &str, labels: &[(&str, &str)]) -> Source {
        Source {
            ip: ip.parse().ok(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            namespace: Some(ns.into()),
        }
    }

    fn stream<'a>(port: u16, dst: &str, source: &'a Source) -> StreamInfo<'a> {
        StreamInfo {
            port,
            destination: dst.parse().ok(),
            source,
        }
    }

    #[test]
    fn every_field_of_a_block_must_match() {
        let m = L4Match {
            port: Some(3306),
            destination_subnets: vec![cidr("198.18.10.0/24")],
            source_subnet: Some(cidr("198.18.1.0/24")),
            source_labels: [("app".to_string(), "web".to_string())].into(),
            source_namespace: Some("shop".into()),
        };
        let web = source("198.18.1.7", "shop", &[("app", "web"), ("version", "v1")]);
        assert!(m.matches(&stream(3306, "198.18.10.5", &web)));
        assert!(!m.matches(&stream(3307, "198.18.10.5", &web)), "port");
        assert!(!m.matches(&stream(3306, "198.18.11.5", &web)), "destination subnet");
        assert!(!m.matches(&stream(3306, "db", &web)), "a host name is in no subnet");
        let far = source("198.18.2.7", "shop", &[("app", "web")]);
        assert!(!m.matches(&stream(3306, "198.18.10.5", &far)), "source subnet");
        let other_ns = source("198.18.1.7", "other", &[("app", "web")]);
        assert!(!m.matches(&stream(3306, "198.18.10.5", &other_ns)), "source namespace");
        let api = source("198.18.1.7", "shop", &[("app", "api")]);
        assert!(!m.matches(&stream(3306, "198.18.10.5", &api)), "source labels");
        let unknown = Source {
            ip: "198.18.1.7".parse().ok(),
            ..Source::default()
        };
        assert!(
            !m.matches(&stream(3306, "198.18.10.5", &unknown)),
            "an unknown pod has no labels"
        );
    }

    #[test]
    fn an_empty_block_matches_everything() {
        let anyone = Source::default();
        assert!(L4Match::default().matches(&stream(1, "db", &anyone)));
    }
}
