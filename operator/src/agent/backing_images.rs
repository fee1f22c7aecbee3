//! Backing images on this node (agent side).
//!
//! - The node named in `status.ownerID` (chosen by the controller) makes the first copy:
//!   `download` streams the URL and checks its SHA-512 against `spec.checksum`;
//!   `export-from-volume` exports a temporary snapshot of the volume as raw or qcow2. Either way
//!   the copy ends as a raw sparse file under `<data-dir>/backing-images/<name>/`, and the status
//!   says `in-progress` (recorded before the work starts), then `ready` with checksum and size,
//!   or `failed` with a message. A restart redoes unfinished work.
//! - Other nodes get copies through [`ensure_local_copy`], which the volume agent calls when a
//!   Volume with `spec.backingImage` lands on a node without one.
//! - Each node reports its copy in `status.nodes.<node>` under its own field manager, and removes
//!   its copy (and that entry) once the image is being deleted and the controller found no
//!   volume using it (condition `InUse` False); the controller then drops the finalizer.

pub mod local;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use crd_types::BackingImage;
use crd_types::backing_image::{BackingImageSourceType, BackingImageState};
use crd_types::common::Condition;
use engine::image::ImageFormat;
use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

pub use local::{CopyMeta, EXPORT_LABEL, Layout, LocalError};

use super::AgentContext;
use crate::controllers::backing_image::{IN_USE, source_type_name};
use crate::metrics::ErrorCategory;
use crate::status;

const CONTROLLER: &str = "backing-image-agent";
/// Field manager of the owner node's fields (state, progress, message, checksum, size, readyAt,
/// the `Ready` condition).
pub const MANAGER: &str = "bulwark-agent-backing-image";
/// Condition the owner node writes.
pub const READY: &str = "Ready";
/// `Ready` reason of a failure that is tried again by itself.
const RETRYING: &str = "Retrying";
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Progress is written no more often than this.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Field manager of `status.nodes.<node>`: one per node, so each node's entry is its own and
/// one node's apply never removes another's.
pub fn copy_manager(node: &str) -> String {
    format!("bulwark-agent-backing-image-{node}")
        .chars()
        .take(128)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

/// Why [`ensure_local_copy`] cannot give a copy (now). Messages name the image and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "backing image {image:?} is being deleted: create the volume without it or with another image"
    )]
    BeingDeleted { image: String },
    #[error(
        "backing image {image:?} is not ready yet (state {state}); the volume is created once it is"
    )]
    NotReady { image: String, state: String },
    #[error(
        "backing image {image:?} was exported from a volume on node {owner:?} and exists only there (nodes share no data): place the volume on node {owner:?} with spec.nodeID, or use a download image"
    )]
    OnlyOnOwner { image: String, owner: String },
    #[error(
        "the exported backing image {image:?} is gone from node {node:?} (data directory wiped?): delete and recreate the BackingImage"
    )]
    Gone { image: String, node: String },
    #[error("copying backing image {image:?} to node {node:?} failed: {source}")]
    Local {
        image: String,
        node: String,
        #[source]
        source: LocalError,
    },
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

impl CopyError {
    /// Whether calling again later may succeed without the user changing anything.
    pub fn retryable(&self) -> bool {
        match self {
            CopyError::NotReady { .. } | CopyError::Kube(_) => true,
            CopyError::Local { source, .. } => source.retryable(),
            CopyError::BeingDeleted { .. }
            | CopyError::OnlyOnOwner { .. }
            | CopyError::Gone { .. } => false,
        }
    }
}

struct Worker {
    ctx: Arc<AgentContext>,
    shutdown: CancellationToken,
}

pub async fn run(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    remove_orphans(&ctx, &api).await;
    let worker = Arc::new(Worker {
        ctx,
        shutdown: shutdown.clone(),
    });
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile_timed, error_policy, worker)
        .for_each(|_| async {})
        .await;
}

