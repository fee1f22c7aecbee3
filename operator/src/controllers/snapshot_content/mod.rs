//! VolumeSnapshotContents whose driver is ours: the operator plays the part the CSI snapshotter
//! sidecar plays for a CSI driver, through the API server.
//!
//! - pre-provisioned (`spec.source.snapshotHandle`): the handle is decoded with `handle-codec`
//!   and checked against our objects (a ready Snapshot, a Completed Backup, a matching
//!   BackingImage, or a BackingImage created on demand from a `download`/`export-from-volume`
//!   handle);
//! - dynamic (`spec.source.volumeHandle` + the class's parameters): a Snapshot, Backup or
//!   exported BackingImage is created, named after the bound VolumeSnapshot's UID so a restart
//!   finds it again, and its handle published once it is ready.
//!
//! Status (`snapshotHandle`, `readyToUse`, `restoreSize`, `creationTime` in Unix nanoseconds, or
//! `error`) goes to the content's status subresource by server-side apply. The finalizer
//! `bulwark.io/snapshot-content` holds the content until `deletionPolicy: Delete` has deleted
//! the underlying object (`Retain` keeps it).

pub mod resolve;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crd_types::{BackingImage, Backup, BackupVolume, Snapshot, Volume};
use futures::StreamExt;
use handle_codec::SnapshotHandle;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::resolve::{CONTENT_LABEL, Create, Objects, Outcome};
use self::types::{DeletionPolicy, VolumeSnapshotClass, VolumeSnapshotContent};
use super::Context;
use crate::caches::Caches;
use crate::metrics::ErrorCategory;
use crate::{finalizers, status};

pub use self::resolve::{VolumePlan, VolumeSource, volume_source};

const CONTROLLER: &str = "snapshot-content";
/// Holds a content until its underlying object is deleted (`deletionPolicy: Delete`).
pub const FINALIZER: &str = "bulwark.io/snapshot-content";
/// Field manager of the content status fields we own.
pub const MANAGER: &str = "bulwark-snapshot-content";
/// How often a content whose object is being made is looked at again.
const RETRY_IN_PROGRESS: Duration = Duration::from_secs(5);
/// How often a content with an error is looked at again (the user may fix the cause).
const RETRY_FAILED: Duration = Duration::from_secs(30);
/// How often a ready content is checked again (its object may go away).
const RECHECK_READY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

/// Our objects as the watch caches hold them, in the operator's namespace.
pub struct CachedObjects<'a> {
    pub caches: &'a Caches,
    pub namespace: &'a str,
}

impl CachedObjects<'_> {
    fn key<K>(&self, name: &str) -> ObjectRef<K>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        ObjectRef::new(name).within(self.namespace)
    }
}

impl Objects for CachedObjects<'_> {
    fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        self.caches.volumes.get(&self.key(name))
    }
    fn snapshot(&self, name: &str) -> Option<Arc<Snapshot>> {
        self.caches.snapshots.get(&self.key(name))
    }
    fn backup(&self, name: &str) -> Option<Arc<Backup>> {
        self.caches.backups.get(&self.key(name))
    }
    fn backup_volumes_of(&self, volume: &str) -> Vec<Arc<BackupVolume>> {
        self.caches.backup_volumes.state_filter(|bv| {
            bv.spec.volume_name == volume && bv.namespace().as_deref() == Some(self.namespace)
        })
    }
    fn backing_image(&self, name: &str) -> Option<Arc<BackingImage>> {
        self.caches.backing_images.get(&self.key(name))
    }
}

/// The content status fields this controller owns, as compared and applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub snapshot_handle: Option<String>,
    /// `None` only for a status nobody wrote yet; we always write it.
    pub ready_to_use: Option<bool>,
    pub restore_size: Option<i64>,
    pub creation_time: Option<i64>,
    pub error: Option<String>,
}

impl Published {
    /// What the content's status says now.
    pub fn current(content: &VolumeSnapshotContent) -> Published {
        let status = content.status.clone().unwrap_or_default();
        Published {
            snapshot_handle: status.snapshot_handle,
            ready_to_use: status.ready_to_use,
            restore_size: status.restore_size,
            creation_time: status.creation_time,
            error: status.error.and_then(|e| e.message),
        }
    }

