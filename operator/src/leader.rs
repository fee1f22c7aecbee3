//! Leader election over a Lease: only the holder runs the controllers.

use config::LeaseConfig;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Leadership changes (true while this replica leads) and the task that keeps the Lease.
/// Dropping the receiver releases the Lease.
pub async fn elect(
    client: &kube::Client,
    namespace: &str,
    lease: &LeaseConfig,
) -> anyhow::Result<(
    watch::Receiver<bool>,
    JoinHandle<kube_lease_manager::Result<LeaseManager>>,
)> {
    let mut builder = LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(namespace)
        .with_duration(lease.duration.as_secs())
        .with_grace(lease.grace.as_secs())
        .with_field_manager("bulwark-leader-election");
    // A readable holder in `kubectl get lease`: the pod name where there is one.
    if let Ok(pod) = std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")) {
        builder = builder.with_identity(format!("{pod}-{}", std::process::id()));
    }
    let manager = builder.build().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot use Lease {namespace}/{} for leader election: {e}",
            lease.name
        )
    })?;
    Ok(manager.watch().await)
}