/// Remove copies of images whose objects are gone (deleted while this agent was down). Only
/// after a successful listing: a failed one must not look like "no images".
async fn remove_orphans(ctx: &AgentContext, api: &Api<BackingImage>) {
    // Folders made after the listing started may belong to images the listing missed.
    let listed_at = std::time::SystemTime::now();
    let images = match api.list(&Default::default()).await {
        Ok(list) => list,
        Err(error) => {
            tracing::warn!(%error, "cannot list backing images; leftover copies stay for now");
            return;
        }
    };
    let names: Vec<String> = images.items.iter().map(ResourceExt::name_any).collect();
    for dir in local::list(&ctx.config.data_dir) {
        let layout = Layout::new(&ctx.config.data_dir, &dir);
        let older = std::fs::metadata(layout.dir())
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified < listed_at);
        if older && !names.contains(&dir) {
            match layout.remove() {
                Ok(()) => {
                    tracing::info!(image = %dir, "removed the copy of a deleted backing image")
                }
                Err(error) => tracing::warn!(%error, "cannot remove a leftover backing image copy"),
            }
        }
    }
}

async fn reconcile_timed(image: Arc<BackingImage>, worker: Arc<Worker>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile(&image, &worker.ctx, &worker.shutdown).await;
    let outcome = result
        .as_ref()
        .map(|_| ())
        .map_err(|_| ErrorCategory::Kubernetes);
    worker
        .ctx
        .metrics
        .reconciled(CONTROLLER, started.elapsed().as_secs_f64(), outcome);
    result
}

fn error_policy(image: Arc<BackingImage>, error: &Error, _worker: Arc<Worker>) -> Action {
    tracing::warn!(image = %image.name_any(), %error, "backing image work failed");
    Action::requeue(Duration::from_secs(5))
}

/// Failures retried by themselves wait until then (in memory: a restart retries at once).
static RETRY_AT: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);

fn retry_wait(uid: &str) -> Option<Duration> {
    let retry = RETRY_AT.lock().unwrap_or_else(|e| e.into_inner());
    retry
        .get(uid)
        .and_then(|at| at.checked_duration_since(Instant::now()))
}

fn set_retry(uid: &str, at: Option<Instant>) {
    let mut retry = RETRY_AT.lock().unwrap_or_else(|e| e.into_inner());
    match at {
        Some(at) => retry.insert(uid.to_owned(), at),
        None => retry.remove(uid),
    };
}

/// One pass over one image on this node: remove the copy when the image goes, or make the
/// first copy when this node is the owner.
pub async fn reconcile(
    image: &BackingImage,
    ctx: &AgentContext,
    shutdown: &CancellationToken,
) -> Result<Action, Error> {
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let name = image.name_any();
    let uid = image.uid().unwrap_or_default();
    let layout = Layout::new(&ctx.config.data_dir, &name);
    let status = image.status.clone().unwrap_or_default();
    let conditions = status.conditions.as_deref();

    if image.metadata.deletion_timestamp.is_some() {
        return remove_copy(&api, image, ctx, &layout).await;
    }
    if !ctx.owns(status.owner_id.as_deref()) {
        return Ok(Action::await_change());
    }
    let lock = local::lock(&layout);
    let _guard = lock.lock().await;

    if let Some(meta) = layout.ready(&uid) {
        // Done before a crash that came before the status said so, or already reported.
        if status.state != Some(BackingImageState::Ready)
            || status.checksum.as_deref() != Some(meta.checksum.as_str())
        {
            publish_ready(&api, image, ctx, &meta).await?;
        }
        return Ok(Action::await_change());
    }
    let ready = status::find(conditions, READY);
    match status.state {
        Some(BackingImageState::Failed) if ready.is_none_or(|c| c.reason != RETRYING) => {
            return Ok(Action::await_change());
        }
        Some(BackingImageState::Failed) => {
            if let Some(wait) = retry_wait(&uid) {
                return Ok(Action::requeue(wait));
            }
        }
        Some(BackingImageState::Ready)
            if image.spec.source_type == BackingImageSourceType::ExportFromVolume =>
        {
            // Exporting again would capture the volume as it is now, not what was published.
            let gone = CopyError::Gone {
                image: name.clone(),
                node: ctx.node.clone(),
            };
            publish_failed(&api, image, ctx, &gone.to_string(), false).await?;
            return Ok(Action::await_change());
        }
        _ => {}
    }

    let Ok(_permit) = ctx.operations.acquire().await else {
        return Ok(Action::await_change());
    };
    let what = describe(image);
    // Recorded before the work starts: a restart finds `in-progress` and redoes it.
    let started = owner_status(
        conditions,
        Phase::InProgress { progress: 0 },
        &what,
        image.metadata.generation,
    );
    status::apply(&api, &name, MANAGER, started).await?;
    apply_copy(
        &api,
        &name,
        &ctx.node,
        Some((BackingImageState::InProgress, &what)),
    )
    .await?;
    ctx.events.normal(image, "Started", &what).await;

    let (progress, mut seen) = tokio::sync::watch::channel(0);
    let work = build(image, ctx, &layout, &uid, &progress, shutdown);
    let report = async {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            match seen.has_changed() {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => std::future::pending::<()>().await,
            }
            let percent = *seen.borrow_and_update();
            let body = owner_status(
                conditions,
                Phase::InProgress { progress: percent },
                &what,
                image.metadata.generation,
            );
            if let Err(error) = status::apply(&api, &name, MANAGER, body).await {
                tracing::warn!(%error, image = %name, "cannot report backing image progress");
            }
        }
    };
    let result = tokio::select! {
        biased;
        result = work => result,
        () = report => unreachable_result(),
    };
    match result {
        Ok(meta) => {
            set_retry(&uid, None);
            publish_ready(&api, image, ctx, &meta).await?;
            Ok(Action::await_change())
        }
        Err(LocalError::Interrupted) => Ok(Action::await_change()),
        Err(error) => {
            let retry = error.retryable();
            let mut message = error.to_string();
            if retry {
                message.push_str(&format!(" (retrying in {}s)", RETRY_AFTER.as_secs()));
                set_retry(&uid, Some(Instant::now() + RETRY_AFTER));
            }
            publish_failed(&api, image, ctx, &message, retry).await?;
            Ok(if retry {
                Action::requeue(RETRY_AFTER)
            } else {
                Action::await_change()
            })
        }
    }
}

