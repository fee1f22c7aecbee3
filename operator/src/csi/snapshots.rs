//! The CSI snapshot RPCs. A VolumeSnapshotClass's `type` picks what CreateSnapshot makes of a
//! volume: `snap` a Snapshot, `bak` (legacy `bs`, or no type) a Backup to the volume's backup
//! target, `bi` a BackingImage exported from the volume; the snapshot ID is the handle-codec
//! handle of that object. What is ready, in progress or failed is decided by the same pure rules
//! the snapshot-content controller uses (`controllers::snapshot_content::resolve`).

// `tonic::Status` is the error type of every RPC; the helpers here return it as the RPCs do.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use crd_types::backing_image::BackingImageSourceType;
use crd_types::{BackingImage, Backup, BackupVolume, Snapshot, Volume};
use handle_codec::{ExportType, SnapshotHandle, SnapshotRequestKind, keys};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use tonic::Status;

use super::controller::{
    CREATED_BY_LABEL, ControllerService, api_error, invalid, is_volume_name, remember_csi_name,
    size_of, volume_name,
};
use super::proto;
use crate::controllers::snapshot_content::resolve::{self, Create, Objects, Outcome};

/// Our objects as read from the API server for one RPC: only those it needs.
#[derive(Default)]
pub struct Fetched {
    volumes: BTreeMap<String, Arc<Volume>>,
    snapshots: BTreeMap<String, Arc<Snapshot>>,
    backups: BTreeMap<String, Arc<Backup>>,
    backing_images: BTreeMap<String, Arc<BackingImage>>,
}

impl Objects for Fetched {
    fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        self.volumes.get(name).cloned()
    }
    fn snapshot(&self, name: &str) -> Option<Arc<Snapshot>> {
        self.snapshots.get(name).cloned()
    }
    fn backup(&self, name: &str) -> Option<Arc<Backup>> {
        self.backups.get(name).cloned()
    }
    // Only consulted for the message about a missing Backup, which the RPCs here answer
    // themselves before asking.
    fn backup_volumes_of(&self, _volume: &str) -> Vec<Arc<BackupVolume>> {
        Vec::new()
    }
    fn backing_image(&self, name: &str) -> Option<Arc<BackingImage>> {
        self.backing_images.get(name).cloned()
    }
}

/// Reads object `name` into `found`; nothing when it is missing or being deleted (an object
/// being deleted is gone as far as CSI is concerned: DeleteSnapshot answered).
async fn read_into<K>(
    csi: &ControllerService,
    found: &mut BTreeMap<String, Arc<K>>,
    name: &str,
) -> Result<(), Status>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let object = csi
        .api::<K>()
        .get_opt(name)
        .await
        .map_err(|e| api_error(&format!("reading {} {name}", K::kind(&())), e))?;
    if let Some(object) = object.filter(|o| o.meta().deletion_timestamp.is_none()) {
        found.insert(name.to_owned(), Arc::new(object));
    }
    Ok(())
}

/// Every object of a kind (with `labels`, if given), by name.
async fn list<K>(api: &Api<K>, labels: Option<&str>) -> Result<BTreeMap<String, Arc<K>>, Status>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let params = match labels {
        Some(selector) => ListParams::default().labels(selector),
        None => ListParams::default(),
    };
    let listed = api
        .list(&params)
        .await
        .map_err(|e| api_error(&format!("listing {}s", K::kind(&Default::default())), e))?;
    Ok(listed
        .items
        .into_iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| (o.name_any(), Arc::new(o)))
        .collect())
}

impl ControllerService {
    /// Reads what `handle` points at (and its volume).
    pub async fn fetch_for_handle(&self, handle: &SnapshotHandle) -> Result<Fetched, Status> {
        let mut fetched = Fetched::default();
        let volume = match handle {
            SnapshotHandle::Snapshot { volume, snapshot } => {
                read_into(self, &mut fetched.snapshots, snapshot.as_str()).await?;
                Some(volume.as_str())
            }
            SnapshotHandle::Backup { volume, backup } => {
                read_into(self, &mut fetched.backups, backup.as_str()).await?;
                Some(volume.as_str())
            }
            SnapshotHandle::BackingImage(image) => {
                read_into(self, &mut fetched.backing_images, image.name.as_str()).await?;
                None
            }
        };
        if let Some(volume) = volume {
            read_into(self, &mut fetched.volumes, volume).await?;
        }
        Ok(fetched)
    }
}

