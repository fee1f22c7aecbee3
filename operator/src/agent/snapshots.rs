//! The agent's snapshot work: for every Snapshot whose `spec.volume` is a Volume on this node,
//! take the engine snapshot (name = object name, labels = `spec.labels`) after adding the
//! finalizer `bulwark.io/snapshot-data`, report it (`readyToUse`, `size`, `creationTime`,
//! `parent`, `children`, `restoreSize`, `userCreated`, condition `Ready`), and on deletion merge
//! its layer away before releasing the finalizer. Engine snapshots that no object describes
//! (e.g. taken for a backup) get an object with `userCreated: false`.
//!
//! One lock serialises snapshot deletion and the discovery of undescribed snapshots, so a
//! snapshot being merged away is never rediscovered (and then re-taken) under its old name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crd_types::common::{Condition, Time};
use crd_types::snapshot::SnapshotSpec;
use crd_types::volume::VolumeState;
use crd_types::{Snapshot, Volume};
use engine::SnapshotInfo;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::AgentContext;
use super::restore::{self, DataError, Markers, TEMPORARY_LABEL};
use super::skip;
use super::volumes::unchanged_json;
use crate::controllers::backup_target::sync::is_object_name;
use crate::metrics::ErrorCategory;
use crate::{finalizers, status};

/// Name in reconcile metrics.
pub const CONTROLLER: &str = "agent-snapshot";
/// Annotation `"false"` on objects the agent created for engine snapshots nobody asked for.
pub const USER_CREATED_ANNOTATION: &str = "bulwark.io/user-created";
/// How often engine snapshots are compared with the objects.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_secs(15);
const REFRESH_EVERY: Duration = Duration::from_secs(120);

pub const READY: &str = "Ready";

/// What the engine holds for a snapshot's volume on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// The volume has (complete) data here.
    pub volume_has_data: bool,
    /// The engine snapshot, if taken.
    pub snapshot: Option<SnapshotInfo>,
    /// Bytes written to the volume since its newest snapshot.
    pub head_changed: u64,
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Not this node's (or nothing to do).
    Skip,
    /// Nothing to merge (volume or snapshot gone): only release the finalizer.
    ReleaseFinalizer,
    /// Merge the layer away, then release the finalizer.
    Delete,
    /// Add the finalizer before the engine snapshot exists.
    AddFinalizer,
    /// Take the engine snapshot.
    Create,
    /// Report the engine snapshot in status.
    Report,
    /// Cannot snapshot: the status says why.
    Refuse {
        reason: &'static str,
        message: String,
    },
    /// A recurring job asked to skip an unchanged volume, and it is unchanged: take nothing
    /// (and hold no finalizer); the status says why.
    Skipped { message: String },
}

/// The pure decision for `snapshot` given its Volume (None: does not exist) and local data.
pub fn decide(snapshot: &Snapshot, volume: Option<&Volume>, node: &str, local: &Local) -> Plan {
    let has_finalizer = snapshot
        .finalizers()
        .iter()
        .any(|f| f == finalizers::SNAPSHOT);
    let owner = volume.and_then(|v| v.status.as_ref().and_then(|s| s.owner_id.as_deref()));
    if snapshot.metadata.deletion_timestamp.is_some() {
        return match (has_finalizer, volume, owner) {
            (false, _, _) => Plan::Skip,
            // No volume, or one never placed: no data anywhere.
            (true, None, _) | (true, Some(_), None) => Plan::ReleaseFinalizer,
            (true, Some(_), Some(o)) if o != node => Plan::Skip,
            (true, Some(_), Some(_)) if local.snapshot.is_some() => Plan::Delete,
            (true, Some(_), Some(_)) => Plan::ReleaseFinalizer,
        };
    }
    let Some(volume) = volume else {
        return Plan::Skip;
    };
    if owner != Some(node) {
        return Plan::Skip;
    }
    let conditions = snapshot
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref());
    if local.snapshot.is_none() && skip::already_skipped(conditions, READY) {
        // Final: the scheduler deletes skipped objects; later writes belong to its next run.
        return if has_finalizer {
            Plan::ReleaseFinalizer
        } else {
            Plan::Skip
        };
    }
    if local.snapshot.is_some() {
        return if has_finalizer {
            Plan::Report
        } else {
            Plan::AddFinalizer
        };
    }
    let name = snapshot.name_any();
    if volume.metadata.deletion_timestamp.is_some() {
        return Plan::Refuse {
            reason: "VolumeDeleting",
            message: format!(
                "volume {:?} is being deleted: snapshot {name:?} cannot be taken",
                volume.name_any()
            ),
        };
    }
    if volume.spec.standby {
        return Plan::Refuse {
            reason: "VolumeStandby",
            message: format!(
                "volume {:?} is a standby volume: it cannot be snapshotted until it is activated (spec.standby: false)",
                volume.name_any()
            ),
        };
    }
    let state = volume.status.as_ref().and_then(|s| s.state);
    if state != Some(VolumeState::Ready) || !local.volume_has_data {
        let state = state.map_or("unknown".to_owned(), |s| format!("{s:?}"));
        return Plan::Refuse {
            reason: "VolumeNotReady",
            message: format!(
                "volume {:?} is not Ready (state {state}): snapshot {name:?} is taken once it is",
                volume.name_any()
            ),
        };
    }
    if let Some(min) = skip::threshold(snapshot.annotations())
        && let Some(reason) = skip::decide(recurring::Task::Snapshot, local.head_changed, true, min)
    {
        return Plan::Skipped {
            message: skip::message(reason, local.head_changed, min),
        };
    }
    if !has_finalizer {
        return Plan::AddFinalizer;
    }
    Plan::Create
}

