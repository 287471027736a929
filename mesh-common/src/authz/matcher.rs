//! Istio's value matching: strings (`abc` exact, `abc*` prefix, `*abc` suffix, `*`
//! any non-empty value) and IP blocks (`10.0.0.0/8` or a single address).

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any value that is present and not empty.
    Presence,
}

impl StringMatch {
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            StringMatch::Presence
        } else if let Some(p) = pattern.strip_suffix('*') {
            StringMatch::Prefix(p.to_owned())
        } else if let Some(s) = pattern.strip_prefix('*') {
            StringMatch::Suffix(s.to_owned())
        } else {
            StringMatch::Exact(pattern.to_owned())
        }
    }

    /// The same pattern with its literal part lowercased (for case-insensitive fields).
    pub fn lowercase(self) -> Self {
        match self {
            StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
            StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
            StringMatch::Presence => StringMatch::Presence,
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(s) => f.write_str(s),
            StringMatch::Prefix(p) => write!(f, "{p}*"),
            StringMatch::Suffix(s) => write!(f, "*{s}"),
            StringMatch::Presence => f.write_str("*"),
        }
    }
}

impl Serialize for StringMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An address block; a single address is a block of one (`/32`, `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d`, `a.b.c.d/n`, or the IPv6 forms. Host bits may be set (Istio accepts
    /// `10.1.2.3/8` and means the block).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be a number in 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4-mapped IPv6 peer (dual-stack socket) is the IPv4 address it carries.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

fn same_prefix(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (net >> shift) == (ip >> shift)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_patterns_follow_istio() {
        let m = |p: &str, v: &str| StringMatch::parse(p).matches(v);
        assert!(m("abc", "abc") && !m("abc", "abcd") && !m("abc", "xabc"));
        assert!(m("abc*", "abcd") && m("abc*", "abc") && !m("abc*", "xabc"));
        assert!(m("*abc", "xabc") && m("*abc", "abc") && !m("*abc", "abcx"));
        assert!(m("*", "x") && !m("*", ""));
        assert!(
            m("/a*b", "/a*b") && !m("/a*b", "/aXb"),
            "a star in the middle is literal"
        );
        assert_eq!(
            StringMatch::parse("Abc*").lowercase(),
            StringMatch::Prefix("abc".into())
        );
    }

    #[test]
    fn cidrs_and_single_addresses() {
        let c = |t: &str| Cidr::parse(t).unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("10.1.2.3/8").contains(ip("10.9.9.9")), "host bits are ignored");
        assert!(c("198.18.1.5").contains(ip("198.18.1.5")));
        assert!(!c("198.18.1.5").contains(ip("198.18.1.6")));
        assert!(c("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")), "families do not mix");
        assert!(c("2001:db8::/32").contains(ip("2001:db8:1::7")));
        assert!(c("198.18.0.0/15").contains(ip("::ffff:198.19.0.1")), "v4-mapped peers");
        for bad in ["10.0.0.0/33", "10.0.0/8", "abc", "10.0.0.0/x", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
