//! Kubernetes mode: tokens are projected ServiceAccount tokens (audience `mesh-ca`),
//! verified by a TokenReview; the pod a token is bound to and the pods on a node come
//! from the API server (RBAC: `tokenreviews` create, `pods` get/list; see deploy/).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};

use super::{BoxFuture, Caller, Denial, PodView, TokenReviewer};

/// The key a bound ServiceAccount token's review carries its pod's name under.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

pub struct KubeAuth {
    client: Client,
    audience: String,
}

impl KubeAuth {
    pub fn new(client: Client, audience: String) -> Self {
        Self { client, audience }
    }
}

impl TokenReviewer for KubeAuth {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Denial>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: Some(vec![self.audience.clone()]),
                },
                ..Default::default()
            };
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| Denial::Unavailable(format!("TokenReview failed: {e}")))?;
            caller_of(answer.status.unwrap_or_default(), &self.audience)
        })
    }
}

fn caller_of(
    status: k8s_openapi::api::authentication::v1::TokenReviewStatus,
    audience: &str,
) -> Result<Caller, Denial> {
    if status.authenticated != Some(true) {
        return Err(Denial::BadToken(
            status.error.unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == audience))
    {
        return Err(Denial::BadToken(format!("the token is not for audience {audience}")));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let rest = username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| Denial::BadToken(format!("{username} is not a ServiceAccount")))?;
    let (namespace, service_account) = rest
        .split_once(':')
        .ok_or_else(|| Denial::BadToken(format!("malformed ServiceAccount user {username}")))?;
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get(POD_NAME_EXTRA))
        .and_then(|v| v.first().cloned());
    Ok(Caller {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod,
        node: None,
    })
}

impl PodView for KubeAuth {
    fn pod_node<'a>(&'a self, namespace: &'a str, pod: &'a str) -> BoxFuture<'a, Result<Option<String>, Denial>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let pod = api
                .get_opt(pod)
                .await
                .map_err(|e| Denial::Unavailable(format!("reading pod {namespace}/{pod}: {e}")))?;
            Ok(pod.and_then(|p| p.spec).and_then(|s| s.node_name))
        })
    }

    fn service_account_on_node<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<bool, Denial>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
            let pods = api
                .list(&params)
                .await
                .map_err(|e| Denial::Unavailable(format!("listing pods of {namespace} on {node}: {e}")))?;
            Ok(pods.items.iter().any(|p| {
                let spec = p.spec.as_ref();
                let sa = spec
                    .and_then(|s| s.service_account_name.as_deref())
                    .unwrap_or("default");
                let done = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
                sa == service_account && spec.and_then(|s| s.node_name.as_deref()) == Some(node) && !done
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    fn status(user: &str, audiences: &[&str], pod: Option<&str>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(user.into()),
                extra: pod.map(|p| [(POD_NAME_EXTRA.to_owned(), vec![p.to_owned()])].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn bound_service_account_token_names_its_pod() {
        let c = caller_of(
            status(
                "system:serviceaccount:mesh-system:mesh-node",
                &["mesh-ca"],
                Some("mesh-node-x"),
            ),
            "mesh-ca",
        )
        .unwrap();
        assert_eq!(c.namespace, "mesh-system");
        assert_eq!(c.service_account, "mesh-node");
        assert_eq!(c.pod.as_deref(), Some("mesh-node-x"));
    }

    #[test]
    fn wrong_audience_users_and_unauthenticated_tokens_are_refused() {
        let wrong = caller_of(status("system:serviceaccount:a:b", &["api"], None), "mesh-ca");
        assert!(matches!(wrong, Err(Denial::BadToken(_))));
        let user = caller_of(status("alice", &["mesh-ca"], None), "mesh-ca");
        assert!(matches!(user, Err(Denial::BadToken(_))));
        let mut s = status("system:serviceaccount:a:b", &["mesh-ca"], None);
        s.authenticated = Some(false);
        assert!(matches!(caller_of(s, "mesh-ca"), Err(Denial::BadToken(_))));
    }
}