/// Whether the user asked for this snapshot (objects the agent made say so in an annotation).
pub fn user_created(snapshot: &Snapshot) -> bool {
    snapshot
        .annotations()
        .get(USER_CREATED_ANNOTATION)
        .is_none_or(|v| v != "false")
}

/// The status fields this agent owns, as applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<String>>,
    pub ready_to_use: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    pub user_created: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

const OWNED: [&str; 10] = [
    "creationTime",
    "size",
    "parent",
    "children",
    "readyToUse",
    "restoreSize",
    "userCreated",
    "error",
    "conditions",
    "observedGeneration",
];

fn bytes(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

/// Status of a taken snapshot.
pub fn ready_status(snapshot: &Snapshot, info: &SnapshotInfo) -> AgentStatus {
    let existing = snapshot
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref());
    let generation = snapshot.metadata.generation;
    AgentStatus {
        creation_time: Some(Time(info.created)),
        size: Some(bytes(info.size)),
        parent: info.parent.clone(),
        children: Some(info.children.clone()),
        ready_to_use: true,
        restore_size: Some(bytes(info.volume_size)),
        user_created: user_created(snapshot),
        error: None,
        conditions: vec![status::condition(
            existing,
            READY,
            true,
            "Ready",
            "snapshot taken",
            generation,
        )],
        observed_generation: generation,
    }
}

/// Status of a snapshot that cannot be taken.
pub fn refused_status(snapshot: &Snapshot, reason: &str, message: &str) -> AgentStatus {
    let existing = snapshot
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref());
    let generation = snapshot.metadata.generation;
    AgentStatus {
        creation_time: None,
        size: None,
        parent: None,
        children: None,
        ready_to_use: false,
        restore_size: None,
        user_created: user_created(snapshot),
        error: Some(message.to_owned()),
        conditions: vec![status::condition(
            existing, READY, false, reason, message, generation,
        )],
        observed_generation: generation,
    }
}

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Data(#[from] DataError),
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::Kubernetes,
            Error::Data(_) => ErrorCategory::Data,
        }
    }
}

impl From<engine::Error> for Error {
    fn from(e: engine::Error) -> Error {
        Error::Data(e.into())
    }
}

/// The snapshot part of the agent.
pub struct Snapshots {
    pub agent: Arc<AgentContext>,
    /// Serialises deletions with discovery (see the module doc).
    pub lock: tokio::sync::Mutex<()>,
}

impl Snapshots {
    pub fn new(agent: Arc<AgentContext>) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            agent,
            lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// Watch the namespace's Snapshots and discover undescribed engine snapshots until `shutdown`.
pub async fn run(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    let snapshots = Snapshots::new(ctx.clone());
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let stop = shutdown.clone();
    let controller = Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, snapshots.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "snapshot reconcile failed");
            }
        });
    let discovery = async {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DISCOVER_EVERY) => {}
            }
            if let Err(error) = discover(&snapshots).await {
                tracing::warn!(%error, "cannot compare engine snapshots with Snapshot objects");
            }
        }
    };
    tokio::join!(controller, discovery);
}

fn error_policy(snapshot: Arc<Snapshot>, error: &Error, _ctx: Arc<Snapshots>) -> Action {
    tracing::warn!(%error, snapshot = %snapshot.name_any(), "snapshot reconcile failed, retrying");
    Action::requeue(Duration::from_secs(10))
}

