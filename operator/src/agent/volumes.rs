//! The agent's volume work: for every Volume whose `status.ownerID` is this node, create its
//! data (empty, cloned from `dataSource`, restored from `fromBackup`), serve it through the FUSE
//! frontend, grow it, and delete it when the Volume goes (finalizer `bulwark.io/volume-data`).
//!
//! Each reconcile is a pipeline: read (the object, the engine's data, the incomplete marker)
//! → [`decide`] (pure) → apply (engine, store, frontend) → status (server-side apply as
//! `bulwark-agent`: `state`, `actualSize`, `Ready` and `Restore` conditions,
//! `observedGeneration`, `restoreProgress`, `lastRestoredBackup`, `lastRestoredAt`,
//! `isStandby`).
//!
//! The `Restore` condition follows Longhorn: `True`/`RestoreInProgress` while a restore runs,
//! `False`/`RestoreCompleted` after it, `False`/`RestoreFailure` (or why it cannot start).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backupstore::restore::{RestoreProgress, RestoreProgressFn};
use backupstore::target::BackupUrl;
use crd_types::common::{Condition, Time};
use crd_types::volume::{VolumeState, VolumeStatus};
use crd_types::{BackupTarget, Volume};
use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::AgentContext;
use super::restore::{self, DataError, Markers};
use crate::metrics::ErrorCategory;
use crate::stores::pick_target;
use crate::{finalizers, status};

/// Name in reconcile metrics.
pub const CONTROLLER: &str = "agent-volume";
/// Restore progress is written at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often a served volume's `actualSize` is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How soon a volume waiting for something outside it (a target, a source) is looked at again.
const RETRY_EVERY: Duration = Duration::from_secs(30);

pub const READY: &str = "Ready";
pub const RESTORE: &str = "Restore";

/// Where a new volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Empty,
    /// `snap://<volume>/<snapshot>`
    Snapshot {
        volume: String,
        snapshot: String,
    },
    /// `vol://<volume>`
    Volume {
        volume: String,
    },
    /// `fromBackup` (the URL as written).
    Backup {
        url: String,
    },
    /// `backingImage` (or a `bi://` handle in `dataSource`): the image's content is the
    /// bottom layer.
    Image {
        image: String,
    },
    /// A `bak://<volume>/<backup>` (or `bs://`) handle in `dataSource`: the Backup object's
    /// `status.url` is restored, once it is Completed.
    BackupHandle {
        backup: String,
    },
}

/// What the engine holds for a volume on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Local {
    pub has_data: bool,
    /// A create with content was interrupted: the data is half written.
    pub incomplete: bool,
    /// Size of the engine volume.
    pub size: Option<u64>,
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not this node's volume (or nothing left to do for it).
    Skip,
    /// Add our finalizer before any data exists, so deletion always reaches us.
    AddFinalizer,
    /// Remove the data, then the finalizer.
    Delete,
    /// The spec asks for something this agent cannot do; the status says why.
    Refuse {
        state: VolumeState,
        reason: &'static str,
        message: String,
    },
    /// Create the data (discarding a half-written leftover first).
    Create {
        source: Source,
        size: u64,
        discard_partial: bool,
    },
    /// Data present: serve it (growing it first when `spec.size` grew).
    Serve { expand_to: Option<u64> },
    /// A standby volume: bring its data to backup `to` (None: the store's newest, on
    /// activation), then serve it.
    Follow { to: Option<String> },
}

/// For a standby volume (or one being activated) whose data is in place: the backup to bring
/// it to. `Some(Some(b))`: the DR tracker saw a newer backup `b`; `Some(None)`: activation,
/// which completes only once the store's newest backup is restored; `None`: nothing to follow.
pub fn follow_target(volume: &Volume) -> Option<Option<String>> {
    volume.spec.from_backup.as_ref()?;
    let status = volume.status.as_ref()?;
    let restored = status.last_restored_backup.as_deref()?;
    if !volume.spec.standby {
        return (status.is_standby == Some(true)).then_some(None);
    }
    match status.last_backup.as_deref() {
        Some(newest) if newest != restored => Some(Some(newest.to_owned())),
        _ => None,
    }
}