fn unreachable_result() -> Result<CopyMeta, LocalError> {
    // `report` never ends; this only satisfies the select's type.
    Err(LocalError::Interrupted)
}

/// What the owner does, for messages and Events.
fn describe(image: &BackingImage) -> String {
    let param = |key: &str| {
        image
            .spec
            .source_parameters
            .get(key)
            .cloned()
            .unwrap_or_default()
    };
    match image.spec.source_type {
        BackingImageSourceType::Download => format!("downloading {}", param("url")),
        BackingImageSourceType::ExportFromVolume => format!(
            "exporting volume {} as {}",
            param("volume-name"),
            export_format(image).as_str()
        ),
        other => format!("preparing a {} image", source_type_name(other)),
    }
}

fn export_format(image: &BackingImage) -> ImageFormat {
    match image
        .spec
        .source_parameters
        .get("export-type")
        .map(String::as_str)
    {
        Some("qcow2") => ImageFormat::Qcow2,
        _ => ImageFormat::Raw,
    }
}

/// The checksum a copy must have: the one the user gave, else the one the owner recorded.
fn expected_checksum(image: &BackingImage) -> Option<String> {
    image.spec.checksum.clone().or_else(|| {
        image
            .status
            .as_ref()
            .filter(|s| s.state == Some(BackingImageState::Ready))
            .and_then(|s| s.checksum.clone())
    })
}

async fn build(
    image: &BackingImage,
    ctx: &AgentContext,
    layout: &Layout,
    uid: &str,
    progress: &tokio::sync::watch::Sender<i32>,
    shutdown: &CancellationToken,
) -> Result<CopyMeta, LocalError> {
    let param = |key: &str| {
        image
            .spec
            .source_parameters
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    };
    let expected = expected_checksum(image);
    match image.spec.source_type {
        BackingImageSourceType::Download => {
            local::prepare_download(
                layout,
                uid,
                param("url"),
                expected.as_deref(),
                progress,
                shutdown,
            )
            .await
        }
        BackingImageSourceType::ExportFromVolume => {
            local::prepare_export(
                layout,
                ctx.engine.clone(),
                &image.name_any(),
                uid,
                param("volume-name"),
                export_format(image),
                expected.as_deref(),
            )
            .await
        }
        other => Err(LocalError::Unsupported {
            source_type: source_type_name(other),
        }),
    }
}

/// Where the owner's work stands.
#[derive(Debug, Clone, Copy)]
pub enum Phase<'a> {
    InProgress { progress: i32 },
    Ready(&'a CopyMeta),
    Failed { retry: bool },
}

