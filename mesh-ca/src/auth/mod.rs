//! Who is calling, and which identity it may have. A caller proves itself with a token
//! reviewed by a [`TokenReviewer`] (the API server's TokenReview, or in local mode a
//! file the harness writes); [`authorize`] then applies Istio's rules: a caller gets its
//! own service account's identity; a node agent (a trusted ServiceAccount, the node
//! daemon's) may ask for another identity only if a pod with that service account is
//! scheduled on the agent's own node (ztunnel's impersonation rule).

pub mod dir_pods;
pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kube;

use std::future::Future;
use std::pin::Pin;

use mesh_hbone::SpiffeId;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a TokenReview says about a token: the ServiceAccount and the pod it is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
    /// The bound pod's `spec.nodeName` when the reviewer knows it already.
    pub node: Option<String>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service_account)?;
        if let Some(pod) = &self.pod {
            write!(f, " (pod {pod})")?;
        }
        Ok(())
    }
}

/// Why a request was refused; the `reason` label of `mesh_ca_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("no bearer token in the `authorization` header")]
    NoToken,
    #[error("the token was not accepted: {0}")]
    BadToken(String),
    #[error("the request is for cluster {got:?}, this CA serves {want:?}")]
    WrongCluster { got: String, want: String },
    #[error("the requested identity {0:?} is not a SPIFFE id of this trust domain")]
    InvalidIdentity(String),
    #[error("{caller} may only obtain its own identity, not {requested}")]
    NotNodeAgent { caller: String, requested: String },
    #[error("the node of {caller} is unknown (its pod is not scheduled); it cannot obtain {requested}")]
    NodeUnknown { caller: String, requested: String },
    #[error(
        "{caller} on node {node} may not obtain {requested}: no pod with that service account is scheduled on {node}"
    )]
    NotOnNode {
        caller: String,
        node: String,
        requested: String,
    },
    #[error("cannot verify the caller now: {0}")]
    Unavailable(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reason {
    no_token,
    bad_token,
    wrong_cluster,
    invalid_identity,
    not_node_agent,
    node_unknown,
    not_on_node,
    unavailable,
}

impl Denial {
    pub fn reason(&self) -> Reason {
        match self {
            Self::NoToken => Reason::no_token,
            Self::BadToken(_) => Reason::bad_token,
            Self::WrongCluster { .. } => Reason::wrong_cluster,
            Self::InvalidIdentity(_) => Reason::invalid_identity,
            Self::NotNodeAgent { .. } => Reason::not_node_agent,
            Self::NodeUnknown { .. } => Reason::node_unknown,
            Self::NotOnNode { .. } => Reason::not_on_node,
            Self::Unavailable(_) => Reason::unavailable,
        }
    }
}

pub trait TokenReviewer: Send + Sync {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Denial>>;
}

/// The CA's view of scheduled pods (the API server, or the local config directory).
pub trait PodView: Send + Sync {
    /// `spec.nodeName` of a pod, `None` if the pod does not exist or is not scheduled.
    fn pod_node<'a>(&'a self, namespace: &'a str, pod: &'a str) -> BoxFuture<'a, Result<Option<String>, Denial>>;
    /// Whether a pod of `namespace` with `service_account` is scheduled on `node`.
    fn service_account_on_node<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<bool, Denial>>;
}

/// What the CA enforces besides the token.
#[derive(Clone, Debug)]
pub struct Policy {
    pub trust_domain: String,
    pub cluster_id: String,
    /// `namespace/serviceaccount` of node agents allowed to impersonate their pods.
    pub node_agents: Vec<(String, String)>,
}

/// The request as the CA sees it, before authentication.
pub struct Ask<'a> {
    pub token: Option<&'a str>,
    pub cluster_id: Option<&'a str>,
    pub impersonated: Option<&'a str>,
}