/// The data source a spec names.
pub fn source_of(volume: &Volume) -> Result<Source, String> {
    let spec = &volume.spec;
    if let Some(url) = &spec.from_backup {
        return Ok(Source::Backup { url: url.clone() });
    }
    let Some(source) = &spec.data_source else {
        return Ok(Source::Empty);
    };
    if let Some(rest) = source.strip_prefix("snap://")
        && let Some((volume, snapshot)) = rest.split_once('/')
        && !volume.is_empty()
        && !snapshot.is_empty()
        && !snapshot.contains('/')
    {
        return Ok(Source::Snapshot {
            volume: volume.to_owned(),
            snapshot: snapshot.to_owned(),
        });
    }
    if let Some(volume) = source.strip_prefix("vol://")
        && !volume.is_empty()
        && !volume.contains('/')
    {
        return Ok(Source::Volume {
            volume: volume.to_owned(),
        });
    }
    // Handles of the CSI snapshot API (what a VolumeSnapshotContent publishes).
    match handle_codec::decode(source) {
        Ok(handle_codec::SnapshotHandle::Backup { backup, .. }) => Ok(Source::BackupHandle {
            backup: backup.as_str().to_owned(),
        }),
        Ok(handle_codec::SnapshotHandle::BackingImage(image)) => Ok(Source::Image {
            image: image.name.as_str().to_owned(),
        }),
        Ok(other) => Err(format!(
            "spec.dataSource {source:?} ({}) cannot seed a volume",
            other.encode()
        )),
        Err(e) => Err(format!(
            "spec.dataSource {source:?} must be snap://<volume>/<snapshot>, vol://<volume>, bak://<volume>/<backup> or bi://backing?...: {e}"
        )),
    }
}

/// The pure decision: which action `(spec, status, local data, deletion)` calls for.
pub fn decide(volume: &Volume, node: &str, local: &Local) -> Plan {
    let owner = volume.status.as_ref().and_then(|s| s.owner_id.as_deref());
    if owner != Some(node) {
        return Plan::Skip;
    }
    let has_finalizer = volume.finalizers().iter().any(|f| f == finalizers::VOLUME);
    if volume.metadata.deletion_timestamp.is_some() {
        return if has_finalizer {
            Plan::Delete
        } else {
            Plan::Skip
        };
    }
    if !has_finalizer {
        return Plan::AddFinalizer;
    }
    let Some(size) = volume.spec.size_bytes().and_then(restore::round_size) else {
        return Plan::Refuse {
            state: VolumeState::Faulted,
            reason: "InvalidSize",
            message: format!(
                "spec.size {:?} is not a positive byte quantity such as 10Gi",
                volume.spec.size
            ),
        };
    };
    if local.has_data && !local.incomplete {
        if let Some(to) = follow_target(volume) {
            return Plan::Follow { to };
        }
        let expand_to = local.size.filter(|s| size > *s).map(|_| size);
        return Plan::Serve { expand_to };
    }
    if let Some(image) = &volume.spec.backing_image {
        return match source_of(volume) {
            Ok(Source::Empty) => Plan::Create {
                source: Source::Image {
                    image: image.clone(),
                },
                size,
                discard_partial: local.incomplete,
            },
            _ => Plan::Refuse {
                state: VolumeState::Faulted,
                reason: "InvalidSpec",
                message: format!(
                    "spec.backingImage {image:?} combines only with a new empty volume: remove spec.dataSource / spec.fromBackup, or spec.backingImage"
                ),
            },
        };
    }
    match source_of(volume) {
        Ok(source) => Plan::Create {
            source,
            size,
            discard_partial: local.incomplete,
        },
        Err(message) => Plan::Refuse {
            state: VolumeState::Faulted,
            reason: "InvalidDataSource",
            message,
        },
    }
}

/// A condition's content before it gets its time and generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    pub fn new(ok: bool, reason: &'static str, message: impl Into<String>) -> Cond {
        Cond {
            ok,
            reason,
            message: message.into(),
        }
    }
}

/// The status fields this agent owns, as applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub state: VolumeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_progress: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restored_backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_restored_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_standby: Option<bool>,
}

/// The fields of [`AgentStatus`] (to notice one we stopped sending).
const OWNED: [&str; 8] = [
    "state",
    "actualSize",
    "conditions",
    "observedGeneration",
    "restoreProgress",
    "lastRestoredBackup",
    "lastRestoredAt",
    "isStandby",
];

/// What a step of the pipeline wants the status to say; the rest carries over.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub actual_size: Option<u64>,
    /// `Restore` condition; None keeps the existing one.
    pub restore: Option<Cond>,
    /// None keeps the existing progress (of a volume restored from a backup).
    pub restore_progress: Option<i32>,
    /// A restore completed: the backup's name and when.
    pub restored: Option<(String, Time)>,
}

/// The full status this agent applies: its fields from `update`, the rest carried over from the
/// object so that server-side apply keeps them.
pub fn agent_status(
    volume: &Volume,
    state: VolumeState,
    ready: Cond,
    update: Update,
) -> AgentStatus {
    let existing = volume.status.clone().unwrap_or_default();
    let conditions = existing.conditions.as_deref();
    let generation = volume.metadata.generation;
    let mut list = vec![status::condition(
        conditions,
        READY,
        ready.ok,
        ready.reason,
        ready.message,
        generation,
    )];
    match update.restore {
        Some(c) => list.push(status::condition(
            conditions, RESTORE, c.ok, c.reason, c.message, generation,
        )),
        None => list.extend(status::find(conditions, RESTORE).cloned()),
    }
    let restoring = volume.spec.from_backup.is_some();
    let (last_restored_backup, last_restored_at) = match update.restored {
        Some((backup, at)) => (Some(backup), Some(at)),
        None => (existing.last_restored_backup, existing.last_restored_at),
    };
    AgentStatus {
        state,
        actual_size: update
            .actual_size
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX))
            .or(existing.actual_size),
        conditions: list,
        observed_generation: generation,
        restore_progress: update.restore_progress.or(existing.restore_progress),
        last_restored_backup,
        last_restored_at,
        is_standby: restoring.then_some(volume.spec.standby),
    }
}