/// The owner's status fields (all of them, always: server-side apply drops what is not sent).
pub fn owner_status(
    existing: Option<&[Condition]>,
    phase: Phase<'_>,
    message: &str,
    generation: Option<i64>,
) -> serde_json::Value {
    let (state, progress, ok, reason) = match phase {
        Phase::InProgress { progress } => {
            (BackingImageState::InProgress, progress, false, "InProgress")
        }
        Phase::Ready(_) => (BackingImageState::Ready, 100, true, "Ready"),
        Phase::Failed { retry: true } => (BackingImageState::Failed, 0, false, RETRYING),
        Phase::Failed { retry: false } => (BackingImageState::Failed, 0, false, "Failed"),
    };
    let condition = status::condition(existing, READY, ok, reason, message, generation);
    let mut body = serde_json::json!({
        "state": state,
        "progress": progress,
        "message": message,
        "conditions": [condition],
    });
    if let Phase::Ready(meta) = phase {
        body["checksum"] = meta.checksum.clone().into();
        body["size"] = meta.size.into();
        body["readyAt"] = serde_json::to_value(status::now()).unwrap_or_default();
    }
    body
}

/// This node's entry in `status.nodes` (None removes it).
pub fn copy_status(node: &str, copy: Option<(BackingImageState, &str)>) -> serde_json::Value {
    match copy {
        None => serde_json::json!({}),
        Some((state, message)) => {
            let progress = if state == BackingImageState::Ready {
                100
            } else {
                0
            };
            serde_json::json!({
                "nodes": { node: { "state": state, "progress": progress, "message": message } }
            })
        }
    }
}

async fn apply_copy(
    api: &Api<BackingImage>,
    name: &str,
    node: &str,
    copy: Option<(BackingImageState, &str)>,
) -> Result<(), kube::Error> {
    status::apply(api, name, &copy_manager(node), copy_status(node, copy)).await?;
    Ok(())
}

async fn publish_ready(
    api: &Api<BackingImage>,
    image: &BackingImage,
    ctx: &AgentContext,
    meta: &CopyMeta,
) -> Result<(), kube::Error> {
    let name = image.name_any();
    let message = format!("ready on node {}", ctx.node);
    let conditions = image.status.as_ref().and_then(|s| s.conditions.as_deref());
    let body = owner_status(
        conditions,
        Phase::Ready(meta),
        &message,
        image.metadata.generation,
    );
    status::apply(api, &name, MANAGER, body).await?;
    apply_copy(
        api,
        &name,
        &ctx.node,
        Some((BackingImageState::Ready, &message)),
    )
    .await?;
    ctx.events
        .normal(
            image,
            "Ready",
            format!(
                "{} bytes on node {}, SHA-512 {}",
                meta.size, ctx.node, meta.checksum
            ),
        )
        .await;
    Ok(())
}

async fn publish_failed(
    api: &Api<BackingImage>,
    image: &BackingImage,
    ctx: &AgentContext,
    message: &str,
    retry: bool,
) -> Result<(), kube::Error> {
    let name = image.name_any();
    let conditions = image.status.as_ref().and_then(|s| s.conditions.as_deref());
    let body = owner_status(
        conditions,
        Phase::Failed { retry },
        message,
        image.metadata.generation,
    );
    status::apply(api, &name, MANAGER, body).await?;
    apply_copy(
        api,
        &name,
        &ctx.node,
        Some((BackingImageState::Failed, message)),
    )
    .await?;
    let reason = if retry { "Retrying" } else { "Failed" };
    ctx.events.warning(image, reason, message).await;
    Ok(())
}