    /// What to publish for `outcome`. `strict`: a handle the user gave for an object that
    /// should already be usable (snap/bak), so "not ready yet" is reported as an error too.
    pub fn from_outcome(handle: Option<String>, outcome: &Outcome, strict: bool) -> Published {
        match outcome {
            Outcome::Ready {
                restore_size,
                creation_time,
            } => Published {
                snapshot_handle: handle,
                ready_to_use: Some(true),
                restore_size: *restore_size,
                creation_time: *creation_time,
                error: None,
            },
            Outcome::InProgress(why) => Published {
                snapshot_handle: handle,
                ready_to_use: Some(false),
                error: strict.then(|| why.clone()),
                ..Published::default()
            },
            Outcome::Failed(why) => Published {
                snapshot_handle: handle,
                ready_to_use: Some(false),
                error: Some(why.clone()),
                ..Published::default()
            },
            Outcome::Create(create) => Published {
                snapshot_handle: handle,
                ready_to_use: Some(false),
                error: strict.then(|| format!("creating {}", create.describe())),
                ..Published::default()
            },
        }
    }

    /// The `status` object to apply (every field we own, so SSA drops what we stopped sending,
    /// e.g. an `error` that no longer holds).
    pub fn to_json(&self, now: &crd_types::common::Time) -> serde_json::Value {
        let mut status = serde_json::Map::new();
        if let Some(handle) = &self.snapshot_handle {
            status.insert("snapshotHandle".into(), handle.clone().into());
        }
        status.insert(
            "readyToUse".into(),
            self.ready_to_use.unwrap_or(false).into(),
        );
        if let Some(size) = self.restore_size {
            status.insert("restoreSize".into(), size.into());
        }
        if let Some(time) = self.creation_time {
            status.insert("creationTime".into(), time.into());
        }
        if let Some(message) = &self.error {
            status.insert(
                "error".into(),
                serde_json::json!({ "message": message, "time": now }),
            );
        }
        serde_json::Value::Object(status)
    }
}

/// What a content refers to, after reading it (and for dynamic contents, its class).
struct Evaluated {
    handle: Option<String>,
    outcome: Outcome,
    /// The handle came from the user (pre-provisioned); errors are handle errors.
    pre_provisioned: bool,
    /// "Not ready yet" is an error too: a user's `snap://`/`bak://` handle should name
    /// something usable already (an image created on demand legitimately takes a while).
    strict: bool,
}