/// Whether applying `new` would change nothing in `existing`.
pub fn unchanged(existing: Option<&VolumeStatus>, new: &AgentStatus) -> bool {
    match (
        existing.map(serde_json::to_value),
        serde_json::to_value(new),
    ) {
        (Some(Ok(old)), Ok(new)) => unchanged_json(&old, &new, &OWNED),
        _ => false,
    }
}

/// Whether the status `new` (the `owned` fields of one writer) is already what `old` says.
/// Conditions are compared by `type`, only those `new` holds (other writers own the others).
pub fn unchanged_json(old: &serde_json::Value, new: &serde_json::Value, owned: &[&str]) -> bool {
    owned.iter().all(|key| {
        let (o, n) = (old.get(key), new.get(key));
        if *key != "conditions" {
            return o == n;
        }
        let ours = n.and_then(|v| v.as_array()).cloned().unwrap_or_default();
        ours.iter().all(|c| {
            o.and_then(|v| v.as_array()).is_some_and(|list| {
                list.iter()
                    .any(|e| e.get("type") == c.get("type") && e == c)
            })
        })
    })
}

/// The status update for complete data whose status still says a restore runs: the agent
/// stopped after the restore's data was complete (marker cleared) but before it said so.
pub fn finished_restore(volume: &Volume) -> Update {
    let running = volume
        .status
        .as_ref()
        .and_then(|s| status::find(s.conditions.as_deref(), RESTORE))
        .is_some_and(|c| c.status == "True");
    let backup = volume
        .spec
        .from_backup
        .as_deref()
        .and_then(|url| BackupUrl::parse(url).ok());
    match backup {
        Some(b) if running => Update {
            restore: Some(Cond::new(
                false,
                "RestoreCompleted",
                format!("restored backup {} of volume {}", b.backup, b.volume),
            )),
            restore_progress: Some(100),
            restored: Some((b.backup, status::now())),
            ..Update::default()
        },
        _ => Update::default(),
    }
}

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("FUSE frontend: {0}")]
    Frontend(#[from] engine::frontend::FrontendError),
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::Kubernetes,
            Error::Data(DataError::Store(_)) => ErrorCategory::Store,
            Error::Data(_) | Error::Frontend(_) => ErrorCategory::Data,
        }
    }
}

/// The volume part of the agent as the controller runs it.
pub struct Volumes {
    pub agent: Arc<AgentContext>,
    /// The controller's cache of Volumes: a long restore looks there to notice that its volume
    /// is being deleted (the deletion's own reconcile waits until the restore returns).
    pub cache: Option<Store<Volume>>,
}

/// Watch the namespace's Volumes until `shutdown` fires.
pub async fn run(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let controller = Controller::new(api, watcher::Config::default());
    let volumes = Arc::new(Volumes {
        agent: ctx,
        cache: Some(controller.store()),
    });
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile_cached, error_policy, volumes)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "volume reconcile failed");
            }
        })
        .await;
}

fn error_policy(volume: Arc<Volume>, error: &Error, _ctx: Arc<Volumes>) -> Action {
    tracing::warn!(%error, volume = %volume.name_any(), "volume reconcile failed, retrying");
    Action::requeue(Duration::from_secs(10))
}

async fn reconcile_cached(volume: Arc<Volume>, ctx: Arc<Volumes>) -> Result<Action, Error> {
    counted(&volume, &ctx.agent, ctx.cache.as_ref()).await
}

/// One reconcile of `volume` (without a cache), counted in the reconcile metrics.
pub async fn reconcile(volume: Arc<Volume>, ctx: Arc<AgentContext>) -> Result<Action, Error> {
    counted(&volume, &ctx, None).await
}

async fn counted(
    volume: &Volume,
    ctx: &AgentContext,
    cache: Option<&Store<Volume>>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(volume, ctx, cache).await;
    ctx.metrics.reconciled(
        CONTROLLER,
        started.elapsed().as_secs_f64(),
        result.as_ref().map(|_| ()).map_err(Error::category),
    );
    result
}

/// Whether the cached copy of `name` says it is being deleted.
fn deleting_in(cache: Option<&Store<Volume>>, name: &str, namespace: &str) -> bool {
    cache
        .and_then(|c| c.get(&ObjectRef::new(name).within(namespace)))
        .is_some_and(|v| v.metadata.deletion_timestamp.is_some())
}

fn markers(ctx: &AgentContext) -> Markers {
    Markers::new(&ctx.config.data_dir)
}

