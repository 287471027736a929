//! Who this gateway is: its pod's labels and namespace. A `Gateway` applies to it
//! when the Gateway's `spec.selector` is a subset of those labels — from any
//! namespace, as Istio does by default (`PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false`).

use std::collections::BTreeMap;

use mesh_common::model::istio::networking::Gateway;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GatewayIdentity {
    /// The gateway workload's namespace; `credentialName` Secrets are looked up here.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl GatewayIdentity {
    /// Istio's rule: every selector label must be on the pod. An empty selector
    /// selects every gateway workload.
    pub fn selects(&self, gateway: &Gateway) -> bool {
        gateway.spec.selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// `istio=ingressgateway` → (`istio`, `ingressgateway`), for `--pod-labels`.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!(
            "`{text}` is not a label: write key=value, e.g. istio=ingressgateway"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(selector: &[(&str, &str)]) -> Gateway {
        let mut g = Gateway::default();
        g.spec.selector = selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        g
    }

    #[test]
    fn selector_is_a_subset_of_pod_labels() {
        let id = GatewayIdentity {
            namespace: "istio-system".into(),
            labels: [("istio".into(), "ingressgateway".into()), ("app".into(), "gw".into())].into(),
        };
        assert!(id.selects(&gateway(&[("istio", "ingressgateway")])));
        assert!(id.selects(&gateway(&[])));
        assert!(!id.selects(&gateway(&[("istio", "egressgateway")])));
        assert!(!id.selects(&gateway(&[("istio", "ingressgateway"), ("zone", "a")])));
    }

    #[test]
    fn labels_parse() {
        assert_eq!(
            parse_label("istio=ingressgateway"),
            Ok(("istio".into(), "ingressgateway".into()))
        );
        assert!(parse_label("istio").is_err());
        assert!(parse_label("=x").is_err());
    }
}
