//! `rewrite`: path (whole, matched prefix, or regex) and authority.

use regex::Regex;

use super::string_match::StrMatch;

#[derive(Clone, Debug)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex: Option<(Regex, String)>,
}

impl Rewrite {
    /// New path for `path`. When the route matched on a URI prefix, `uri` replaces
    /// only that prefix (Istio semantics); otherwise it replaces the whole path.
    pub fn path(&self, path: &str, matched_uri: Option<&StrMatch>, ignore_case: bool) -> String {
        if let Some((re, with)) = &self.uri_regex {
            return re.replace_all(path, with.as_str()).into_owned();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_whole_and_regex() {
        let rw = Rewrite {
            uri: Some("/v2".into()),
            authority: None,
            uri_regex: None,
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
        };
        assert_eq!(re.path("/service/foo/v1/api", None, false), "/v1/api/instance/foo");
    }
}