impl Fetched {
    /// Whether the object `handle` names exists (whatever its state).
    pub fn has_object_of(&self, handle: &SnapshotHandle) -> bool {
        match handle {
            SnapshotHandle::Snapshot { snapshot, .. } => self.snapshot(snapshot.as_str()).is_some(),
            SnapshotHandle::Backup { backup, .. } => self.backup(backup.as_str()).is_some(),
            SnapshotHandle::BackingImage(image) => {
                self.backing_image(image.name.as_str()).is_some()
            }
        }
    }

    /// The volume the object of kind `kind` named `name` was made from, when it exists.
    fn source_of(&self, kind: SnapshotRequestKind, name: &str) -> Option<Option<String>> {
        match kind {
            SnapshotRequestKind::Snapshot => {
                self.snapshot(name).map(|s| Some(s.spec.volume.clone()))
            }
            SnapshotRequestKind::Backup { .. } => {
                self.backup(name).map(|b| Some(b.spec.volume.clone()))
            }
            SnapshotRequestKind::BackingImage { .. } => {
                self.backing_image(name).map(|i| exported_from(&i))
            }
        }
    }
}

/// The volume a BackingImage was exported from, if it was.
fn exported_from(image: &BackingImage) -> Option<String> {
    (image.spec.source_type == BackingImageSourceType::ExportFromVolume)
        .then(|| image.spec.source_parameters.get(keys::VOLUME_NAME).cloned())
        .flatten()
}

/// The handle of a snapshot made by CreateSnapshot. Never carries a `bi://` image's checksum:
/// the csi-snapshotter records the first ID it is given, while the checksum is known only once
/// the export is done, and an ID must not change.
fn made_handle(
    kind: SnapshotRequestKind,
    volume: &str,
    name: &str,
) -> Result<SnapshotHandle, Status> {
    resolve::dynamic_handle(kind, volume, name, None).map_err(Status::internal)
}