/// One reconcile of `snapshot`, counted in the reconcile metrics.
pub async fn reconcile(snapshot: Arc<Snapshot>, ctx: Arc<Snapshots>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&snapshot, &ctx).await;
    ctx.agent.metrics.reconciled(
        CONTROLLER,
        started.elapsed().as_secs_f64(),
        result.as_ref().map(|_| ()).map_err(Error::category),
    );
    result
}

/// What the engine holds for `snapshot` of `volume`.
async fn observe(ctx: &AgentContext, volume: &str, snapshot: &str) -> Result<Local, Error> {
    let (engine, markers) = (ctx.engine.clone(), Markers::new(&ctx.config.data_dir));
    let (volume, snapshot) = (volume.to_owned(), snapshot.to_owned());
    let local = restore::blocking(move || {
        if markers.is_set(&volume) || !engine.list_volumes()?.contains(&volume) {
            return Ok(Local::default());
        }
        let data = engine.open_volume(&volume)?;
        let snapshot = data
            .list_snapshots()?
            .into_iter()
            .find(|s| s.name == snapshot);
        Ok(Local {
            volume_has_data: true,
            snapshot,
            head_changed: data.head_changed_bytes()?,
        })
    })
    .await?;
    Ok(local)
}

async fn reconcile_inner(snapshot: &Snapshot, ctx: &Snapshots) -> Result<Action, Error> {
    let agent = &ctx.agent;
    let name = snapshot.name_any();
    let api: Api<Snapshot> = Api::namespaced(agent.client.clone(), &agent.namespace);
    let volumes: Api<Volume> = Api::namespaced(agent.client.clone(), &agent.namespace);
    let volume = volumes.get_opt(&snapshot.spec.volume).await?;
    let ours = volume
        .as_ref()
        .is_some_and(|v| agent.owns(v.status.as_ref().and_then(|s| s.owner_id.as_deref())));
    let local = if ours {
        observe(agent, &snapshot.spec.volume, &name).await?
    } else {
        Local::default()
    };
    match decide(snapshot, volume.as_ref(), &agent.node, &local) {
        Plan::Skip => Ok(Action::await_change()),
        Plan::ReleaseFinalizer => {
            finalizers::remove(&api, snapshot, finalizers::SNAPSHOT).await?;
            Ok(Action::await_change())
        }
        Plan::AddFinalizer => {
            finalizers::add(&api, snapshot, finalizers::SNAPSHOT).await?;
            Ok(Action::await_change())
        }
        Plan::Delete => {
            let _serial = ctx.lock.lock().await;
            let (engine, volume, n) = (
                agent.engine.clone(),
                snapshot.spec.volume.clone(),
                name.clone(),
            );
            let merged =
                restore::blocking(
                    move || match engine.open_volume(&volume)?.delete_snapshot(&n) {
                        Ok(()) | Err(engine::Error::SnapshotNotFound { .. }) => Ok(()),
                        Err(e) => Err(e.into()),
                    },
                )
                .await;
            if let Err(e) = merged {
                agent
                    .events
                    .warning(
                        snapshot,
                        "DeleteFailed",
                        format!("cannot merge the snapshot away: {e}; retrying"),
                    )
                    .await;
                return Err(e.into());
            }
            finalizers::remove(&api, snapshot, finalizers::SNAPSHOT).await?;
            agent
                .events
                .normal(
                    snapshot,
                    "Deleted",
                    "merged the snapshot's data into the next layer",
                )
                .await;
            Ok(Action::await_change())
        }
        Plan::Skipped { message } => {
            finalizers::remove(&api, snapshot, finalizers::SNAPSHOT).await?;
            agent
                .events
                .normal(snapshot, skip::SKIPPED_REASON, message.clone())
                .await;
            // A skip is no error: only the condition says it.
            let mut skipped = refused_status(snapshot, skip::SKIPPED_REASON, &message);
            skipped.error = None;
            write(&api, snapshot, skipped).await?;
            Ok(Action::await_change())
        }
        Plan::Refuse { reason, message } => {
            let previous = snapshot
                .status
                .as_ref()
                .and_then(|s| status::find(s.conditions.as_deref(), READY))
                .map(|c| c.reason.clone());
            if previous.as_deref() != Some(reason) {
                agent
                    .events
                    .warning(snapshot, reason, message.clone())
                    .await;
            }
            write(&api, snapshot, refused_status(snapshot, reason, &message)).await?;
            Ok(Action::requeue(RETRY_EVERY))
        }
        Plan::Create => {
            let (engine, volume, n, labels) = (
                agent.engine.clone(),
                snapshot.spec.volume.clone(),
                name.clone(),
                snapshot.spec.labels.clone(),
            );
            let taken =
                restore::blocking(move || Ok(engine.open_volume(&volume)?.snapshot(&n, labels)?))
                    .await;
            match taken {
                Ok(info) => {
                    agent
                        .events
                        .normal(
                            snapshot,
                            "Created",
                            format!(
                                "took snapshot {name:?} of volume {:?}",
                                snapshot.spec.volume
                            ),
                        )
                        .await;
                    write(&api, snapshot, ready_status(snapshot, &info)).await?;
                    Ok(Action::requeue(REFRESH_EVERY))
                }
                Err(e) => {
                    let message = format!("cannot take the snapshot: {e}");
                    agent
                        .events
                        .warning(snapshot, "SnapshotFailed", message.clone())
                        .await;
                    write(
                        &api,
                        snapshot,
                        refused_status(snapshot, "SnapshotFailed", &message),
                    )
                    .await?;
                    Ok(Action::requeue(RETRY_EVERY))
                }
            }
        }
        Plan::Report => {
            if let Some(info) = &local.snapshot {
                write(&api, snapshot, ready_status(snapshot, info)).await?;
            }
            Ok(Action::requeue(REFRESH_EVERY))
        }
    }
}