/// The image is being deleted: once the controller found no volume using it (`InUse` False),
/// remove this node's copy and its `status.nodes` entry.
async fn remove_copy(
    api: &Api<BackingImage>,
    image: &BackingImage,
    ctx: &AgentContext,
    layout: &Layout,
) -> Result<Action, Error> {
    let status = image.status.clone().unwrap_or_default();
    let allowed =
        status::find(status.conditions.as_deref(), IN_USE).is_some_and(|c| c.status == "False");
    if !allowed {
        return Ok(Action::await_change());
    }
    let lock = local::lock(layout);
    let _guard = lock.lock().await;
    if let Err(error) = layout.remove() {
        tracing::warn!(%error, image = %image.name_any(), "cannot remove the backing image copy");
        return Ok(Action::requeue(RETRY_AFTER));
    }
    let listed = status
        .nodes
        .as_ref()
        .is_some_and(|nodes| nodes.contains_key(&ctx.node));
    if listed {
        match apply_copy(api, &image.name_any(), &ctx.node, None).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => other?,
        }
        ctx.events
            .normal(
                image,
                "CopyRemoved",
                format!("removed the copy on node {}", ctx.node),
            )
            .await;
    }
    Ok(Action::await_change())
}

/// A raw copy of `image` on this node, for [`engine::BackingLayer`] (see
/// [`engine::Engine::create_volume`]): the existing one, or a new one downloaded from the
/// image's URL and checked against its checksum (the user's, else the one the owner recorded).
/// Images exported from a volume exist only on their owner node: elsewhere this fails with
/// [`CopyError::OnlyOnOwner`] naming that node. Not ready yet → [`CopyError::NotReady`] (call
/// again later; [`CopyError::retryable`] says which errors are worth it).
pub async fn ensure_local_copy(
    ctx: &AgentContext,
    image: &BackingImage,
) -> Result<PathBuf, CopyError> {
    let name = image.name_any();
    if image.metadata.deletion_timestamp.is_some() {
        return Err(CopyError::BeingDeleted { image: name });
    }
    let uid = image.uid().unwrap_or_default();
    let layout = Layout::new(&ctx.config.data_dir, &name);
    if layout.ready(&uid).is_some() {
        return Ok(layout.raw());
    }
    let status = image.status.clone().unwrap_or_default();
    let state = status.state;
    let not_ready = || CopyError::NotReady {
        image: name.clone(),
        state: state
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "pending".to_owned()),
    };
    match image.spec.source_type {
        BackingImageSourceType::Download => {}
        BackingImageSourceType::ExportFromVolume => {
            let owner = status.owner_id.clone().unwrap_or_default();
            if owner != ctx.node && !owner.is_empty() {
                return Err(CopyError::OnlyOnOwner { image: name, owner });
            }
            if state == Some(BackingImageState::Ready) {
                return Err(CopyError::Gone {
                    image: name,
                    node: ctx.node.clone(),
                });
            }
            return Err(not_ready());
        }
        other => {
            return Err(CopyError::Local {
                image: name,
                node: ctx.node.clone(),
                source: LocalError::Unsupported {
                    source_type: source_type_name(other),
                },
            });
        }
    }
    // Copies wait for the owner's verified download, so every node has the same bytes.
    if state != Some(BackingImageState::Ready) {
        return Err(not_ready());
    }
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lock = local::lock(&layout);
    let _guard = lock.lock().await;
    if layout.ready(&uid).is_some() {
        return Ok(layout.raw());
    }
    let what = describe(image);
    apply_copy(
        &api,
        &name,
        &ctx.node,
        Some((BackingImageState::InProgress, &what)),
    )
    .await?;
    let url = image
        .spec
        .source_parameters
        .get("url")
        .cloned()
        .unwrap_or_default();
    let expected = expected_checksum(image);
    let (progress, _seen) = tokio::sync::watch::channel(0);
    let made = local::prepare_download(
        &layout,
        &uid,
        &url,
        expected.as_deref(),
        &progress,
        &CancellationToken::new(),
    )
    .await;
    match made {
        Ok(meta) => {
            let message = format!("copied to node {}", ctx.node);
            apply_copy(
                &api,
                &name,
                &ctx.node,
                Some((BackingImageState::Ready, &message)),
            )
            .await?;
            ctx.events
                .normal(
                    image,
                    "Copied",
                    format!("{message}: {} bytes, SHA-512 {}", meta.size, meta.checksum),
                )
                .await;
            Ok(layout.raw())
        }
        Err(source) => {
            let error = CopyError::Local {
                image: name.clone(),
                node: ctx.node.clone(),
                source,
            };
            let message = error.to_string();
            apply_copy(
                &api,
                &name,
                &ctx.node,
                Some((BackingImageState::Failed, &message)),
            )
            .await?;
            ctx.events.warning(image, "CopyFailed", &message).await;
            Err(error)
        }
    }
}
