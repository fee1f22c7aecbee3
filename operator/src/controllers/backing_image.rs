//! BackingImage lifecycle (controller side): validate the spec, hold the data finalizer, and
//! assign the image to a node whose agent makes the first copy (`status.ownerID`): for
//! `download` the live node owning the fewest images, for `export-from-volume` the node that
//! holds the volume. The owner agent then moves the state from `pending` to `in-progress` and
//! `ready` or `failed` (see `agent::backing_images`).
//!
//! Deletion is refused while a Volume names the image in `spec.backingImage`: the finalizer
//! stays, condition `InUse` (True) and a warning Event name the volumes. Once none does,
//! `InUse` turns False, which tells every agent to remove its copy and its `status.nodes`
//! entry; when no live node lists a copy any more, the finalizer goes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crd_types::backing_image::{BackingImageSourceType, BackingImageState};
use crd_types::volume::VolumeState;
use crd_types::{BackingImage, Validate, Volume};
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::metrics::ErrorCategory;
use crate::{finalizers, presence, status};

const CONTROLLER: &str = "backing-image";
/// Keeps a BackingImage while node copies exist or volumes use it.
pub const FINALIZER: &str = "bulwark.io/backing-image-data";
/// Field manager of the assignment (`ownerID`, the first `state`/`message`, `Scheduled`).
pub const MANAGER: &str = "bulwark-backing-image";
/// Field manager of the `InUse` condition (separate, so the deletion's apply never drops the
/// assignment's fields, nor the assignment's apply the condition).
pub const DELETION_MANAGER: &str = "bulwark-backing-image-deletion";
pub const SCHEDULED: &str = "Scheduled";
/// Set while the image is being deleted: True = volumes use it (deletion waits), False = the
/// nodes may remove their copies.
pub const IN_USE: &str = "InUse";
/// How often an unassigned image, or a deletion, is looked at again.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

/// Why an image cannot be assigned to a node now. The message is the `Scheduled` condition's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error(
        "no node runs a bulwark agent (no fresh agent Lease): check the bulwark-agent DaemonSet"
    )]
    NoAgents,
    #[error(
        "spec.sourceParameters.volume-name names volume {volume:?}, which does not exist: create it or fix the name"
    )]
    VolumeMissing { volume: String },
    #[error(
        "volume {volume:?} is not placed on a node yet; the export starts on its node once it is"
    )]
    VolumeNotPlaced { volume: String },
    #[error("volume {volume:?} is {state}, not ready; the export starts once its data is ready")]
    VolumeNotReady { volume: String, state: String },
    #[error(
        "volume {volume:?} lives on node {node:?}, whose agent is not running; the export runs on the volume's node"
    )]
    VolumeNodeDown { volume: String, node: String },
}

