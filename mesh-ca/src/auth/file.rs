//! Local mode's TokenReview: a file (YAML) the harness writes, mapping each token it
//! issued to what the API server's TokenReview would say about it — the ServiceAccount,
//! the bound pod, and that pod's node. Re-read at every request, so the harness can add
//! tokens while the CA runs. Not a bypass: a token not in the file is refused.
//!
//! ```yaml
//! tokens:
//! - {token: 3f9c..., namespace: mesh-system, serviceAccount: mesh-node, podName: mesh-node-node1, nodeName: node1}
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use super::{BoxFuture, Caller, Denial, TokenReviewer};

#[derive(Debug, Deserialize)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    token: String,
    namespace: String,
    service_account: String,
    #[serde(default)]
    pod_name: Option<String>,
    #[serde(default)]
    node_name: Option<String>,
}

pub struct FileReviewer {
    path: PathBuf,
}

impl FileReviewer {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    fn lookup(&self, token: &str) -> Result<Caller, Denial> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| Denial::Unavailable(format!("cannot read the token file {}: {e}", self.path.display())))?;
        let file: TokenFile = serde_yaml::from_str(&text)
            .map_err(|e| Denial::Unavailable(format!("token file {}: {e}", self.path.display())))?;
        file.tokens
            .into_iter()
            .find(|e| constant_time_eq(e.token.as_bytes(), token.as_bytes()))
            .map(|e| Caller {
                namespace: e.namespace,
                service_account: e.service_account,
                pod: e.pod_name,
                node: e.node_name,
            })
            .ok_or_else(|| Denial::BadToken("the token is not known to the cluster".into()))
    }
}

impl TokenReviewer for FileReviewer {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Denial>> {
        Box::pin(async move { self.lookup(token) })
    }
}

/// Token comparison that does not stop at the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_tokens_map_to_their_pod_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(
            &path,
            "tokens:\n- {token: abc, namespace: mesh-system, serviceAccount: mesh-node, podName: p, nodeName: n1}\n",
        )
        .unwrap();
        let r = FileReviewer::new(path);
        let c = r.review("abc").await.unwrap();
        assert_eq!(
            (c.service_account.as_str(), c.node.as_deref()),
            ("mesh-node", Some("n1"))
        );
        assert!(matches!(r.review("abd").await, Err(Denial::BadToken(_))));
        assert!(matches!(r.review("").await, Err(Denial::BadToken(_))));
    }
}