/// Apply `new` unless it changes nothing.
async fn write(api: &Api<Snapshot>, snapshot: &Snapshot, new: AgentStatus) -> Result<(), Error> {
    let body = serde_json::to_value(&new).map_err(kube::Error::SerdeError)?;
    let old = snapshot.status.as_ref().map(serde_json::to_value);
    if let Some(Ok(old)) = old
        && unchanged_json(&old, &body, &OWNED)
    {
        return Ok(());
    }
    status::apply(api, &snapshot.name_any(), status::managers::AGENT, body).await?;
    Ok(())
}

/// The object describing engine snapshot `info` of `volume`, which nobody asked for.
pub fn discovered_object(volume: &Volume, info: &SnapshotInfo) -> Snapshot {
    let owner = OwnerReference {
        api_version: Volume::api_version(&()).into_owned(),
        kind: Volume::kind(&()).into_owned(),
        name: volume.name_any(),
        uid: volume.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    };
    Snapshot {
        metadata: ObjectMeta {
            name: Some(info.name.clone()),
            namespace: volume.namespace(),
            annotations: Some([(USER_CREATED_ANNOTATION.to_owned(), "false".to_owned())].into()),
            finalizers: Some(vec![finalizers::SNAPSHOT.to_owned()]),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: SnapshotSpec {
            volume: volume.name_any(),
            labels: info.labels.clone(),
        },
        status: None,
    }
}

/// Create objects for engine snapshots of this node's volumes that no object describes.
/// Returns the names created.
pub async fn discover(ctx: &Snapshots) -> Result<Vec<String>, Error> {
    let agent = &ctx.agent;
    let _serial = ctx.lock.lock().await;
    let volumes: Api<Volume> = Api::namespaced(agent.client.clone(), &agent.namespace);
    let api: Api<Snapshot> = Api::namespaced(agent.client.clone(), &agent.namespace);
    let ours: Vec<Volume> = volumes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|v| agent.owns(v.status.as_ref().and_then(|s| s.owner_id.as_deref())))
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .collect();
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    let described: BTreeSet<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let mut created = Vec::new();
    for volume in ours {
        let (engine, markers, name) = (
            agent.engine.clone(),
            Markers::new(&agent.config.data_dir),
            volume.name_any(),
        );
        let infos = restore::blocking(move || {
            if markers.is_set(&name) || !engine.list_volumes()?.contains(&name) {
                return Ok(Vec::new());
            }
            Ok(engine.open_volume(&name)?.list_snapshots()?)
        })
        .await?;
        for info in infos {
            // Snapshots that live only while a clone or a backing-image export reads them.
            let temporary = info.labels.contains_key(TEMPORARY_LABEL)
                || info
                    .labels
                    .contains_key(super::backing_images::local::EXPORT_LABEL);
            if described.contains(&info.name) || temporary {
                continue;
            }
            if !is_object_name(&info.name) {
                tracing::warn!(volume = %volume.name_any(), snapshot = %info.name,
                    "engine snapshot name is not a valid object name; no Snapshot object describes it");
                continue;
            }
            match api
                .create(&PostParams::default(), &discovered_object(&volume, &info))
                .await
            {
                Ok(object) => {
                    agent
                        .events
                        .normal(
                            &object,
                            "Discovered",
                            format!(
                                "engine snapshot of volume {:?} that no Snapshot described",
                                volume.name_any()
                            ),
                        )
                        .await;
                    created.push(info.name);
                }
                // Described meanwhile (e.g. by the backup work).
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(created)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tests_snapshots.rs"]
pub(crate) mod tests;