/// Waits until the VolumeSnapshotContent CRD is served; false when `stop` fired first.
async fn wait_for_crd(api: &Api<VolumeSnapshotContent>, stop: &CancellationToken) -> bool {
    // The snapshot CRDs are the user's to install; until they are, wait instead of letting a
    // watch fail in a loop.
    let mut told = false;
    loop {
        let wait = match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                if !told {
                    tracing::info!(
                        "the VolumeSnapshotContent CRD (snapshot.storage.k8s.io/v1) is not installed: VolumeSnapshotContents are served once it is"
                    );
                    told = true;
                }
                Duration::from_secs(60)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list VolumeSnapshotContents, retrying");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// With the CSI Controller service served, the csi-snapshotter sidecar owns the contents of
/// our driver: the finalizer this controller put on contents before (an upgrade) is removed
/// once, or deleting those contents would hang with nobody left to remove it.
pub async fn release_finalizers(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    if !wait_for_crd(&api, &stop).await {
        return;
    }
    loop {
        match release_all(&api, &ctx.config.csi_driver_name).await {
            Ok(released) => {
                if released > 0 {
                    tracing::info!(
                        released,
                        "removed {FINALIZER} from VolumeSnapshotContents now served by the csi-snapshotter"
                    );
                }
                return;
            }
            Err(error) => tracing::warn!(%error, "cannot release VolumeSnapshotContents, retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

/// Removes [`FINALIZER`] from every content of `driver`; answers how many had it.
pub async fn release_all(
    api: &Api<VolumeSnapshotContent>,
    driver: &str,
) -> Result<usize, kube::Error> {
    let mut released = 0;
    for content in api.list(&ListParams::default()).await?.items {
        if content.spec.driver == driver && content.finalizers().iter().any(|f| f == FINALIZER) {
            finalizers::remove(api, &content, FINALIZER).await?;
            released += 1;
        }
    }
    Ok(released)
}

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    if !wait_for_crd(&api, &stop).await {
        return;
    }
    // What dynamic contents created carries their name in a label: its changes (ready,
    // completed, failed) wake the content at once instead of at its next requeue.
    let namespace = ctx.config.common.namespace.as_str();
    let labelled = || watcher::Config::default().labels(CONTENT_LABEL);
    Controller::new(api, watcher::Config::default())
        .watches(
            Api::<Snapshot>::namespaced(ctx.client.clone(), namespace),
            labelled(),
            content_of,
        )
        .watches(
            Api::<Backup>::namespaced(ctx.client.clone(), namespace),
            labelled(),
            content_of,
        )
        .watches(
            Api::<BackingImage>::namespaced(ctx.client.clone(), namespace),
            labelled(),
            content_of,
        )
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile_timed, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// The content an object was created for (its [`CONTENT_LABEL`]).
fn content_of<K: kube::Resource>(object: K) -> Option<ObjectRef<VolumeSnapshotContent>> {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|labels| labels.get(CONTENT_LABEL))
        .map(|name| ObjectRef::new(name))
}

async fn reconcile_timed(
    content: Arc<VolumeSnapshotContent>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics
        .timed(CONTROLLER, reconcile(&content, &ctx), |_| {
            ErrorCategory::Kubernetes
        })
        .await
}

fn error_policy(content: Arc<VolumeSnapshotContent>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(content = %content.name_any(), %error, "VolumeSnapshotContent reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Labels of what a content creates: which content it was made for.
fn content_labels(content: &VolumeSnapshotContent) -> BTreeMap<String, String> {
    let name = content.name_any();
    // A label value is at most 63 characters; longer names simply go without the label.
    if name.len() <= 63 {
        BTreeMap::from([(CONTENT_LABEL.to_owned(), name)])
    } else {
        BTreeMap::new()
    }
}

/// One pass over one content: ignore foreign drivers, delete, hold the finalizer, check or
/// create, publish the status.
pub async fn reconcile(content: &VolumeSnapshotContent, ctx: &Context) -> Result<Action, Error> {
    if content.spec.driver != ctx.config.csi_driver_name {
        return Ok(Action::await_change());
    }
    let api: Api<VolumeSnapshotContent> = Api::all(ctx.client.clone());
    let namespace = ctx.config.common.namespace.as_str();
    let objects = CachedObjects {
        caches: &ctx.caches,
        namespace,
    };
    if content.metadata.deletion_timestamp.is_some() {
        return finalize(content, ctx, &api, &objects).await;
    }
    // Before anything is created, so a deletion can never leave it behind.
    finalizers::add(&api, content, FINALIZER).await?;

    let evaluated = evaluate(content, ctx, &objects).await?;
    let mut created = None;
    let outcome = match evaluated.outcome {
        Outcome::Create(create) => {
            if create_object(ctx, namespace, &create).await? {
                created = Some(create.describe());
            }
            Outcome::InProgress(format!("{} is being created", create.describe()))
        }
        other => other,
    };
    if let Some(what) = created {
        ctx.events
            .normal(content, "Creating", format!("created {what}"))
            .await;
    }
    let desired = Published::from_outcome(evaluated.handle, &outcome, evaluated.strict);
    if desired != Published::current(content) {
        status::apply(
            &api,
            &content.name_any(),
            MANAGER,
            desired.to_json(&status::now()),
        )
        .await?;
        match (&outcome, &desired.error) {
            (Outcome::Ready { .. }, _) => {
                ctx.events
                    .normal(
                        content,
                        "SnapshotReady",
                        format!(
                            "{} is ready to use",
                            desired.snapshot_handle.as_deref().unwrap_or("the snapshot")
                        ),
                    )
                    .await
            }
            (_, Some(message)) => {
                let reason = if evaluated.pre_provisioned {
                    "InvalidSnapshotHandle"
                } else {
                    "SnapshotFailed"
                };
                ctx.events.warning(content, reason, message.clone()).await
            }
            _ => {}
        }
    }
    Ok(match outcome {
        Outcome::Ready { .. } => Action::requeue(RECHECK_READY),
        Outcome::Failed(_) => Action::requeue(RETRY_FAILED),
        Outcome::InProgress(_) | Outcome::Create(_) => Action::requeue(RETRY_IN_PROGRESS),
    })
}

async fn evaluate(
    content: &VolumeSnapshotContent,
    ctx: &Context,
    objects: &CachedObjects<'_>,
) -> Result<Evaluated, Error> {
    let namespace = objects.namespace;
    let labels = content_labels(content);
    let source = &content.spec.source;
    let failed = |message: String, pre_provisioned: bool| Evaluated {
        handle: None,
        outcome: Outcome::Failed(message),
        pre_provisioned,
        strict: true,
    };

    if let Some(text) = source.snapshot_handle.as_deref() {
        return Ok(match handle_codec::decode(text) {
            Err(why) => failed(
                format!("spec.source.snapshotHandle {text:?} is invalid: {why}"),
                true,
            ),
            Ok(handle) => Evaluated {
                handle: Some(text.to_owned()),
                outcome: resolve::check_handle(objects, &handle, namespace, labels),
                pre_provisioned: true,
                strict: !matches!(handle, SnapshotHandle::BackingImage(_)),
            },
        });
    }
    let Some(volume) = source.volume_handle.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(failed(
            "spec.source has neither snapshotHandle nor volumeHandle: set one of them".to_owned(),
            false,
        ));
    };

    // Once published, a dynamic content's handle stands for itself: no class is needed, and
    // nothing is ever created again under it.
    let published = content
        .status
        .as_ref()
        .and_then(|s| s.snapshot_handle.as_deref())
        .filter(|h| !h.is_empty());
    if let Some(text) = published
        && let Ok(handle) = handle_codec::decode(text)
    {
        let outcome = match resolve::check_handle(objects, &handle, namespace, labels) {
            Outcome::Create(create) => Outcome::Failed(format!(
                "{} behind the published handle {text} is gone",
                create.describe()
            )),
            other => other,
        };
        return Ok(Evaluated {
            handle: Some(text.to_owned()),
            outcome,
            pre_provisioned: false,
            strict: false,
        });
    }

    let Some(class_name) = content
        .spec
        .volume_snapshot_class_name
        .as_deref()
        .filter(|c| !c.is_empty())
    else {
        return Ok(failed(
            "spec.volumeSnapshotClassName is not set: a dynamically provisioned content needs a VolumeSnapshotClass whose parameters say what to create".to_owned(),
            false,
        ));
    };
    let classes: Api<VolumeSnapshotClass> = Api::all(ctx.client.clone());
    let Some(class) = classes.get_opt(class_name).await? else {
        return Ok(failed(
            format!(
                "VolumeSnapshotClass {class_name} does not exist: create it or fix spec.volumeSnapshotClassName"
            ),
            false,
        ));
    };
    let request = match handle_codec::parse_snapshot_class_parameters(&class.parameters) {
        Ok(request) => request,
        Err(why) => {
            return Ok(failed(
                format!("VolumeSnapshotClass {class_name}: {why}"),
                false,
            ));
        }
    };
    let Some(name) = resolve::dynamic_name(request.kind, content) else {
        return Ok(failed(
            "neither spec.volumeSnapshotRef.uid nor metadata.uid is set (or usable in a name): cannot name the snapshot after them".to_owned(),
            false,
        ));
    };
    let outcome = resolve::check_dynamic(objects, request.kind, volume, &name, namespace, labels);
    let mut handle = None;
    if matches!(outcome, Outcome::Ready { .. }) {
        let checksum = objects
            .backing_image(&name)
            .and_then(|i| i.status.as_ref().and_then(|s| s.checksum.clone()));
        match resolve::dynamic_handle(request.kind, volume, &name, checksum.as_deref()) {
            Ok(h) => handle = Some(h.encode()),
            Err(why) => return Ok(failed(why, false)),
        }
    }
    Ok(Evaluated {
        handle,
        outcome,
        pre_provisioned: false,
        strict: false,
    })
}

/// Create one of our objects; `false` when it already existed (a pass whose cache had not yet
/// seen it, e.g. right after a restart).
async fn create_object(ctx: &Context, namespace: &str, create: &Create) -> Result<bool, Error> {
    let params = PostParams::default();
    let client = ctx.client.clone();
    let result = match create {
        Create::Snapshot(object) => Api::<Snapshot>::namespaced(client, namespace)
            .create(&params, object)
            .await
            .map(drop),
        Create::Backup(object) => Api::<Backup>::namespaced(client, namespace)
            .create(&params, object)
            .await
            .map(drop),
        Create::BackingImage(object) => Api::<BackingImage>::namespaced(client, namespace)
            .create(&params, object)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// An object a content's deletion removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Snapshot(String),
    Backup(String),
    BackingImage(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Snapshot(n) => format!("Snapshot {n}"),
            Target::Backup(n) => format!("Backup {n}"),
            Target::BackingImage(n) => format!("BackingImage {n}"),
        }
    }
}

/// What `deletionPolicy: Delete` removes: the object the handle names (only when it belongs to
/// the handle's volume), or for a dynamic content without a published handle, the objects it
/// created under its deterministic names.
pub fn deletion_targets(content: &VolumeSnapshotContent, objects: &impl Objects) -> Vec<Target> {
    let handle = content.spec.source.snapshot_handle.as_deref().or(content
        .status
        .as_ref()
        .and_then(|s| s.snapshot_handle.as_deref())
        .filter(|h| !h.is_empty()));
    if let Some(text) = handle {
        let Ok(handle) = handle_codec::decode(text) else {
            return Vec::new();
        };
        let target = match handle {
            SnapshotHandle::Snapshot { volume, snapshot } => objects
                .snapshot(snapshot.as_str())
                .filter(|s| s.spec.volume == volume.as_str())
                .map(|_| Target::Snapshot(snapshot.into_string())),
            SnapshotHandle::Backup { volume, backup } => objects
                .backup(backup.as_str())
                .filter(|b| b.spec.volume == volume.as_str())
                .map(|_| Target::Backup(backup.into_string())),
            SnapshotHandle::BackingImage(image) => objects
                .backing_image(image.name.as_str())
                .map(|_| Target::BackingImage(image.name.into_string())),
        };
        return target.into_iter().collect();
    }
    if content.spec.source.volume_handle.is_none() {
        return Vec::new();
    }
    resolve::DYNAMIC_KINDS
        .iter()
        .filter_map(|kind| {
            let name = resolve::dynamic_name(*kind, content)?;
            match kind {
                handle_codec::SnapshotRequestKind::Snapshot => {
                    objects.snapshot(&name).map(|_| Target::Snapshot(name))
                }
                handle_codec::SnapshotRequestKind::Backup { .. } => {
                    objects.backup(&name).map(|_| Target::Backup(name))
                }
                handle_codec::SnapshotRequestKind::BackingImage { .. } => objects
                    .backing_image(&name)
                    .map(|_| Target::BackingImage(name)),
            }
        })
        .collect()
}

async fn finalize(
    content: &VolumeSnapshotContent,
    ctx: &Context,
    api: &Api<VolumeSnapshotContent>,
    objects: &CachedObjects<'_>,
) -> Result<Action, Error> {
    if !content.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if content.spec.deletion_policy == DeletionPolicy::Delete {
        let client = ctx.client.clone();
        let namespace = objects.namespace;
        let params = DeleteParams::default();
        for target in deletion_targets(content, objects) {
            let result = match &target {
                Target::Snapshot(name) => Api::<Snapshot>::namespaced(client.clone(), namespace)
                    .delete(name, &params)
                    .await
                    .map(drop),
                Target::Backup(name) => Api::<Backup>::namespaced(client.clone(), namespace)
                    .delete(name, &params)
                    .await
                    .map(drop),
                Target::BackingImage(name) => {
                    Api::<BackingImage>::namespaced(client.clone(), namespace)
                        .delete(name, &params)
                        .await
                        .map(drop)
                }
            };
            match result {
                Ok(()) => {}
                // Gone already: what deletion wanted.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
            ctx.events
                .normal(
                    content,
                    "Deleted",
                    format!("deleted {} (deletionPolicy Delete)", target.describe()),
                )
                .await;
        }
    } else {
        ctx.events
            .normal(
                content,
                "Retained",
                "deletionPolicy Retain: the snapshot, backup or backing image is kept",
            )
            .await;
    }
    finalizers::remove(api, content, FINALIZER).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
