//! Which nodes run an agent: each agent renews a Lease `bulwark-agent-<node>` in the operator's
//! namespace; the controller places volumes only on nodes whose Lease is fresh.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};

/// Label on every agent Lease.
pub const AGENT_LABEL: &str = "bulwark.io/agent";
/// How long a Lease stays valid without renewal.
pub const LEASE_SECONDS: i32 = 30;
/// How often an agent renews its Lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

pub fn lease_name(node: &str) -> String {
    format!("bulwark-agent-{node}")
}

/// The Lease an agent applies for `node` at `now`.
pub fn build_lease(node: &str, now: jiff::Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(node)),
            labels: Some([(AGENT_LABEL.to_owned(), "true".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// The node of a fresh agent Lease at `now`, or None when it expired or is not an agent's.
pub fn live_node(lease: &Lease, now: jiff::Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let node = spec.holder_identity.clone()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let valid = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    (now.as_second() - renewed.as_second() <= valid).then_some(node)
}

/// Nodes whose agent Lease is fresh, sorted.
pub async fn live_nodes(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let leases = api
        .list(&ListParams::default().labels(&format!("{AGENT_LABEL}=true")))
        .await?;
    let now = jiff::Timestamp::now();
    let mut nodes: Vec<String> = leases
        .items
        .iter()
        .filter_map(|lease| live_node(lease, now))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Apply this node's Lease (create or renew).
pub async fn renew(client: &kube::Client, namespace: &str, node: &str) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = build_lease(node, jiff::Timestamp::now());
    // Server-side apply needs the type on the body.
    let mut body = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "coordination.k8s.io/v1".into();
    body["kind"] = "Lease".into();
    api.patch(
        &lease_name(node),
        &PatchParams::apply(crate::status::managers::AGENT).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_live_until_it_expires() {
        let at = jiff::Timestamp::from_second(1_000_000).expect("valid");
        let lease = build_lease("node-a", at);
        assert_eq!(live_node(&lease, at).as_deref(), Some("node-a"));
        let later = jiff::Timestamp::from_second(1_000_000 + 30).expect("valid");
        assert_eq!(live_node(&lease, later).as_deref(), Some("node-a"));
        let expired = jiff::Timestamp::from_second(1_000_000 + 31).expect("valid");
        assert_eq!(live_node(&lease, expired), None);
    }

    #[test]
    fn a_lease_without_holder_is_nobodys() {
        let at = jiff::Timestamp::from_second(1_000_000).expect("valid");
        let mut lease = build_lease("node-a", at);
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        assert_eq!(live_node(&lease, at), None);
    }
}
