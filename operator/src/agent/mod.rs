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
        if let Err(error) = crate::presence::renew(&ctx.client, &ctx.namespace, &ctx.node).await {
            tracing::warn!(%error, node = %ctx.node, "cannot renew the agent Lease");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(crate::presence::RENEW_EVERY) => {}
        }
    }
}