/// What the engine holds for `name`.
pub async fn observe(ctx: &AgentContext, name: &str) -> Result<Local, Error> {
    let (engine, markers, name) = (ctx.engine.clone(), markers(ctx), name.to_owned());
    let local = restore::blocking(move || {
        let has_data = engine.list_volumes()?.contains(&name);
        let incomplete = markers.is_set(&name);
        let size = if has_data && !incomplete {
            Some(engine.open_volume(&name)?.size())
        } else {
            None
        };
        Ok(Local {
            has_data,
            incomplete,
            size,
        })
    })
    .await?;
    Ok(local)
}

async fn reconcile_inner(
    volume: &Volume,
    ctx: &AgentContext,
    cache: Option<&Store<Volume>>,
) -> Result<Action, Error> {
    // Cheap check first: most volumes belong to other nodes.
    if !ctx.owns(volume.status.as_ref().and_then(|s| s.owner_id.as_deref())) {
        return Ok(Action::await_change());
    }
    let name = volume.name_any();
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let local = observe(ctx, &name).await?;
    match decide(volume, &ctx.node, &local) {
        Plan::Skip => Ok(Action::await_change()),
        Plan::AddFinalizer => {
            finalizers::add(&api, volume, finalizers::VOLUME).await?;
            Ok(Action::await_change())
        }
        Plan::Delete => delete(volume, ctx, &api).await,
        Plan::Refuse {
            state,
            reason,
            message,
        } => {
            not_ready(
                &api,
                volume,
                ctx,
                state,
                READY,
                (reason, message),
                Update::default(),
            )
            .await?;
            Ok(Action::await_change())
        }
        Plan::Create {
            source,
            size,
            discard_partial,
        } => {
            if discard_partial {
                tracing::info!(volume = %name, "discarding the data of an interrupted create");
                let (engine, markers, n) = (ctx.engine.clone(), markers(ctx), name.clone());
                restore::blocking(move || restore::discard(&engine, &markers, &n)).await?;
            }
            match create(volume, ctx, &api, source, size, cache).await? {
                Created::Done(update) => serve(volume, ctx, &api, None, update).await,
                Created::Waiting(action) => Ok(action),
            }
        }
        Plan::Serve { expand_to } => {
            serve(volume, ctx, &api, expand_to, finished_restore(volume)).await
        }
        Plan::Follow { to } => follow(volume, ctx, &api, to, cache).await,
    }
}