/// The spelling users write (`download`, `export-from-volume`, …).
pub fn source_type_name(source_type: BackingImageSourceType) -> String {
    serde_json::to_value(source_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The node a Volume using `image` must be placed on, if any (for the volume placement):
/// images exported from a volume exist only on their owner node (nodes share no data), while
/// download images are copied to any node that needs them.
pub fn required_node(image: &BackingImage) -> Option<&str> {
    match image.spec.source_type {
        BackingImageSourceType::Download => None,
        _ => image.status.as_ref().and_then(|s| s.owner_id.as_deref()),
    }
}

/// Names of the volumes (in `namespace`) whose `spec.backingImage` is `image`, sorted.
pub fn users(image: &str, namespace: &str, volumes: &[Arc<Volume>]) -> Vec<String> {
    let mut names: Vec<String> = volumes
        .iter()
        .filter(|v| v.namespace().as_deref() == Some(namespace))
        .filter(|v| v.spec.backing_image.as_deref() == Some(image))
        .map(|v| v.name_any())
        .collect();
    names.sort();
    names
}

/// The node that makes the first copy: the source volume's node for exports, else the live
/// node owning the fewest images (ties by name).
pub fn assign(
    image: &BackingImage,
    live: &[String],
    volumes: &[Arc<Volume>],
    images: &[Arc<BackingImage>],
) -> Result<String, AssignError> {
    let is_live = |node: &str| live.iter().any(|n| n == node);
    if image.spec.source_type == BackingImageSourceType::ExportFromVolume {
        let volume = image
            .spec
            .source_parameters
            .get("volume-name")
            .cloned()
            .unwrap_or_default();
        let found = volumes
            .iter()
            .find(|v| v.name_any() == volume && v.namespace() == image.namespace())
            .ok_or_else(|| AssignError::VolumeMissing {
                volume: volume.clone(),
            })?;
        let Some(node) = found.status.as_ref().and_then(|s| s.owner_id.clone()) else {
            return Err(AssignError::VolumeNotPlaced { volume });
        };
        // The export reads the volume's data: only once the agent created (or restored) it.
        let state = found.status.as_ref().and_then(|s| s.state);
        if state != Some(VolumeState::Ready) {
            let state = state
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "Pending".to_owned());
            return Err(AssignError::VolumeNotReady { volume, state });
        }
        if !is_live(&node) {
            return Err(AssignError::VolumeNodeDown { volume, node });
        }
        return Ok(node);
    }
    let mut load = BTreeMap::<&str, usize>::new();
    for other in images {
        if let Some(owner) = other.status.as_ref().and_then(|s| s.owner_id.as_deref()) {
            *load.entry(owner).or_default() += 1;
        }
    }
    live.iter()
        .min_by_key(|n| (load.get(n.as_str()).copied().unwrap_or(0), (*n).clone()))
        .cloned()
        .ok_or(AssignError::NoAgents)
}

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile_timed, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile_timed(image: Arc<BackingImage>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .timed(CONTROLLER, reconcile(&image, &ctx), |_| {
            ErrorCategory::Kubernetes
        })
        .await
}

fn error_policy(image: Arc<BackingImage>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(image = %image.name_any(), %error, "backing image reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// One pass over one image: deletion, validation, finalizer, assignment.
pub async fn reconcile(image: &BackingImage, ctx: &Context) -> Result<Action, Error> {
    let namespace = &ctx.config.common.namespace;
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), namespace);
    if image.metadata.deletion_timestamp.is_some() {
        return delete(&api, image, ctx).await;
    }
    let name = image.name_any();
    let status = image.status.clone().unwrap_or_default();
    let conditions = status.conditions.as_deref();
    let generation = image.metadata.generation;

    let refused = match image.validate() {
        Err(errors) => Some(("Invalid", errors.to_string())),
        Ok(()) => match image.spec.source_type {
            BackingImageSourceType::Download | BackingImageSourceType::ExportFromVolume => None,
            other => Some((
                "Unsupported",
                format!(
                    "spec.sourceType {} is not supported yet: use download or export-from-volume",
                    source_type_name(other)
                ),
            )),
        },
    };
    if let Some((reason, message)) = refused {
        if status.owner_id.is_none()
            && (status.state != Some(BackingImageState::Failed)
                || status.message.as_deref() != Some(message.as_str()))
        {
            let scheduled =
                status::condition(conditions, SCHEDULED, false, reason, &message, generation);
            status::apply(
                &api,
                &name,
                MANAGER,
                serde_json::json!({
                    "state": BackingImageState::Failed,
                    "message": message,
                    "conditions": [scheduled],
                }),
            )
            .await?;
            ctx.events.warning(image, reason, message).await;
        }
        return Ok(Action::await_change());
    }

    finalizers::add(&api, image, FINALIZER).await?;
    if status.owner_id.is_some() {
        // Assigned: the rest is the owner agent's work.
        return Ok(Action::await_change());
    }
    let live = presence::live_nodes(&ctx.client, namespace).await?;
    let volumes = ctx.caches.volumes.state();
    let images = ctx.caches.backing_images.state();
    match assign(image, &live, &volumes, &images) {
        Ok(node) => {
            let message = format!("assigned to node {node}");
            let scheduled = status::condition(
                conditions, SCHEDULED, true, "Assigned", &message, generation,
            );
            status::apply(
                &api,
                &name,
                MANAGER,
                serde_json::json!({
                    "ownerID": node,
                    "state": BackingImageState::Pending,
                    "message": message,
                    "conditions": [scheduled],
                }),
            )
            .await?;
            ctx.events.normal(image, "Scheduled", message).await;
            Ok(Action::await_change())
        }
        Err(why) => {
            let message = why.to_string();
            if status.message.as_deref() != Some(message.as_str()) {
                let scheduled = status::condition(
                    conditions,
                    SCHEDULED,
                    false,
                    "Unschedulable",
                    &message,
                    generation,
                );
                status::apply(
                    &api,
                    &name,
                    MANAGER,
                    serde_json::json!({
                        "state": BackingImageState::Pending,
                        "message": message,
                        "conditions": [scheduled],
                    }),
                )
                .await?;
                ctx.events.warning(image, "Unschedulable", message).await;
            }
            Ok(Action::requeue(RETRY))
        }
    }
}

/// Deletion: refused while volumes use the image; then the nodes remove their copies; then the
/// finalizer goes.
async fn delete(
    api: &Api<BackingImage>,
    image: &BackingImage,
    ctx: &Context,
) -> Result<Action, Error> {
    if !image.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = &ctx.config.common.namespace;
    let name = image.name_any();
    let status = image.status.clone().unwrap_or_default();
    let conditions = status.conditions.as_deref();
    let generation = image.metadata.generation;
    let in_use = status::find(conditions, IN_USE);
    let users = users(&name, namespace, &ctx.caches.volumes.state());
    if !users.is_empty() {
        let message = format!(
            "deletion refused: used by volume {}; delete the volume first (the image is removed once no volume uses it)",
            users.join(", ")
        );
        if in_use.map(|c| c.message.as_str()) != Some(message.as_str()) {
            let condition =
                status::condition(conditions, IN_USE, true, "InUse", &message, generation);
            status::apply(
                api,
                &name,
                DELETION_MANAGER,
                serde_json::json!({ "conditions": [condition] }),
            )
            .await?;
            ctx.events.warning(image, "DeletionRefused", message).await;
        }
        return Ok(Action::requeue(RETRY));
    }
    if in_use.is_none_or(|c| c.status != "False") {
        let condition = status::condition(
            conditions,
            IN_USE,
            false,
            "Unused",
            "no volume uses the image: the nodes remove their copies",
            generation,
        );
        status::apply(
            api,
            &name,
            DELETION_MANAGER,
            serde_json::json!({ "conditions": [condition] }),
        )
        .await?;
    }
    let copies: Vec<String> = status.nodes.unwrap_or_default().into_keys().collect();
    if !copies.is_empty() {
        let live = presence::live_nodes(&ctx.client, namespace).await?;
        if copies.iter().any(|node| live.contains(node)) {
            // Their agents remove the copies and their entries; the entries' removal requeues.
            return Ok(Action::requeue(RETRY));
        }
        // Nodes without a running agent cannot remove theirs now; an agent removes copies of
        // images that no longer exist when it starts.
    }
    finalizers::remove(api, image, FINALIZER).await?;
    let note = if copies.is_empty() {
        "no node holds a copy any more".to_owned()
    } else {
        format!(
            "copies on nodes whose agent is not running ({}) are removed when their agent starts",
            copies.join(", ")
        )
    };
    ctx.events.normal(image, "Deleted", note).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
