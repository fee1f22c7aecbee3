//! The node agent (`bulwark agent`): hosts the data of the volumes placed on its node and does
//! the data work assigned to it through the API server (spec fields plus `status.ownerID`):
//! create and delete volume data, serve volumes through the FUSE frontend, take and delete
//! snapshots, back up, restore. It never decides placement; the controller does.

pub mod backing_images;
pub mod backups;
pub mod restore;
pub mod skip;
pub mod snapshots;
pub mod volumes;

use std::sync::Arc;

use config::AgentConfig;
use engine::Engine;
use engine::frontend::MountedVolumes;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::metrics::Metrics;
use crate::stores::Stores;

/// What every part of the agent gets.
pub struct AgentContext {
    pub client: kube::Client,
    /// Namespace of our objects (volumes, snapshots, backups, targets, Secrets, Leases).
    pub namespace: String,
    /// This node's name: the agent acts on volumes whose `status.ownerID` is this.
    pub node: String,
    pub config: Arc<AgentConfig>,
    pub engine: Arc<Engine>,
    pub stores: Arc<Stores>,
    pub events: Events,
    pub metrics: Metrics,
    /// The FUSE mount serving one file per volume; None where FUSE is unavailable.
    pub frontend: Option<MountedVolumes>,
    /// Bounds the data operations (backups, restores, clones) running at once on this node.
    pub operations: Arc<tokio::sync::Semaphore>,
}

impl AgentContext {
    /// Whether `owner` (a `status.ownerID`) is this node.
    pub fn owns(&self, owner: Option<&str>) -> bool {
        owner == Some(self.node.as_str())
    }
}

/// Announce this node and run every part until `shutdown` fires.
pub async fn run(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    tokio::join!(
        announce(ctx.clone(), shutdown.clone()),
        volumes::run(ctx.clone(), shutdown.clone()),
        snapshots::run(ctx.clone(), shutdown.clone()),
        backups::run(ctx.clone(), shutdown.clone()),
        backing_images::run(ctx.clone(), shutdown.clone()),
    );
    ctx.stores.close_all().await;
}

/// Keep this node's agent Lease fresh, so the controller places volumes here.
async fn announce(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    loop {
        // Bytes free where volume data goes, for CSI GetCapacity.
        let free = rustix::fs::statvfs(&ctx.config.data_dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        if let Err(error) =
            crate::presence::renew(&ctx.client, &ctx.namespace, &ctx.node, free).await
        {
            tracing::warn!(%error, node = %ctx.node, "cannot renew the agent Lease");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(crate::presence::RENEW_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::ApiServer;

    /// The wiring `bulwark agent` starts: every part comes up against an API server with no
    /// objects, announces the node, asks only for what the RBAC grants the agent, and stops when
    /// told to.
    #[tokio::test]
    async fn every_part_starts_within_its_rbac_announces_the_node_and_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, server) = ApiServer::start();
        let (ctx, _events) = volumes::tests::context(client, dir.path());
        let stop = CancellationToken::new();
        let running = tokio::spawn(run(ctx, stop.clone()));
        let seen = server.serve_empty(std::time::Duration::from_secs(3)).await;
        stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(30), running)
            .await
            .expect("every part stops when told to")
            .expect("no part panicked");
        let namespaced = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/";
        for kind in ["volumes", "snapshots", "backups", "backingimages"] {
            assert!(
                seen.iter()
                    .any(|r| r.starts_with(&format!("GET {namespaced}{kind}?"))),
                "nothing listed or watched {kind}: {seen:#?}"
            );
        }
        assert!(
            seen.iter().any(|r| r.starts_with(
                "PATCH /apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases/bulwark-agent-"
            )),
            "the node was not announced: {seen:#?}"
        );
    }
}