fn timestamp(unix_nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: unix_nanos.div_euclid(1_000_000_000),
        nanos: unix_nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// Unix nanoseconds of an object's creation (for a snapshot not ready yet).
fn created_nanos(metadata: &kube::api::ObjectMeta) -> i64 {
    metadata
        .creation_timestamp
        .as_ref()
        .map_or_else(jiff::Timestamp::now, |t| t.0)
        .as_nanosecond() as i64
}

/// The CSI snapshot for an object's outcome; `None` when it failed.
fn csi_snapshot(
    id: String,
    volume: &str,
    outcome: &Outcome,
    volume_size: Option<i64>,
    created: i64,
) -> Option<proto::Snapshot> {
    let (ready, size, time) = match outcome {
        Outcome::Ready {
            restore_size,
            creation_time,
        } => (
            true,
            restore_size.or(volume_size),
            creation_time.unwrap_or(created),
        ),
        Outcome::InProgress(_) | Outcome::Create(_) => (false, volume_size, created),
        Outcome::Failed(_) => return None,
    };
    Some(proto::Snapshot {
        size_bytes: size.unwrap_or(0),
        snapshot_id: id,
        source_volume_id: volume.to_owned(),
        creation_time: Some(timestamp(time)),
        ready_to_use: ready,
        group_snapshot_id: String::new(),
    })
}

fn volume_bytes(objects: &impl Objects, volume: &str) -> Option<i64> {
    objects.volume(volume).and_then(|v| size_of(&v))
}

/// The creation time of the object a handle names.
fn object_created(objects: &impl Objects, handle: &SnapshotHandle) -> i64 {
    let metadata = match handle {
        SnapshotHandle::Snapshot { snapshot, .. } => objects
            .snapshot(snapshot.as_str())
            .map(|o| o.metadata.clone()),
        SnapshotHandle::Backup { backup, .. } => {
            objects.backup(backup.as_str()).map(|o| o.metadata.clone())
        }
        SnapshotHandle::BackingImage(image) => objects
            .backing_image(image.name.as_str())
            .map(|o| o.metadata.clone()),
    };
    metadata.as_ref().map_or_else(
        || jiff::Timestamp::now().as_nanosecond() as i64,
        created_nanos,
    )
}

impl ControllerService {
    pub async fn create_snapshot_object(
        &self,
        request: proto::CreateSnapshotRequest,
    ) -> Result<proto::Snapshot, Status> {
        let source = request.source_volume_id.as_str();
        if source.is_empty() {
            return Err(invalid("source_volume_id is required"));
        }
        if request.name.is_empty() {
            return Err(invalid("name is required"));
        }
        let class = handle_codec::parse_snapshot_class_parameters(&request.parameters)
            .map_err(|e| invalid(e.to_string()))?;
        let kind = class.kind;
        let name = volume_name(&request.name);
        let mut objects = Fetched::default();
        match kind {
            SnapshotRequestKind::Snapshot => read_into(self, &mut objects.snapshots, &name).await?,
            SnapshotRequestKind::Backup { .. } => {
                read_into(self, &mut objects.backups, &name).await?
            }
            SnapshotRequestKind::BackingImage { .. } => {
                read_into(self, &mut objects.backing_images, &name).await?
            }
        }
        if let Some(made_from) = objects.source_of(kind, &name)
            && made_from.as_deref() != Some(source)
        {
            return Err(Status::already_exists(format!(
                "snapshot {} exists of {}, not of volume {source}: a request with the same name must name the same volume",
                request.name,
                made_from.map_or("no volume".to_owned(), |v| format!("volume {v}"))
            )));
        }
        if is_volume_name(source) {
            read_into(self, &mut objects.volumes, source).await?;
        }
        if objects.volume(source).is_none() {
            return Err(Status::not_found(format!(
                "source_volume_id: volume {source} does not exist"
            )));
        }
        let labels = BTreeMap::from([(CREATED_BY_LABEL.to_owned(), "csi".to_owned())]);
        let outcome =
            resolve::check_dynamic(&objects, kind, source, &name, &self.namespace, labels);
        let handle = made_handle(kind, source, &name)?;
        let created = match &outcome {
            Outcome::Create(create) => {
                let metadata = self.create_object(create, Some(&request.name)).await?;
                created_nanos(&metadata)
            }
            Outcome::Failed(why) => {
                return Err(Status::internal(format!(
                    "{why} (kubectl describe it in namespace {}; delete the VolumeSnapshot to try again)",
                    self.namespace
                )));
            }
            Outcome::Ready { .. } | Outcome::InProgress(_) => object_created(&objects, &handle),
        };
        Ok(csi_snapshot(
            handle.encode(),
            source,
            &outcome,
            volume_bytes(&objects, source),
            created,
        )
        .expect("only failed outcomes have no snapshot"))
    }

    /// Creates `create` (an existing one of its name is fine: a retry after a lost answer),
    /// keeping the CSI name it was asked for under, if any.
    async fn create_object(
        &self,
        create: &Create,
        csi_name: Option<&str>,
    ) -> Result<kube::api::ObjectMeta, Status> {
        let params = PostParams::default();
        macro_rules! post {
            ($object:expr, $kind:ty) => {{
                let mut object = $object.clone();
                if let Some(csi_name) = csi_name {
                    remember_csi_name(&mut object.metadata, csi_name);
                }
                let api = self.api::<$kind>();
                match api.create(&params, &object).await {
                    Ok(created) => created.metadata,
                    Err(kube::Error::Api(status)) if status.code == 409 => object.metadata,
                    Err(error) => {
                        return Err(api_error(&format!("creating {}", create.describe()), error));
                    }
                }
            }};
        }
        let metadata = match create {
            Create::Snapshot(snapshot) => post!(snapshot, Snapshot),
            Create::Backup(backup) => post!(backup, Backup),
            Create::BackingImage(image) => post!(image, BackingImage),
        };
        tracing::info!(object = create.describe(), "CSI: snapshot object created");
        Ok(metadata)
    }

    pub async fn delete_snapshot_object(&self, id: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(invalid("snapshot_id is required"));
        }
        // An ID that is no handle was never ours: deleted already, as the spec answers.
        let Ok(handle) = handle_codec::decode(id) else {
            return Ok(());
        };
        let objects = self.fetch_for_handle(&handle).await?;
        let params = DeleteParams::default();
        // Only the object the handle names, and only when it belongs to the handle's volume.
        let deleted = match &handle {
            SnapshotHandle::Snapshot { volume, snapshot } => {
                match objects.snapshot(snapshot.as_str()) {
                    Some(s) if s.spec.volume == volume.as_str() => self
                        .api::<Snapshot>()
                        .delete(snapshot.as_str(), &params)
                        .await
                        .map(drop),
                    _ => Ok(()),
                }
            }
            SnapshotHandle::Backup { volume, backup } => match objects.backup(backup.as_str()) {
                Some(b) if b.spec.volume == volume.as_str() => self
                    .api::<Backup>()
                    .delete(backup.as_str(), &params)
                    .await
                    .map(drop),
                _ => Ok(()),
            },
            SnapshotHandle::BackingImage(image) => match objects.backing_image(image.name.as_str())
            {
                Some(_) => self
                    .api::<BackingImage>()
                    .delete(image.name.as_str(), &params)
                    .await
                    .map(drop),
                None => Ok(()),
            },
        };
        match deleted {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(api_error(&format!("deleting the object of {id}"), error)),
        }
        tracing::info!(snapshot = id, "CSI: snapshot deleted");
        Ok(())
    }

    pub async fn list_snapshot_objects(
        &self,
        request: proto::ListSnapshotsRequest,
    ) -> Result<proto::ListSnapshotsResponse, Status> {
        // A bad token is refused before anything is read.
        let start = starting_index(&request.starting_token)?;
        let mut entries = if !request.snapshot_id.is_empty() {
            self.snapshot_by_id(&request.snapshot_id)
                .await?
                .into_iter()
                .collect()
        } else {
            let volume = Some(request.source_volume_id.as_str()).filter(|v| !v.is_empty());
            self.all_snapshots(volume).await?
        };
        entries.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        let (entries, next_token) = page(entries, start, request.max_entries)?;
        Ok(proto::ListSnapshotsResponse {
            entries: entries
                .into_iter()
                .map(|snapshot| proto::list_snapshots_response::Entry {
                    snapshot: Some(snapshot),
                })
                .collect(),
            next_token,
        })
    }

    /// The snapshot of an ID (as the csi-snapshotter asks for a pre-provisioned content): none
    /// when the ID names nothing; an error saying why when it names something unusable.
    async fn snapshot_by_id(&self, id: &str) -> Result<Option<proto::Snapshot>, Status> {
        let Ok(handle) = handle_codec::decode(id) else {
            return Ok(None);
        };
        let objects = self.fetch_for_handle(&handle).await?;
        let labels = BTreeMap::from([(CREATED_BY_LABEL.to_owned(), "csi".to_owned())]);
        let outcome = resolve::check_handle(&objects, &handle, &self.namespace, labels);
        match &outcome {
            // A pre-provisioned `bi://` handle that says how to make its image (a download or
            // an export): the image is made on demand, as Longhorn does, and is in progress.
            Outcome::Create(create) if matches!(handle, SnapshotHandle::BackingImage(_)) => {
                self.create_object(create, None).await?;
            }
            _ if !objects.has_object_of(&handle) => return Ok(None),
            Outcome::Failed(why) => {
                return Err(Status::failed_precondition(format!("snapshot {id}: {why}")));
            }
            _ => {}
        }
        let volume = match &handle {
            SnapshotHandle::Snapshot { volume, .. } | SnapshotHandle::Backup { volume, .. } => {
                volume.as_str().to_owned()
            }
            SnapshotHandle::BackingImage(image) => objects
                .backing_image(image.name.as_str())
                .and_then(|i| exported_from(&i))
                .unwrap_or_default(),
        };
        Ok(csi_snapshot(
            id.to_owned(),
            &volume,
            &outcome,
            volume_bytes(&objects, &volume),
            object_created(&objects, &handle),
        ))
    }

    /// Every usable snapshot, backup and exported backing image this driver made (of `volume`
    /// only, if given). Not the snapshots backups and recurring jobs take for themselves: those
    /// are no VolumeSnapshot's, and deleting one would break what made it.
    async fn all_snapshots(&self, volume: Option<&str>) -> Result<Vec<proto::Snapshot>, Status> {
        let ours = format!("{CREATED_BY_LABEL}=csi");
        let ours = Some(ours.as_str());
        let objects = Fetched {
            volumes: list(&self.api::<Volume>(), None).await?,
            snapshots: list(&self.api::<Snapshot>(), ours).await?,
            backups: list(&self.api::<Backup>(), ours).await?,
            backing_images: list(&self.api::<BackingImage>(), ours).await?,
        };
        let mut handles = Vec::new();
        let kind_snapshot = SnapshotRequestKind::Snapshot;
        let kind_backup = SnapshotRequestKind::Backup {
            mode: handle_codec::BackupMode::Incremental,
        };
        for (name, snapshot) in &objects.snapshots {
            handles.push((kind_snapshot, snapshot.spec.volume.clone(), name.clone()));
        }
        for (name, backup) in &objects.backups {
            handles.push((kind_backup, backup.spec.volume.clone(), name.clone()));
        }
        for (name, image) in &objects.backing_images {
            if let Some(source) = exported_from(image) {
                let export_type = image
                    .spec
                    .source_parameters
                    .get(keys::EXPORT_TYPE)
                    .and_then(|t| ExportType::parse(t))
                    .unwrap_or(ExportType::Raw);
                handles.push((
                    SnapshotRequestKind::BackingImage { export_type },
                    source,
                    name.clone(),
                ));
            }
        }
        let mut snapshots = Vec::new();
        for (kind, source, name) in handles {
            if volume.is_some_and(|v| v != source) {
                continue;
            }
            // Objects whose names the codec refuses cannot be named by an ID; skip them.
            let Ok(handle) = made_handle(kind, &source, &name) else {
                continue;
            };
            let outcome =
                resolve::check_handle(&objects, &handle, &self.namespace, BTreeMap::new());
            snapshots.extend(csi_snapshot(
                handle.encode(),
                &source,
                &outcome,
                volume_bytes(&objects, &source),
                object_created(&objects, &handle),
            ));
        }
        Ok(snapshots)
    }
}

fn bad_token(token: &str) -> Status {
    Status::aborted(format!(
        "starting_token {token:?} is not one this driver gave: start again without it"
    ))
}

/// Where a page starting at `token` starts (an index; empty is the start).
pub fn starting_index(token: &str) -> Result<usize, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse::<usize>().map_err(|_| bad_token(token))
}

/// One page of `entries` from index `start`, at most `max_entries` (0: all), and the token of
/// the next page (empty after the last).
pub fn page<T>(
    entries: Vec<T>,
    start: usize,
    max_entries: i32,
) -> Result<(Vec<T>, String), Status> {
    if start > entries.len() {
        return Err(bad_token(&start.to_string()));
    }
    let Ok(max_entries) = usize::try_from(max_entries) else {
        return Err(invalid("max_entries must not be negative"));
    };
    let end = if max_entries == 0 {
        entries.len()
    } else {
        start.saturating_add(max_entries).min(entries.len())
    };
    let next = if end < entries.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((
        entries.into_iter().skip(start).take(end - start).collect(),
        next,
    ))
}
