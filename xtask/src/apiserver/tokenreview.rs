//! `POST /apis/authentication.k8s.io/v1/tokenreviews`, answered from the tokens the
//! test told the server about ([`super::ApiServer::add_token`]), as a real API server
//! answers for projected, pod-bound ServiceAccount tokens: the ServiceAccount as the
//! user name, the pod in `extra`, the audiences the token and the request share. A
//! token it was not told about, or one none of whose audiences was asked for, is not
//! authenticated.

use std::collections::HashMap;

use serde_json::{Value, json};

/// Who a token stands for (what the kubelet's projected token would be bound to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to (`authentication.kubernetes.io/pod-name`).
    pub pod: Option<String>,
    /// The token's audiences (`serviceAccountToken.audience` of the projected volume).
    pub audiences: Vec<String>,
}

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";

/// The TokenReview `request` (JSON) with its `status` filled in.
pub fn review(tokens: &HashMap<String, TokenSubject>, request: &Value) -> Value {
    let token = request["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<&str> = request["spec"]["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let status = match tokens.get(token) {
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
        Some(s) => {
            let shared: Vec<&str> = if asked.is_empty() {
                s.audiences.iter().map(String::as_str).collect()
            } else {
                asked
                    .iter()
                    .copied()
                    .filter(|a| s.audiences.iter().any(|t| t == a))
                    .collect()
            };
            if shared.is_empty() {
                json!({"authenticated": false, "error": format!(
                    "invalid bearer token, token audiences {:?} is invalid for the target audiences {asked:?}",
                    s.audiences
                )})
            } else {
                json!({"authenticated": true, "audiences": shared, "user": user(s)})
            }
        }
    };
    let mut answer = request.clone();
    answer["apiVersion"] = "authentication.k8s.io/v1".into();
    answer["kind"] = "TokenReview".into();
    answer["status"] = status;
    answer
}

fn user(s: &TokenSubject) -> Value {
    let mut user = json!({
        "username": format!("system:serviceaccount:{}:{}", s.namespace, s.service_account),
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", s.namespace), "system:authenticated"],
    });
    if let Some(pod) = &s.pod {
        user["extra"] = json!({ POD_NAME: [pod] });
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> HashMap<String, TokenSubject> {
        let subject = TokenSubject {
            namespace: "mesh-system".into(),
            service_account: "mesh-node".into(),
            pod: Some("mesh-node-n1".into()),
            audiences: vec!["mesh-ca".into()],
        };
        [("t1".to_owned(), subject)].into()
    }

    fn ask(token: &str, audiences: &[&str]) -> Value {
        review(
            &tokens(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": token, "audiences": audiences}}),
        )["status"]
            .clone()
    }

    #[test]
    fn known_tokens_name_their_service_account_and_pod_for_their_audience_only() {
        let ok = ask("t1", &["mesh-ca"]);
        assert_eq!(ok["authenticated"], true);
        assert_eq!(ok["user"]["username"], "system:serviceaccount:mesh-system:mesh-node");
        assert_eq!(ok["user"]["extra"][POD_NAME][0], "mesh-node-n1");
        assert_eq!(ok["audiences"], json!(["mesh-ca"]));
        assert_eq!(ask("t1", &["api"])["authenticated"], false);
        assert_eq!(ask("forged", &["mesh-ca"])["authenticated"], false);
    }
}
