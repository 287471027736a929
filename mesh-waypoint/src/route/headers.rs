//! `headers`: request/response set, add, remove.

use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Clone, Debug, Default)]
pub struct HeaderRules {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Order as Envoy: remove, then set (replace), then add (append).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_set_add() {
        let mut h = HeaderMap::new();
        h.insert("a", HeaderValue::from_static("1"));
        h.insert("b", HeaderValue::from_static("1"));
        h.insert("c", HeaderValue::from_static("1"));
        let ops = HeaderOps {
            set: vec![(HeaderName::from_static("a"), HeaderValue::from_static("2"))],
            add: vec![(HeaderName::from_static("b"), HeaderValue::from_static("3"))],
            remove: vec![HeaderName::from_static("c")],
        };
        ops.apply(&mut h);
        assert_eq!(h.get_all("a").iter().count(), 1);
        assert_eq!(h["a"], "2");
        assert_eq!(h.get_all("b").iter().count(), 2);
        assert!(h.get("c").is_none());
    }
}