/// Writes `state` with `Ready=False` (`reason`, `message`) plus `update`, and a warning Event
/// the first time the `watched` condition takes that reason (not on every retry).
async fn not_ready(
    api: &Api<Volume>,
    volume: &Volume,
    ctx: &AgentContext,
    state: VolumeState,
    watched: &str,
    (reason, message): (&'static str, String),
    update: Update,
) -> Result<(), Error> {
    let previous = volume
        .status
        .as_ref()
        .and_then(|s| status::find(s.conditions.as_deref(), watched))
        .map(|c| c.reason.as_str());
    if previous != Some(reason) {
        ctx.events.warning(volume, reason, message.clone()).await;
    }
    let ready = Cond::new(false, reason, message);
    write(api, volume, agent_status(volume, state, ready, update)).await
}

/// Apply `new` unless it changes nothing.
async fn write(api: &Api<Volume>, volume: &Volume, new: AgentStatus) -> Result<(), Error> {
    if unchanged(volume.status.as_ref(), &new) {
        return Ok(());
    }
    let body = serde_json::to_value(&new).map_err(kube::Error::SerdeError)?;
    status::apply(api, &volume.name_any(), status::managers::AGENT, body).await?;
    Ok(())
}

enum Created {
    /// Data complete; the status update the serve step should carry.
    Done(Update),
    /// Cannot create yet (the status says why); look again then.
    Waiting(Action),
}

async fn create(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    source: Source,
    size: u64,
    cache: Option<&Store<Volume>>,
) -> Result<Created, Error> {
    let name = volume.name_any();
    match source {
        Source::Empty => {
            let (engine, n) = (ctx.engine.clone(), name.clone());
            restore::blocking(move || Ok(engine.create_volume(&n, size, None).map(drop)?)).await?;
            ctx.events
                .normal(
                    volume,
                    "Created",
                    format!("created an empty volume of {size} bytes"),
                )
                .await;
            Ok(Created::Done(Update::default()))
        }
        Source::Snapshot {
            volume: src,
            snapshot,
        } => {
            let what = format!("snapshot {snapshot:?} of volume {src:?}");
            let cloning = Cond::new(false, "Cloning", format!("cloning {what}"));
            write(
                api,
                volume,
                agent_status(volume, VolumeState::Creating, cloning, Update::default()),
            )
            .await?;
            let _permit = ctx.operations.acquire().await;
            let result = restore::clone_snapshot(
                ctx.engine.clone(),
                markers(ctx),
                &src,
                &snapshot,
                &name,
                size,
            )
            .await;
            cloned(volume, ctx, api, &src, &what, result).await
        }
        Source::Volume { volume: src } => {
            let what = format!("the current data of volume {src:?}");
            let cloning = Cond::new(false, "Cloning", format!("cloning {what}"));
            write(
                api,
                volume,
                agent_status(volume, VolumeState::Creating, cloning, Update::default()),
            )
            .await?;
            let _permit = ctx.operations.acquire().await;
            let result =
                restore::clone_volume(ctx.engine.clone(), markers(ctx), &src, &name, size).await;
            cloned(volume, ctx, api, &src, &what, result).await
        }
        Source::Backup { url } => restore_backup(volume, ctx, api, &url, size, cache).await,
        Source::Image { image } => create_on_image(volume, ctx, api, &image, size).await,
        Source::BackupHandle { backup } => {
            let backups: Api<crd_types::Backup> =
                Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let found = backups.get_opt(&backup).await?;
            let completed = found
                .as_ref()
                .and_then(|b| b.status.as_ref())
                .filter(|s| s.state == Some(crd_types::backup::BackupState::Completed));
            match completed.and_then(|s| s.url.clone()) {
                Some(url) => restore_backup(volume, ctx, api, &url, size, cache).await,
                None => {
                    let message = match found {
                        None => format!(
                            "spec.dataSource: Backup {backup:?} does not exist: fix the handle or wait for the target sync to mirror it"
                        ),
                        Some(_) => format!(
                            "spec.dataSource: Backup {backup:?} is not Completed yet; the volume is restored once it is"
                        ),
                    };
                    let ready = Cond::new(false, "BackupNotReady", message.clone());
                    let previous = volume
                        .status
                        .as_ref()
                        .and_then(|s| status::find(s.conditions.as_deref(), READY))
                        .map(|c| c.reason.clone());
                    if previous.as_deref() != Some("BackupNotReady") {
                        ctx.events.warning(volume, "BackupNotReady", message).await;
                    }
                    write(
                        api,
                        volume,
                        agent_status(volume, VolumeState::Pending, ready, Update::default()),
                    )
                    .await?;
                    Ok(Created::Waiting(Action::requeue(Duration::from_secs(15))))
                }
            }
        }
    }
}

/// Create the volume on top of a local copy of backing image `image` (made first if needed).
async fn create_on_image(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    image: &str,
    size: u64,
) -> Result<Created, Error> {
    let waiting = |state: VolumeState, reason: &'static str, message: String, retry: Duration| async move {
        not_ready(
            api,
            volume,
            ctx,
            state,
            READY,
            (reason, message),
            Update::default(),
        )
        .await?;
        Ok::<_, Error>(Created::Waiting(Action::requeue(retry)))
    };
    let images: Api<crd_types::BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let Some(object) = images.get_opt(image).await? else {
        return waiting(
            VolumeState::Pending,
            "BackingImageMissing",
            format!("spec.backingImage {image:?} does not exist: create the BackingImage or fix the name"),
            RETRY_EVERY,
        )
        .await;
    };
    let raw_path = match super::backing_images::ensure_local_copy(ctx, &object).await {
        Ok(path) => path,
        Err(e) if e.retryable() => {
            return waiting(
                VolumeState::Pending,
                "BackingImageNotReady",
                e.to_string(),
                Duration::from_secs(15),
            )
            .await;
        }
        Err(e) => {
            return waiting(
                VolumeState::Faulted,
                "BackingImageUnusable",
                e.to_string(),
                RETRY_EVERY,
            )
            .await;
        }
    };
    let (engine, n, layer) = (
        ctx.engine.clone(),
        volume.name_any(),
        engine::BackingLayer {
            name: image.to_owned(),
            raw_path,
        },
    );
    let created =
        restore::blocking(move || Ok(engine.create_volume(&n, size, Some(layer)).map(drop)?)).await;
    match created {
        Ok(()) => {
            ctx.events
                .normal(volume, "Created", format!("created a volume of {size} bytes on backing image {image:?}"))
                .await;
            Ok(Created::Done(Update::default()))
        }
        Err(e) => {
            waiting(
                VolumeState::Faulted,
                "BackingImageUnusable",
                format!("cannot create the volume on backing image {image:?}: {e} (spec.size must be at least the image's size)"),
                RETRY_EVERY,
            )
            .await
        }
    }
}

