//! `rewrite`: path (whole, matched prefix, or regex) and authority.

use regex::Regex;

use super::string_match::StrMatch;

#[derive(Clone, Debug)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex: Option<(Regex, String)>,
    /// Gateway API `ReplacePrefixMatch`: the `PathPrefix` this route matched, which
    /// `uri` replaces element-wise ([`replace_path_prefix`]).
    pub replace_prefix: Option<String>,
}

impl Rewrite {
    /// New path for `path`. When the route matched on a URI prefix, `uri` replaces
    /// only that prefix (Istio semantics); otherwise it replaces the whole path.
    pub fn path(&self, path: &str, matched_uri: Option<&StrMatch>, ignore_case: bool) -> String {
        if let Some((re, with)) = &self.uri_regex {
            return re.replace_all(path, with.as_str()).into_owned();
        }
        if let (Some(prefix), Some(new)) = (&self.replace_prefix, &self.uri) {
            return replace_path_prefix(path, prefix, new);
        }
        match (&self.uri, matched_uri) {
            (Some(new), Some(StrMatch::Prefix(prefix))) => {
                let cut = if ignore_case || path.starts_with(prefix.as_str()) {
                    prefix.len().min(path.len())
                } else {
                    0
                };
                format!("{new}{}", &path[cut..])
            }
            (Some(new), _) => new.clone(),
            (None, _) => path.to_owned(),
        }
    }
}

/// Gateway API's `ReplacePrefixMatch`: `prefix` (whole path elements, trailing `/`
/// ignored) becomes `replacement`, and the result is never empty (`/foo/bar` with
/// `/foo` → `/xyz` is `/xyz/bar`; with `/foo` → `` it is `/bar`).
pub fn replace_path_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let Some(rest) = path.strip_prefix(prefix) else {
        return path.to_owned();
    };
    let out = format!("{}{rest}", replacement.trim_end_matches('/'));
    if out.is_empty() { "/".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_whole_and_regex() {
        let rw = Rewrite {
            uri: Some("/v2".into()),
            authority: None,
            uri_regex: None,
            replace_prefix: None,
        };
        assert_eq!(
            rw.path("/v1/items", Some(&StrMatch::Prefix("/v1".into())), false),
            "/v2/items"
        );
        assert_eq!(
            rw.path("/v1/items", Some(&StrMatch::Exact("/v1/items".into())), false),
            "/v2"
        );
        let re = Rewrite {
            uri: None,
            authority: None,
            uri_regex: Some((Regex::new("^/service/([^/]+)(/.*)$").unwrap(), "$2/instance/$1".into())),
            replace_prefix: None,
        };
        assert_eq!(re.path("/service/foo/v1/api", None, false), "/v1/api/instance/foo");
    }

    /// The table of the Gateway API reference (HTTPPathModifier).
    #[test]
    fn gateway_api_prefix_replacement() {
        let cases = [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo", "/foo/bar", "", "/bar"),
            ("/foo/", "/foo/bar", "", "/bar"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/", "/", "/"),
        ];
        for (prefix, path, with, want) in cases {
            assert_eq!(replace_path_prefix(path, prefix, with), want, "{prefix} {path} {with}");
        }
        let rw = Rewrite {
            uri: Some("/v2".into()),
            authority: None,
            uri_regex: None,
            replace_prefix: Some("/v1".into()),
        };
        assert_eq!(
            rw.path("/v1/items", Some(&StrMatch::PathPrefix("/v1".into())), false),
            "/v2/items"
        );
        let full = Rewrite {
            replace_prefix: None,
            ..rw
        };
        assert_eq!(
            full.path("/v1/items", Some(&StrMatch::PathPrefix("/v1".into())), false),
            "/v2"
        );
    }
}
