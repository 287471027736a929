//! Label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`) and
//! field selectors (`path=value`, `path!=value` over the object's fields, e.g.
//! `spec.nodeName=node1`, `metadata.name=x`), as the API server parses them.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

/// A parsed field selector.
#[derive(Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<Requirement>);

/// The selector text could not be parsed; the API server answers 400 with it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid selector {selector:?}: {problem}")]
pub struct SelectorError {
    pub selector: String,
    pub problem: String,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        split_terms(text)
            .into_iter()
            .map(|t| label_term(t).map_err(|problem| err(text, problem)))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.0
            .iter()
            .all(|r| holds(r, |k| labels.get(k).and_then(Value::as_str)))
    }
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        split_terms(text)
            .into_iter()
            .map(|t| field_term(t).map_err(|problem| err(text, problem)))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|r| {
            holds(r, |path| {
                let v = path.split('.').try_fold(object, |v, part| v.get(part))?;
                v.as_str()
            })
        })
    }
}

fn err(selector: &str, problem: String) -> SelectorError {
    SelectorError {
        selector: selector.into(),
        problem,
    }
}

fn holds<'a>(r: &Requirement, get: impl Fn(&str) -> Option<&'a str>) -> bool {
    match r {
        // A missing field compares as "" (the API server's behaviour for field selectors).
        Requirement::Equals(k, v) => get(k).unwrap_or("") == v,
        Requirement::NotEquals(k, v) => get(k).unwrap_or("") != v,
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
        Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
        Requirement::NotIn(k, vs) => get(k).is_none_or(|v| vs.iter().all(|x| x != v)),
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn label_term(t: &str) -> Result<Requirement, String> {
    if let Some(r) = equality(t)? {
        return Ok(r);
    }
    let words: Vec<&str> = t.splitn(3, ' ').map(str::trim).collect();
    match words.as_slice() {
        [key, op, set] if *op == "in" || *op == "notin" => {
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{t:?}: the values of `{op}` must be in parentheses"))?;
            let values = inner.split(',').map(|v| v.trim().to_owned()).collect();
            Ok(if *op == "in" {
                Requirement::In((*key).into(), values)
            } else {
                Requirement::NotIn((*key).into(), values)
            })
        }
        [key] => Ok(match key.strip_prefix('!') {
            Some(k) => Requirement::NotExists(k.trim().into()),
            None => Requirement::Exists((*key).into()),
        }),
        _ => Err(format!("{t:?} is not a selector term")),
    }
}

fn field_term(t: &str) -> Result<Requirement, String> {
    equality(t)?.ok_or_else(|| format!("{t:?}: field selectors support only =, == and !="))
}

fn equality(t: &str) -> Result<Option<Requirement>, String> {
    let (key, value, negated) = if let Some((k, v)) = t.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        (k, v, false)
    } else {
        return Ok(None);
    };
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() {
        return Err(format!("{t:?} has no key"));
    }
    Ok(Some(if negated {
        Requirement::NotEquals(key.into(), value.into())
    } else {
        Requirement::Equals(key.into(), value.into())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value, node: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "a", "labels": labels}, "spec": {"nodeName": node}})
    }

    #[test]
    fn label_selectors_like_the_api_server() {
        let p = pod(json!({"app": "reviews", "version": "v2"}), "n1");
        let sel = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(sel("app=reviews"));
        assert!(sel("app==reviews,version!=v1"));
        assert!(!sel("app=reviews,version=v1"));
        assert!(sel("version in (v1, v2)"));
        assert!(!sel("version notin (v2)"));
        assert!(sel("app,!tier"));
        assert!(!sel("tier"));
        assert!(sel(""));
        assert!(LabelSelector::parse("version in v1").is_err());
    }

    #[test]
    fn field_selectors_over_object_paths() {
        let p = pod(json!({}), "n1");
        let sel = |s: &str| FieldSelector::parse(s).unwrap().matches(&p);
        assert!(sel("spec.nodeName=n1"));
        assert!(!sel("spec.nodeName=n2"));
        assert!(sel("metadata.namespace!=b,metadata.name=p"));
        assert!(sel("status.podIP="), "a missing field compares as empty");
        let e = FieldSelector::parse("spec.nodeName in (a)").unwrap_err();
        assert!(e.to_string().contains("only ="), "{e}");
    }
}
