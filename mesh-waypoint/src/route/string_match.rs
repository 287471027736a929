//! Compiled `StringMatch`: exact, prefix, or a whole-string RE2-style regex.

use mesh_common::model::FieldError;
use mesh_common::model::istio::networking::StringMatch;
use regex::Regex;

#[derive(Clone, Debug)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    /// `{}`: the value only has to exist.
    Present,
    /// Gateway API `PathPrefix`: whole path elements (`/foo` matches `/foo` and
    /// `/foo/bar`, not `/foobar`). Kept without its trailing `/`: `/` is `""`.
    PathPrefix(String),
}

impl StrMatch {
    /// `path` names the field in errors (e.g. `spec.http[1].match[0].uri`).
    pub fn compile(m: &StringMatch, path: &str) -> Result<Self, FieldError> {
        match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), None, None) => Ok(Self::Exact(e.clone())),
            (None, Some(p), None) => Ok(Self::Prefix(p.clone())),
            (None, None, Some(r)) => compile_regex(r)
                .map(Self::Regex)
                .map_err(|e| FieldError::new(format!("{path}.regex"), e)),
            (None, None, None) => Ok(Self::Present),
            _ => Err(FieldError::new(path, "set only one of exact, prefix, regex")),
        }
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(e) => value == e,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Regex(r) => r.is_match(value),
            Self::Present => true,
            Self::PathPrefix(p) => value
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// Case-insensitive variant for `ignoreUriCase` (exact and prefix only, as Istio).
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            Self::Exact(e) => value.eq_ignore_ascii_case(e),
            Self::Prefix(p) => {
                value.len() >= p.len() && value.is_char_boundary(p.len()) && value[..p.len()].eq_ignore_ascii_case(p)
            }
            other => other.matches(value),
        }
    }
}

/// Istio regexes match the whole string (Envoy `safe_regex`), so anchor them. The
/// pattern must parse on its own first: wrapped unchecked, `a)|(b` balances the
/// wrapper's parentheses and escapes the anchors (`^(?:a)|(b)$`).
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| regex_message(&e))?;
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| regex_message(&e))
}

/// The regex crate's message spans several lines with a caret diagram; keep the
/// last line, which says what is wrong ("unclosed group").
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or(text.clone(), |l| l.trim().trim_start_matches("error: ").to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(yaml: &str) -> StringMatch {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn kinds() {
        let cases = [
            ("{exact: /a}", "/a", true),
            ("{exact: /a}", "/ab", false),
            ("{prefix: /a}", "/ab", true),
            ("{regex: '/a.'}", "/ab", true),
            ("{regex: '/a.'}", "/abc", false),
            ("{}", "x", true),
        ];
        for (m, v, want) in cases {
            assert_eq!(StrMatch::compile(&sm(m), "p").unwrap().matches(v), want, "{m} {v}");
        }
        assert!(
            StrMatch::compile(&sm("{prefix: /API}"), "p")
                .unwrap()
                .matches_ignore_case("/api/x")
        );
    }

    #[test]
    fn bad_regex_names_field_and_problem() {
        let e = StrMatch::compile(&sm("{regex: '(unclosed'}"), "spec.http[1].match[0].uri").unwrap_err();
        assert_eq!(e.to_string(), "spec.http[1].match[0].uri.regex: unclosed group");
        assert!(StrMatch::compile(&sm("{exact: a, prefix: b}"), "p").is_err());
    }

    #[test]
    fn path_prefix_matches_whole_elements() {
        let m = StrMatch::PathPrefix("/foo".into());
        for (path, want) in [
            ("/foo", true),
            ("/foo/", true),
            ("/foo/bar", true),
            ("/foobar", false),
            ("/fo", false),
        ] {
            assert_eq!(m.matches(path), want, "{path}");
        }
        assert!(StrMatch::PathPrefix(String::new()).matches("/anything"));
    }

    /// Found by fuzz/fuzz_targets/route_compile.rs: a pattern closing the anchoring
    /// group compiled, and `/admin)|(x` matched any path starting with /admin.
    #[test]
    fn a_pattern_cannot_escape_the_anchors() {
        for bad in ["/admin)|(x", ")+(", "a)(?:b"] {
            let e = compile_regex(bad).unwrap_err();
            assert!(
                e.contains("unopened group") || e.contains("unclosed group"),
                "{bad}: {e}"
            );
        }
        let m = StrMatch::compile(&sm("{regex: '/a|/b'}"), "p").unwrap();
        assert!(m.matches("/b") && !m.matches("/bc") && !m.matches("x/a"));
    }
}