/// Status and Events after a clone.
async fn cloned(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    source: &str,
    what: &str,
    result: Result<u64, DataError>,
) -> Result<Created, Error> {
    let (state, reason, message) = match result {
        Ok(bytes) => {
            ctx.events
                .normal(
                    volume,
                    "Created",
                    format!("cloned {what} ({bytes} bytes of data)"),
                )
                .await;
            return Ok(Created::Done(Update::default()));
        }
        Err(DataError::SourceNotHere { .. }) => {
            let sources: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let owner = sources
                .get_opt(source)
                .await?
                .and_then(|v| v.status.and_then(|s| s.owner_id));
            match owner {
                Some(node) if node != ctx.node => (
                    VolumeState::Pending,
                    "SourceOnAnotherNode",
                    format!(
                        "spec.dataSource: source volume {source:?} lives on node {node:?}, not on {:?}; clones must be placed on their source's node (set spec.nodeID to {node:?})",
                        ctx.node
                    ),
                ),
                _ => (
                    VolumeState::Pending,
                    "SourceNotFound",
                    format!(
                        "spec.dataSource: source volume {source:?} has no data on node {:?}; create it or fix spec.dataSource",
                        ctx.node
                    ),
                ),
            }
        }
        Err(e @ DataError::SnapshotMissing { .. }) => (
            VolumeState::Pending,
            "SourceNotFound",
            format!("spec.dataSource: {e}; take the snapshot or fix spec.dataSource"),
        ),
        Err(e) => (
            VolumeState::Faulted,
            "CloneFailed",
            format!("cloning {what} failed: {e}"),
        ),
    };
    ctx.events.warning(volume, reason, message.clone()).await;
    let ready = Cond::new(false, reason, message);
    write(
        api,
        volume,
        agent_status(volume, state, ready, Update::default()),
    )
    .await?;
    Ok(Created::Waiting(Action::requeue(RETRY_EVERY)))
}

/// Restore `fromBackup` into the volume's new data.
async fn restore_backup(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    url: &str,
    size: u64,
    cache: Option<&Store<Volume>>,
) -> Result<Created, Error> {
    let name = volume.name_any();
    let waiting = |reason: &'static str, message: String| async move {
        let update = Update {
            restore: Some(Cond::new(false, reason, message.clone())),
            ..Update::default()
        };
        let state = VolumeState::Pending;
        not_ready(api, volume, ctx, state, RESTORE, (reason, message), update).await?;
        Ok::<_, Error>(Created::Waiting(Action::requeue(RETRY_EVERY)))
    };
    let (backup, store) = match open_store(volume, ctx, url).await? {
        Ok(opened) => opened,
        Err((reason, message)) => return waiting(reason, message).await,
    };
    let _permit = ctx.operations.acquire().await;
    // Recorded before the first byte is written: after a crash the status and the incomplete
    // marker both say the restore must be redone.
    let what = format!("backup {} of volume {}", backup.backup, backup.volume);
    write(api, volume, restoring_status(volume, &what, 0)).await?;
    ctx.events
        .normal(
            volume,
            "RestoreStarted",
            format!("restoring {what} from {}", backup.target),
        )
        .await;
    let (result, cancelled) =
        restore_reporting(volume, ctx, api, cache, &what, |progress, cancel| {
            restore::restore(
                ctx.engine.clone(),
                markers(ctx),
                &store,
                &backup,
                &name,
                size,
                Some(progress),
                cancel,
            )
        })
        .await;
    if cancelled {
        // The half-written data is gone; the deletion's reconcile (queued) finishes the job.
        ctx.events
            .normal(
                volume,
                "RestoreCancelled",
                format!("stopped restoring {what}: the volume is being deleted"),
            )
            .await;
        return Ok(Created::Waiting(Action::requeue(Duration::from_secs(1))));
    }
    ctx.metrics.store_request("restore", &result);
    match result {
        Ok(p) => {
            ctx.events
                .normal(
                    volume,
                    "Restored",
                    format!(
                        "restored {what} ({} bytes written, {} blocks fetched)",
                        p.bytes_written, p.blocks_fetched
                    ),
                )
                .await;
            Ok(Created::Done(Update {
                restore: Some(Cond::new(
                    false,
                    "RestoreCompleted",
                    format!("restored {what}"),
                )),
                restore_progress: Some(100),
                restored: Some((backup.backup.clone(), status::now())),
                ..Update::default()
            }))
        }
        Err(e) => {
            let message = format!("restoring {what} failed: {e}; retrying");
            ctx.events
                .warning(volume, "RestoreFailure", message.clone())
                .await;
            let update = Update {
                restore: Some(Cond::new(false, "RestoreFailure", message.clone())),
                restore_progress: Some(0),
                ..Update::default()
            };
            let ready = Cond::new(false, "RestoreFailure", message);
            let body =
                serde_json::to_value(agent_status(volume, VolumeState::Faulted, ready, update))
                    .map_err(kube::Error::SerdeError)?;
            status::apply(api, &name, status::managers::AGENT, body).await?;
            Ok(Created::Waiting(Action::requeue(RETRY_EVERY)))
        }
    }
}

/// The backup `url` names and the store holding it, or why it cannot be reached (a reason
/// and a message for the status).
async fn open_store(
    volume: &Volume,
    ctx: &AgentContext,
    url: &str,
) -> Result<Result<(BackupUrl, backupstore::Store), (&'static str, String)>, Error> {
    let backup = match BackupUrl::parse(url) {
        Ok(b) => b,
        Err(e) => {
            return Ok(Err((
                "InvalidFromBackup",
                format!(
                    "spec.fromBackup {url:?} is not a backup URL: {e}; copy it from the Backup's status.url"
                ),
            )));
        }
    };
    let targets: Api<BackupTarget> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let list = targets.list(&ListParams::default()).await?;
    let Some(target) = pick_target(&list.items, &backup.target, &volume.spec.backup_target_name)
    else {
        return Ok(Err((
            "NoBackupTarget",
            format!(
                "no BackupTarget in namespace {} has spec.backupTargetURL {}: create one with that URL (and its credential Secret) to restore spec.fromBackup",
                ctx.namespace, backup.target
            ),
        )));
    };
    match ctx.stores.open(&ctx.client, &ctx.namespace, target).await {
        Ok(store) => Ok(Ok((backup, store))),
        Err(e) => Ok(Err((
            "BackupTargetUnavailable",
            format!("BackupTarget {:?}: {e}", target.name_any()),
        ))),
    }
}