/// The identity the caller may have for this request, or why not.
pub async fn authorize(
    policy: &Policy,
    reviewer: &dyn TokenReviewer,
    pods: &dyn PodView,
    ask: &Ask<'_>,
) -> Result<(Caller, SpiffeId), Denial> {
    let token = ask.token.filter(|t| !t.is_empty()).ok_or(Denial::NoToken)?;
    if let Some(got) = ask.cluster_id.filter(|c| *c != policy.cluster_id) {
        return Err(Denial::WrongCluster {
            got: got.to_owned(),
            want: policy.cluster_id.clone(),
        });
    }
    let caller = reviewer.review(token).await?;
    let own = SpiffeId::new(&policy.trust_domain, &caller.namespace, &caller.service_account);
    let requested = match ask.impersonated {
        None => return Ok((caller, own)),
        Some(s) => s
            .parse::<SpiffeId>()
            .ok()
            .filter(|id| id.trust_domain == policy.trust_domain)
            .ok_or_else(|| Denial::InvalidIdentity(s.to_owned()))?,
    };
    if requested == own {
        return Ok((caller, own));
    }
    let is_agent = policy
        .node_agents
        .iter()
        .any(|(ns, sa)| *ns == caller.namespace && *sa == caller.service_account);
    if !is_agent {
        return Err(Denial::NotNodeAgent {
            caller: caller.to_string(),
            requested: requested.to_string(),
        });
    }
    let node = match (&caller.node, &caller.pod) {
        (Some(n), _) => Some(n.clone()),
        (None, Some(pod)) => pods.pod_node(&caller.namespace, pod).await?,
        (None, None) => None,
    };
    let Some(node) = node else {
        return Err(Denial::NodeUnknown {
            caller: caller.to_string(),
            requested: requested.to_string(),
        });
    };
    if !pods
        .service_account_on_node(&requested.namespace, &requested.service_account, &node)
        .await?
    {
        return Err(Denial::NotOnNode {
            caller: caller.to_string(),
            node,
            requested: requested.to_string(),
        });
    }
    Ok((caller, requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl TokenReviewer for Fixed {
        fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, Denial>> {
            let caller = |ns: &str, sa: &str, pod: &str| Caller {
                namespace: ns.into(),
                service_account: sa.into(),
                pod: Some(pod.into()),
                node: None,
            };
            Box::pin(async move {
                match token {
                    "node1" => Ok(caller("mesh-system", "mesh-node", "mesh-node-abc")),
                    "waypoint" => Ok(caller("shop", "waypoint", "waypoint-1")),
                    _ => Err(Denial::BadToken("unknown".into())),
                }
            })
        }
    }

    struct Pods;
    impl PodView for Pods {
        fn pod_node<'a>(&'a self, _: &'a str, pod: &'a str) -> BoxFuture<'a, Result<Option<String>, Denial>> {
            Box::pin(async move { Ok((pod == "mesh-node-abc").then(|| "n1".to_owned())) })
        }
        fn service_account_on_node<'a>(
            &'a self,
            ns: &'a str,
            sa: &'a str,
            node: &'a str,
        ) -> BoxFuture<'a, Result<bool, Denial>> {
            // shop/web runs on n1, shop/db on n2.
            Box::pin(async move { Ok(ns == "shop" && ((sa == "web" && node == "n1") || (sa == "db" && node == "n2"))) })
        }
    }

    fn policy() -> Policy {
        Policy {
            trust_domain: "cluster.local".into(),
            cluster_id: "Kubernetes".into(),
            node_agents: vec![("mesh-system".into(), "mesh-node".into())],
        }
    }

    async fn ask(token: &str, imp: Option<&str>) -> Result<String, Reason> {
        let a = Ask {
            token: Some(token),
            cluster_id: Some("Kubernetes"),
            impersonated: imp,
        };
        authorize(&policy(), &Fixed, &Pods, &a)
            .await
            .map(|(_, id)| id.to_string())
            .map_err(|d| d.reason())
    }

    #[tokio::test]
    async fn node_agent_gets_only_identities_of_pods_on_its_node() {
        assert_eq!(
            ask("node1", Some("spiffe://cluster.local/ns/shop/sa/web")).await,
            Ok("spiffe://cluster.local/ns/shop/sa/web".into())
        );
        assert_eq!(
            ask("node1", Some("spiffe://cluster.local/ns/shop/sa/db")).await,
            Err(Reason::not_on_node)
        );
        assert_eq!(
            ask("node1", Some("spiffe://other.td/ns/shop/sa/web")).await,
            Err(Reason::invalid_identity)
        );
    }

    #[tokio::test]
    async fn other_callers_get_only_their_own_identity() {
        assert_eq!(
            ask("waypoint", None).await,
            Ok("spiffe://cluster.local/ns/shop/sa/waypoint".into())
        );
        assert_eq!(
            ask("waypoint", Some("spiffe://cluster.local/ns/shop/sa/waypoint")).await,
            Ok("spiffe://cluster.local/ns/shop/sa/waypoint".into())
        );
        assert_eq!(
            ask("waypoint", Some("spiffe://cluster.local/ns/shop/sa/web")).await,
            Err(Reason::not_node_agent)
        );
        assert_eq!(ask("forged", None).await, Err(Reason::bad_token));
    }

    #[tokio::test]
    async fn missing_token_and_foreign_cluster_are_refused() {
        let none = Ask {
            token: None,
            cluster_id: None,
            impersonated: None,
        };
        let err = authorize(&policy(), &Fixed, &Pods, &none).await.unwrap_err();
        assert_eq!(err.reason(), Reason::no_token);
        let foreign = Ask {
            token: Some("node1"),
            cluster_id: Some("east"),
            impersonated: None,
        };
        let err = authorize(&policy(), &Fixed, &Pods, &foreign).await.unwrap_err();
        assert_eq!(err.reason(), Reason::wrong_cluster);
    }
}
