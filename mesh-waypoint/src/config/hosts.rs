//! Host names: short names expand against the object's namespace, wildcards match
//! suffixes, request authorities are canonicalized to Service FQDNs.

pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// `reviews` in `bookinfo` → `reviews.bookinfo.svc.cluster.local`; names with a dot
/// are already fully qualified (Istio's rule).
pub fn qualify(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains('.') || host == "*" {
        host
    } else {
        format!("{host}.{namespace}.{CLUSTER_DOMAIN}")
    }
}

pub fn service_fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.{CLUSTER_DOMAIN}")
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HostPattern {
    Exact(String),
    /// `*.bookinfo.svc.cluster.local` is kept as `.bookinfo.svc.cluster.local`.
    Suffix(String),
    Any,
}

impl HostPattern {
    pub fn parse(host: &str, namespace: &str) -> Self {
        match host.trim() {
            "*" => Self::Any,
            h if h.starts_with("*.") => Self::Suffix(h[1..].to_ascii_lowercase()),
            h => Self::Exact(qualify(h, namespace)),
        }
    }

    pub fn matches(&self, fqdn: &str) -> bool {
        match self {
            Self::Exact(h) => h == fqdn,
            Self::Suffix(s) => fqdn.ends_with(s.as_str()),
            Self::Any => true,
        }
    }

    /// Exact names win over wildcards, longer wildcards over shorter.
    pub fn specificity(&self) -> usize {
        match self {
            Self::Exact(_) => usize::MAX,
            Self::Suffix(s) => s.len(),
            Self::Any => 0,
        }
    }
}

/// The host part of an authority (`reviews:9080` → `reviews`, `[::1]:80` → `::1`).
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (authority, None),
    }
}

/// Request host → candidate FQDN: `reviews`, `reviews.bookinfo`, `reviews.bookinfo.svc`
/// all mean the Service; anything else is taken as written.
pub fn canonical_request_host(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels = host.split('.').count();
    if host.ends_with(".svc") {
        format!("{host}.cluster.local")
    } else if labels == 2 && !host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("{host}.{CLUSTER_DOMAIN}")
    } else {
        qualify(&host, namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualification_and_patterns() {
        assert_eq!(qualify("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
        assert_eq!(
            qualify("reviews.bookinfo.svc.cluster.local", "x"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert!(HostPattern::parse("*.bookinfo.svc.cluster.local", "x").matches("reviews.bookinfo.svc.cluster.local"));
        assert!(!HostPattern::parse("*.bookinfo.svc.cluster.local", "x").matches("reviews.other.svc.cluster.local"));
        assert!(HostPattern::parse("*", "x").matches("anything"));
        assert!(HostPattern::parse("Reviews", "b").matches("reviews.b.svc.cluster.local"));
    }

    #[test]
    fn request_hosts() {
        for h in [
            "reviews",
            "reviews.bookinfo",
            "reviews.bookinfo.svc",
            "reviews.bookinfo.svc.cluster.local",
        ] {
            assert_eq!(
                canonical_request_host(h, "bookinfo"),
                "reviews.bookinfo.svc.cluster.local",
                "{h}"
            );
        }
        assert_eq!(split_authority("reviews:9080"), ("reviews", Some(9080)));
        assert_eq!(split_authority("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_authority("10.0.0.1"), ("10.0.0.1", None));
    }
}