/// Bring a standby volume to backup `to` (the store's newest when None, on activation) through
/// a staged restore, then serve it (activation completes here: `isStandby` turns false).
async fn follow(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    to: Option<String>,
    cache: Option<&Store<Volume>>,
) -> Result<Action, Error> {
    let name = volume.name_any();
    let url = volume.spec.from_backup.clone().unwrap_or_default();
    let from = volume
        .status
        .as_ref()
        .and_then(|s| s.last_restored_backup.clone())
        .unwrap_or_default();
    let failed = |reason: &'static str, message: String| async move {
        ctx.metrics
            .dr_restore_failures
            .with_label_values(&[&name])
            .inc();
        ctx.events.warning(volume, reason, message.clone()).await;
        // The data still holds the last restored backup: it stays usable.
        let update = Update {
            restore: Some(Cond::new(false, reason, message)),
            ..Update::default()
        };
        serve(volume, ctx, api, None, update).await?;
        Ok::<_, Error>(Action::requeue(RETRY_EVERY))
    };
    let (backup, store) = match open_store(volume, ctx, &url).await? {
        Ok(opened) => opened,
        Err((reason, message)) => return failed(reason, message).await,
    };
    let to = match to {
        Some(to) => to,
        None => match store.inspect_volume(&backup.volume).await {
            Ok(config) => config.last_backup_name,
            Err(e) => {
                return failed(
                    "RestoreFailure",
                    format!("cannot read the newest backup of volume {} before activation: {e}; retrying", backup.volume),
                )
                .await;
            }
        },
    };
    if to == from || to.is_empty() {
        return serve(volume, ctx, api, None, Update::default()).await;
    }
    let what = format!("backup {to} of volume {} (from {from})", backup.volume);
    let _permit = ctx.operations.acquire().await;
    write(api, volume, restoring_status(volume, &what, 0)).await?;
    let data_name = volume.name_any();
    let (result, cancelled) =
        restore_reporting(volume, ctx, api, cache, &what, |progress, cancel| {
            restore::follow(
                ctx.engine.clone(),
                &store,
                &backup.volume,
                &from,
                &to,
                &data_name,
                Some(progress),
                cancel,
            )
        })
        .await;
    ctx.metrics.store_request("restore", &result);
    if cancelled {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    match result {
        Ok(done) => {
            let how = if done.incremental {
                "incrementally"
            } else {
                "in full (the restored backup is gone from the store)"
            };
            ctx.events
                .normal(
                    volume,
                    "Restored",
                    format!(
                        "restored {what} {how}: {} blocks fetched ({} bytes), {} zeroed",
                        done.progress.blocks_fetched,
                        done.progress.bytes_fetched,
                        done.progress.blocks_zeroed
                    ),
                )
                .await;
            let update = Update {
                restore: Some(Cond::new(
                    false,
                    "RestoreCompleted",
                    format!("restored {what}"),
                )),
                restore_progress: Some(100),
                restored: Some((to, status::now())),
                ..Update::default()
            };
            serve(volume, ctx, api, None, update).await
        }
        Err(e) => {
            failed(
                "RestoreFailure",
                format!("restoring {what} failed: {e}; retrying"),
            )
            .await
        }
    }
}

/// The status of a volume while `what` is being restored into it, `progress` percent done.
fn restoring_status(volume: &Volume, what: &str, progress: i32) -> AgentStatus {
    let update = Update {
        restore: Some(Cond::new(
            true,
            "RestoreInProgress",
            format!("restoring {what}"),
        )),
        restore_progress: Some(progress),
        ..Update::default()
    };
    let ready = Cond::new(false, "Restoring", format!("restoring {what}"));
    agent_status(volume, VolumeState::Restoring, ready, update)
}

