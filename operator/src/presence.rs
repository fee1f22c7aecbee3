//! Which nodes run an agent: each agent renews a Lease `bulwark-agent-<node>` in the operator's
//! namespace; the controller places volumes only on nodes whose Lease is fresh. The Lease also
//! says how many bytes are free in the agent's data directory (CSI GetCapacity).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};

/// Label on every agent Lease.
pub const AGENT_LABEL: &str = "bulwark.io/agent";
/// Annotation of an agent Lease: bytes free in the agent's data directory when it was renewed.
pub const FREE_BYTES_ANNOTATION: &str = "bulwark.io/free-bytes";
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
    Ok(live_capacity(client, namespace)
        .await?
        .into_iter()
        .map(|(node, _)| node)
        .collect())
}

/// Nodes whose agent Lease is fresh, sorted, with the bytes free in their data directory when
/// their agent says.
pub async fn live_capacity(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<(String, Option<u64>)>, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let leases = api
        .list(&ListParams::default().labels(&format!("{AGENT_LABEL}=true")))
        .await?;
    let now = jiff::Timestamp::now();
    let mut nodes: Vec<(String, Option<u64>)> = leases
        .items
        .iter()
        .filter_map(|lease| Some((live_node(lease, now)?, free_bytes(lease))))
        .collect();
    nodes.sort();
    nodes.dedup_by(|a, b| a.0 == b.0);
    Ok(nodes)
}

/// The free bytes an agent Lease reports.
pub fn free_bytes(lease: &Lease) -> Option<u64> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(FREE_BYTES_ANNOTATION)?
        .parse()
        .ok()
}

/// Apply this node's Lease (create or renew), saying how many bytes are free here.
pub async fn renew(
    client: &kube::Client,
    namespace: &str,
    node: &str,
    free: Option<u64>,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let mut lease = build_lease(node, jiff::Timestamp::now());
    if let Some(free) = free {
        lease.metadata.annotations =
            Some([(FREE_BYTES_ANNOTATION.to_owned(), free.to_string())].into());
    }
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
    fn the_free_bytes_an_agent_reports_are_read_back() {
        let mut lease = build_lease("node-a", jiff::Timestamp::now());
        assert_eq!(free_bytes(&lease), None);
        lease.metadata.annotations =
            Some([(FREE_BYTES_ANNOTATION.to_owned(), "4096".to_owned())].into());
        assert_eq!(free_bytes(&lease), Some(4096));
        lease.metadata.annotations =
            Some([(FREE_BYTES_ANNOTATION.to_owned(), "lots".to_owned())].into());
        assert_eq!(free_bytes(&lease), None, "nonsense is no number");
    }

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
