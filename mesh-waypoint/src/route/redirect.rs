//! `redirect`: answer with a Location built from the request and the rule.

use http::StatusCode;

#[derive(Clone, Debug)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<RedirectPort>,
    pub scheme: Option<String>,
    pub code: StatusCode,
    /// Gateway API `ReplacePrefixMatch`: the `PathPrefix` this route matched, which
    /// `uri` replaces element-wise; the query is kept.
    pub replace_prefix: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectPort {
    Fixed(u16),
    /// `derivePort: FROM_REQUEST_PORT`.
    FromRequest,
    /// `derivePort: FROM_PROTOCOL_DEFAULT`: no port in the Location.
    ProtocolDefault,
}

impl Redirect {
    /// `host` and `port` are the request's; `path_and_query` is its full target.
    pub fn location(&self, scheme: &str, host: &str, port: u16, path_and_query: &str) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = self.authority.as_deref().unwrap_or(host);
        let replaced;
        let path = match (&self.replace_prefix, &self.uri) {
            (Some(prefix), Some(new)) => {
                let (path, query) = path_and_query
                    .split_once('?')
                    .map_or((path_and_query, None), |(p, q)| (p, Some(q)));
                let path = super::rewrite::replace_path_prefix(path, prefix, new);
                replaced = query.map_or(path.clone(), |q| format!("{path}?{q}"));
                replaced.as_str()
            }
            _ => self.uri.as_deref().unwrap_or(path_and_query),
        };
        let port = match self.port {
            Some(RedirectPort::Fixed(p)) => Some(p),
            Some(RedirectPort::FromRequest) => Some(port),
            Some(RedirectPort::ProtocolDefault) => None,
            // Keep a non-default request port only when the authority is not replaced.
            None => (self.authority.is_none() && !is_default_port(scheme, port)).then_some(port),
        };
        match port {
            Some(p) if !is_default_port(scheme, p) => format!("{scheme}://{host}:{p}{path}"),
            _ => format!("{scheme}://{host}{path}"),
        }
    }
}

fn is_default_port(scheme: &str, port: u16) -> bool {
    (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uri: Option<&str>, authority: Option<&str>, port: Option<RedirectPort>, scheme: Option<&str>) -> Redirect {
        Redirect {
            uri: uri.map(Into::into),
            authority: authority.map(Into::into),
            port,
            scheme: scheme.map(Into::into),
            code: StatusCode::MOVED_PERMANENTLY,
            replace_prefix: None,
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            r(Some("/v1/x"), None, None, None).location("http", "a", 9080, "/old?q=1"),
            "http://a:9080/v1/x"
        );
        assert_eq!(
            r(None, Some("b"), None, Some("https")).location("http", "a", 9080, "/p"),
            "https://b/p"
        );
        assert_eq!(
            r(None, Some("b"), Some(RedirectPort::Fixed(8443)), None).location("http", "a", 80, "/p"),
            "http://b:8443/p"
        );
        assert_eq!(
            r(None, Some("b"), Some(RedirectPort::FromRequest), None).location("http", "a", 9080, "/p"),
            "http://b:9080/p"
        );
    }
}