/// Run the restore `start` builds (given its progress callback and cancel token) while the
/// restoring status of `what` is written at most every [`PROGRESS_EVERY`], and cancel it once
/// the controller's cache says the volume is being deleted. Returns the result and whether it
/// was cancelled.
async fn restore_reporting<T, F, Fut>(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    cache: Option<&Store<Volume>>,
    what: &str,
    start: F,
) -> (T, bool)
where
    F: FnOnce(RestoreProgressFn, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let name = volume.name_any();
    let latest: Arc<Mutex<Option<RestoreProgress>>> = Arc::default();
    let seen = latest.clone();
    let progress: RestoreProgressFn = Arc::new(move |p: &RestoreProgress| {
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(*p);
    });
    let cancel = CancellationToken::new();
    let work = start(progress, cancel.clone());
    let report = |percent: i32| {
        let body = serde_json::to_value(restoring_status(volume, what, percent));
        let name = name.clone();
        async move {
            // A lost progress write is not worth abandoning the restore for.
            let applied = match body {
                Ok(body) => status::apply(api, &name, status::managers::AGENT, body)
                    .await
                    .map(drop),
                Err(e) => Err(kube::Error::SerdeError(e)),
            };
            if let Err(error) = applied {
                tracing::warn!(%error, volume = %name, "cannot write restore progress");
            }
        }
    };
    let deleted = || deleting_in(cache, &name, &ctx.namespace);
    let result = with_progress(work, &latest, PROGRESS_EVERY, report, deleted, &cancel).await;
    (result, cancel.is_cancelled())
}

/// Drive `work` to its end; every `every`, hand the percent done (from `latest`) to `report`
/// when it changed since the last report, so progress is written at most that often, and
/// fire `cancel` once `stop` says so (`work` then ends early).
pub async fn with_progress<T, R, Fut>(
    work: impl std::future::Future<Output = T>,
    latest: &Mutex<Option<RestoreProgress>>,
    every: Duration,
    mut report: R,
    stop: impl Fn() -> bool,
    cancel: &CancellationToken,
) -> T
where
    R: FnMut(i32) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut work = std::pin::pin!(work);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut reported = 0;
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = ticker.tick() => {
                if stop() {
                    cancel.cancel();
                }
                let current = *latest.lock().unwrap_or_else(|e| e.into_inner());
                let percent = current.as_ref().map_or(0, restore::percent);
                if percent != reported {
                    report(percent).await;
                    reported = percent;
                }
            }
        }
    }
}

/// Open the data, grow it if asked, serve it, and report `Ready`.
async fn serve(
    volume: &Volume,
    ctx: &AgentContext,
    api: &Api<Volume>,
    expand_to: Option<u64>,
    update: Update,
) -> Result<Action, Error> {
    let name = volume.name_any();
    let (engine, n) = (ctx.engine.clone(), name.clone());
    let data = restore::blocking(move || {
        let data = engine.open_volume(&n)?;
        if let Some(size) = expand_to {
            data.expand(size)?;
        }
        Ok(data)
    })
    .await?;
    if let Some(size) = expand_to {
        ctx.events
            .normal(volume, "Expanded", format!("expanded to {size} bytes"))
            .await;
    }
    let message = match &ctx.frontend {
        _ if volume.spec.standby => {
            "standby volume: its data follows the backups and is served once activated (spec.standby: false)"
                .to_owned()
        }
        Some(frontend) => {
            if !frontend.names().contains(&name) {
                frontend.add(&name, data.clone())?;
            }
            format!("served at {}", frontend.file_path(&name).display())
        }
        None => format!(
            "data ready on node {}; not served: the FUSE frontend is unavailable on this node (see the agent's log)",
            ctx.node
        ),
    };
    let measured = data.clone();
    let actual = restore::blocking(move || Ok(measured.actual_size()?)).await?;
    drop(data);
    let update = Update {
        actual_size: Some(actual),
        ..update
    };
    let ready = Cond::new(true, "Ready", message);
    write(
        api,
        volume,
        agent_status(volume, VolumeState::Ready, ready, update),
    )
    .await?;
    Ok(Action::requeue(REFRESH_EVERY))
}

/// Stop serving, delete the data, release the finalizer.
async fn delete(volume: &Volume, ctx: &AgentContext, api: &Api<Volume>) -> Result<Action, Error> {
    let name = volume.name_any();
    if let Some(frontend) = &ctx.frontend {
        match frontend.remove(&name) {
            Ok(_) | Err(engine::frontend::FrontendError::NotServed { .. }) => {}
            Err(e) => {
                // Still open (a loop device): deleting now would cut off a user.
                ctx.events
                    .warning(volume, "DeleteBlocked", format!("cannot delete yet: {e}"))
                    .await;
                return Ok(Action::requeue(RETRY_EVERY));
            }
        }
    }
    let (engine, markers, n) = (ctx.engine.clone(), markers(ctx), name.clone());
    let deleted = restore::blocking(move || restore::discard(&engine, &markers, &n)).await;
    if let Err(e) = deleted {
        ctx.events
            .warning(
                volume,
                "DeleteFailed",
                format!("cannot delete the data: {e}; retrying"),
            )
            .await;
        return Err(e.into());
    }
    finalizers::remove(api, volume, finalizers::VOLUME).await?;
    // The series this agent keeps for the volume go with it.
    ctx.metrics.forget_volume(&name);
    ctx.events
        .normal(
            volume,
            "Deleted",
            format!("deleted the volume's data on node {}", ctx.node),
        )
        .await;
    Ok(Action::await_change())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tests_volumes.rs"]
pub(crate) mod tests;
