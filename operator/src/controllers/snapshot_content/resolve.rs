//! The pure part: what a snapshot handle points at, whether that is usable, what a dynamic
//! content should create, and which Volume spec fields a handle maps to. No I/O: every function
//! reads our objects through [`Objects`] (the watch caches in production, plain lists in tests).

use std::collections::BTreeMap;
use std::sync::Arc;

use crd_types::backing_image::{BackingImageSourceType, BackingImageState};
use crd_types::backup::BackupState;
use crd_types::common::{BackupMode as CrdBackupMode, Time};
use crd_types::{
    BackingImage, BackingImageSpec, Backup, BackupSpec, BackupVolume, Snapshot, SnapshotSpec,
    Volume,
};
use handle_codec::{
    BackingImageHandle, BackingImageSource, BackupMode, ExportType, Name, ObjectName,
    SnapshotHandle, SnapshotRequestKind, SourceType, keys,
};
use kube::ResourceExt;

use super::types::VolumeSnapshotContent;

/// Label on the objects a dynamic content created (and on images created on demand for one).
pub const CONTENT_LABEL: &str = "bulwark.io/snapshot-content";

/// Our objects, by name, in the operator's namespace.
pub trait Objects {
    fn volume(&self, name: &str) -> Option<Arc<Volume>>;
    fn snapshot(&self, name: &str) -> Option<Arc<Snapshot>>;
    fn backup(&self, name: &str) -> Option<Arc<Backup>>;
    /// The BackupVolumes (one per target) that mirror store volume `volume`.
    fn backup_volumes_of(&self, volume: &str) -> Vec<Arc<BackupVolume>>;
    fn backing_image(&self, name: &str) -> Option<Arc<BackingImage>>;
}

/// One of our objects to create for a content.
// Held boxed in `Outcome::Create`, so the variants' sizes cost nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Create {
    Snapshot(Snapshot),
    Backup(Backup),
    BackingImage(BackingImage),
}

impl Create {
    pub fn describe(&self) -> String {
        match self {
            Create::Snapshot(s) => format!("Snapshot {}", s.name_any()),
            Create::Backup(b) => format!("Backup {}", b.name_any()),
            Create::BackingImage(i) => format!("BackingImage {}", i.name_any()),
        }
    }
}

/// Where the thing a handle names stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Usable: the content is ready to use.
    Ready {
        /// Bytes a volume restored from it needs.
        restore_size: Option<i64>,
        /// Unix nanoseconds.
        creation_time: Option<i64>,
    },
    /// Being made; the message says by whom and what is missing.
    InProgress(String),
    /// Wrong or failed; the message says what is wrong and how to fix it.
    Failed(String),
    /// Missing but creatable: create it, then it is in progress.
    Create(Box<Create>),
}

/// Unix nanoseconds, as the CSI API (and the content's `status.creationTime`) wants them.
pub fn unix_nanos(time: &Time) -> Option<i64> {
    i64::try_from(time.0.as_nanosecond()).ok()
}

fn volume_size(objects: &impl Objects, volume: &str) -> Option<i64> {
    objects
        .volume(volume)
        .and_then(|v| v.spec.size_bytes())
        .and_then(|b| i64::try_from(b).ok())
}

/// `snap://<volume>/<snapshot>`: an existing, ready Snapshot of that volume.
pub fn check_snapshot(objects: &impl Objects, volume: &str, snapshot: &str) -> Outcome {
    let Some(found) = objects.snapshot(snapshot) else {
        return Outcome::Failed(format!(
            "Snapshot {snapshot} of volume {volume} does not exist: check the snapshot name in the handle"
        ));
    };
    if found.spec.volume != volume {
        return Outcome::Failed(format!(
            "Snapshot {snapshot} belongs to volume {}, not to volume {volume}: fix the volume name in the handle",
            found.spec.volume
        ));
    }
    let status = found.status.clone().unwrap_or_default();
    if let Some(error) = status.error.filter(|e| !e.is_empty()) {
        return Outcome::Failed(format!("Snapshot {snapshot} failed: {error}"));
    }
    if status.ready_to_use != Some(true) {
        return Outcome::InProgress(format!(
            "Snapshot {snapshot} of volume {volume} is not ready to use yet (status.readyToUse is not true)"
        ));
    }
    Outcome::Ready {
        // Never the snapshot's own (allocated) size: a volume restored from it needs the
        // whole volume size, and a smaller restoreSize would allow too small a volume.
        restore_size: status.restore_size.or_else(|| volume_size(objects, volume)),
        creation_time: status.creation_time.as_ref().and_then(unix_nanos),
    }
}

/// `bak://<volume>/<backup>`: a Completed Backup of that volume, as the BackupVolumes mirror it.
pub fn check_backup(objects: &impl Objects, volume: &str, backup: &str) -> Outcome {
    let Some(found) = objects.backup(backup) else {
        if objects.backup_volumes_of(volume).is_empty() {
            return Outcome::Failed(format!(
                "no backup target holds backups of volume {volume} (no BackupVolume for it): check the volume name in the handle, or wait for the target's next sync"
            ));
        }
        return Outcome::Failed(format!(
            "the backups of volume {volume} include no backup {backup} (no Backup object): check the backup name in the handle, or wait for the target's next sync"
        ));
    };
    if found.spec.volume != volume {
        return Outcome::Failed(format!(
            "Backup {backup} belongs to volume {}, not to volume {volume}: fix the volume name in the handle",
            found.spec.volume
        ));
    }
    let status = found.status.clone().unwrap_or_default();
    match status.state {
        Some(BackupState::Completed) => Outcome::Ready {
            restore_size: status.volume_size.or_else(|| volume_size(objects, volume)),
            creation_time: status
                .backup_created_at
                .as_ref()
                .or(found.metadata.creation_timestamp.as_ref())
                .and_then(unix_nanos),
        },
        Some(BackupState::Error) => Outcome::Failed(format!(
            "Backup {backup} of volume {volume} failed: {}",
            status.error.as_deref().unwrap_or("no error message")
        )),
        state => Outcome::InProgress(format!(
            "Backup {backup} of volume {volume} is not completed yet (state {})",
            state.map_or("unset".to_owned(), |s| format!("{s:?}"))
        )),
    }
}

fn crd_source_type(source: SourceType) -> BackingImageSourceType {
    match source {
        SourceType::Download => BackingImageSourceType::Download,
        SourceType::ExportFromVolume => BackingImageSourceType::ExportFromVolume,
        SourceType::Upload => BackingImageSourceType::Upload,
        SourceType::Restore => BackingImageSourceType::Restore,
        SourceType::Clone => BackingImageSourceType::Clone,
    }
}

fn source_type_name(source: BackingImageSourceType) -> &'static str {
    match source {
        BackingImageSourceType::Download => "download",
        BackingImageSourceType::ExportFromVolume => "export-from-volume",
        BackingImageSourceType::Upload => "upload",
        BackingImageSourceType::Restore => "restore",
        BackingImageSourceType::Clone => "clone",
    }
}

/// A source parameter as it counts for comparison: empty is absent, and an absent
/// `export-type` is `raw` (both sides default it the same way).
fn normalised(key: &str, value: Option<&str>) -> Option<String> {
    match value.filter(|v| !v.is_empty()) {
        None if key == keys::EXPORT_TYPE => Some(ExportType::Raw.as_str().to_owned()),
        other => other.map(str::to_owned),
    }
}

/// Whether an existing BackingImage is the one the handle describes: same source type, same
/// source parameters, same checksum (when the handle gives one). `Err` says what differs.
pub fn match_backing_image(
    handle: &BackingImageHandle,
    image: &BackingImage,
) -> Result<(), String> {
    let name = handle.name.as_str();
    let wanted = handle.source.source_type();
    if image.spec.source_type != crd_source_type(wanted) {
        return Err(format!(
            "BackingImage {name} has source type {}, but the handle says {wanted}: fix backingImageDataSourceType or the image name",
            source_type_name(image.spec.source_type)
        ));
    }
    let handle_params: BTreeMap<&str, String> = handle.source.parameters().into_iter().collect();
    for key in wanted.parameter_keys() {
        let ours = normalised(key, handle_params.get(key).map(String::as_str));
        let theirs = normalised(
            key,
            image.spec.source_parameters.get(*key).map(String::as_str),
        );
        if ours != theirs {
            return Err(format!(
                "BackingImage {name} has {key} {}, but the handle says {}: fix the handle or the image name",
                theirs.as_deref().unwrap_or("(unset)"),
                ours.as_deref().unwrap_or("(unset)")
            ));
        }
    }
    if let Some(expected) = &handle.checksum {
        let known = image
            .status
            .as_ref()
            .and_then(|s| s.checksum.as_deref())
            .or(image.spec.checksum.as_deref());
        match known {
            Some(actual) if actual != expected.as_str() => {
                return Err(format!(
                    "checksum mismatch: the handle's backingImageChecksum is {}, but BackingImage {name} has checksum {actual}",
                    expected.as_str()
                ));
            }
            None if image_state(image) == Some(BackingImageState::Ready) => {
                return Err(format!(
                    "BackingImage {name} is ready but reports no checksum, so the handle's backingImageChecksum cannot be verified"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn image_state(image: &BackingImage) -> Option<BackingImageState> {
    image.status.as_ref().and_then(|s| s.state)
}

/// The BackingImage a `download` or `export-from-volume` handle describes, to create on demand;
/// `None` for source types that cannot be made from a handle alone.
pub fn backing_image_from_handle(
    handle: &BackingImageHandle,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> Option<BackingImage> {
    let source_type = handle.source.source_type();
    if !matches!(
        source_type,
        SourceType::Download | SourceType::ExportFromVolume
    ) {
        return None;
    }
    let mut image = BackingImage::new(
        handle.name.as_str(),
        BackingImageSpec {
            source_type: crd_source_type(source_type),
            source_parameters: handle
                .source
                .parameters()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            checksum: handle.checksum.as_ref().map(|c| c.as_str().to_owned()),
        },
    );
    image.metadata.namespace = Some(namespace.to_owned());
    image.metadata.labels = (!labels.is_empty()).then_some(labels);
    Some(image)
}

/// `bi://backing?...`: an existing matching BackingImage, or one to create on demand.
pub fn check_backing_image(
    objects: &impl Objects,
    handle: &BackingImageHandle,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> Outcome {
    let name = handle.name.as_str();
    let Some(image) = objects.backing_image(name) else {
        return match backing_image_from_handle(handle, namespace, labels) {
            Some(image) => Outcome::Create(Box::new(Create::BackingImage(image))),
            None => Outcome::Failed(format!(
                "BackingImage {name} does not exist, and a {} handle cannot create it: create the BackingImage first (only download and export-from-volume handles create images on demand)",
                handle.source.source_type()
            )),
        };
    };
    if let Err(why) = match_backing_image(handle, &image) {
        return Outcome::Failed(why);
    }
    backing_image_outcome(&image)
}

fn backing_image_outcome(image: &BackingImage) -> Outcome {
    let name = image.name_any();
    let status = image.status.clone().unwrap_or_default();
    match status.state {
        Some(BackingImageState::Ready) => Outcome::Ready {
            restore_size: status.size,
            creation_time: status
                .ready_at
                .as_ref()
                .or(image.metadata.creation_timestamp.as_ref())
                .and_then(unix_nanos),
        },
        Some(BackingImageState::Failed) => Outcome::Failed(format!(
            "BackingImage {name} failed: {}",
            status.message.as_deref().unwrap_or("no message")
        )),
        state => Outcome::InProgress(format!(
            "BackingImage {name} is not ready yet (state {})",
            state.map_or("unset".to_owned(), |s| format!("{s:?}"))
        )),
    }
}

/// A pre-provisioned handle (`spec.source.snapshotHandle`), decoded and checked.
pub fn check_handle(
    objects: &impl Objects,
    handle: &SnapshotHandle,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> Outcome {
    match handle {
        SnapshotHandle::Snapshot { volume, snapshot } => {
            check_snapshot(objects, volume.as_str(), snapshot.as_str())
        }
        SnapshotHandle::Backup { volume, backup } => {
            check_backup(objects, volume.as_str(), backup.as_str())
        }
        SnapshotHandle::BackingImage(image) => {
            check_backing_image(objects, image, namespace, labels)
        }
    }
}

/// The name of the object a dynamic content creates: from the bound VolumeSnapshot's UID (as
/// the CSI snapshotter names snapshots), else the content's own UID, so that a restart finds
/// the same object again.
pub fn dynamic_name(kind: SnapshotRequestKind, content: &VolumeSnapshotContent) -> Option<String> {
    let id = content
        .spec
        .volume_snapshot_ref
        .uid
        .as_deref()
        .or(content.metadata.uid.as_deref())
        .filter(|id| !id.is_empty())?;
    let prefix = match kind {
        SnapshotRequestKind::Snapshot => "snapshot",
        SnapshotRequestKind::Backup { .. } => "backup",
        SnapshotRequestKind::BackingImage { .. } => "bi",
    };
    let name = format!("{prefix}-{}", id.to_ascii_lowercase());
    let valid = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    valid.then_some(name)
}

/// Every kind a dynamic content can create (for deletion, when its class is unknown).
pub const DYNAMIC_KINDS: [SnapshotRequestKind; 3] = [
    SnapshotRequestKind::Snapshot,
    SnapshotRequestKind::Backup {
        mode: BackupMode::Incremental,
    },
    SnapshotRequestKind::BackingImage {
        export_type: ExportType::Raw,
    },
];

/// What a dynamic content of class kind `kind` creates for volume `volume`, named `name`.
pub fn dynamic_object(
    kind: SnapshotRequestKind,
    volume: &str,
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> Create {
    let labels_opt = (!labels.is_empty()).then(|| labels.clone());
    match kind {
        SnapshotRequestKind::Snapshot => {
            let mut snapshot = Snapshot::new(
                name,
                SnapshotSpec {
                    volume: volume.to_owned(),
                    labels: BTreeMap::new(),
                },
            );
            snapshot.metadata.namespace = Some(namespace.to_owned());
            snapshot.metadata.labels = labels_opt;
            Create::Snapshot(snapshot)
        }
        SnapshotRequestKind::Backup { mode } => {
            let mut backup = Backup::new(
                name,
                BackupSpec {
                    volume: volume.to_owned(),
                    snapshot_name: None,
                    labels: BTreeMap::new(),
                    backup_mode: Some(match mode {
                        BackupMode::Full => CrdBackupMode::Full,
                        BackupMode::Incremental => CrdBackupMode::Incremental,
                    }),
                },
            );
            backup.metadata.namespace = Some(namespace.to_owned());
            backup.metadata.labels = labels_opt;
            Create::Backup(backup)
        }
        SnapshotRequestKind::BackingImage { export_type } => {
            let mut image = BackingImage::new(
                name,
                BackingImageSpec {
                    source_type: BackingImageSourceType::ExportFromVolume,
                    source_parameters: BTreeMap::from([
                        (
                            keys::EXPORT_TYPE.to_owned(),
                            export_type.as_str().to_owned(),
                        ),
                        (keys::VOLUME_NAME.to_owned(), volume.to_owned()),
                    ]),
                    checksum: None,
                },
            );
            image.metadata.namespace = Some(namespace.to_owned());
            image.metadata.labels = labels_opt;
            Create::BackingImage(image)
        }
    }
}

/// The handle a dynamic content publishes once its object is ready (`Err`: a name the codec
/// refuses, which our own names never are).
pub fn dynamic_handle(
    kind: SnapshotRequestKind,
    volume: &str,
    name: &str,
    checksum: Option<&str>,
) -> Result<SnapshotHandle, String> {
    let bad = |e: handle_codec::NameError| format!("cannot encode a handle for {name}: {e}");
    let volume_name = Name::new(volume).map_err(bad)?;
    Ok(match kind {
        SnapshotRequestKind::Snapshot => SnapshotHandle::Snapshot {
            volume: volume_name,
            snapshot: Name::new(name).map_err(bad)?,
        },
        SnapshotRequestKind::Backup { .. } => SnapshotHandle::Backup {
            volume: volume_name,
            backup: Name::new(name).map_err(bad)?,
        },
        SnapshotRequestKind::BackingImage { export_type } => {
            let mut image = BackingImageHandle::new(
                ObjectName::new(name).map_err(bad)?,
                BackingImageSource::ExportFromVolume {
                    volume_name,
                    export_type,
                },
            );
            // The checksum the export recorded, so that whoever restores from the handle
            // verifies the image it gets.
            image.checksum = checksum.and_then(|c| handle_codec::Sha512Checksum::new(c).ok());
            SnapshotHandle::BackingImage(image)
        }
    })
}

/// A dynamic content's object: ready, in progress, failed, or still to create.
pub fn check_dynamic(
    objects: &impl Objects,
    kind: SnapshotRequestKind,
    volume: &str,
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
) -> Outcome {
    let exists = match kind {
        SnapshotRequestKind::Snapshot => objects.snapshot(name).is_some(),
        SnapshotRequestKind::Backup { .. } => objects.backup(name).is_some(),
        SnapshotRequestKind::BackingImage { .. } => objects.backing_image(name).is_some(),
    };
    if !exists {
        if objects.volume(volume).is_none() {
            return Outcome::Failed(format!(
                "spec.source.volumeHandle names volume {volume}, which does not exist in namespace {namespace}"
            ));
        }
        return Outcome::Create(Box::new(dynamic_object(
            kind, volume, name, namespace, labels,
        )));
    }
    match kind {
        SnapshotRequestKind::Snapshot => check_snapshot(objects, volume, name),
        SnapshotRequestKind::Backup { .. } => check_backup(objects, volume, name),
        SnapshotRequestKind::BackingImage { .. } => match objects.backing_image(name) {
            Some(image) => backing_image_outcome(&image),
            None => Outcome::InProgress(format!("BackingImage {name} is being created")),
        },
    }
}

/// The Volume spec fields that make a volume start from a handle's data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeSource {
    /// `spec.dataSource` (`snap://<volume>/<snapshot>`: a clone of the snapshot).
    pub data_source: Option<String>,
    /// `spec.fromBackup`: the Backup's `status.url`.
    pub from_backup: Option<String>,
    /// `spec.backingImage`: the image's name.
    pub backing_image: Option<String>,
}

/// A [`VolumeSource`] and the BackingImage to create first, when the handle makes one on demand.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumePlan {
    pub source: VolumeSource,
    pub create_backing_image: Option<BackingImage>,
}

/// Maps a handle to the Volume spec fields (the volume agent and this controller use it):
/// `snap://` → `dataSource`, `bak://` → `fromBackup` (the Completed Backup's URL), `bi://` →
/// `backingImage` (an existing matching image, or one to create on demand). `Err` says why the
/// handle cannot be used.
pub fn volume_source(
    objects: &impl Objects,
    handle: &SnapshotHandle,
    namespace: &str,
) -> Result<VolumePlan, String> {
    let plan = |source| VolumePlan {
        source,
        create_backing_image: None,
    };
    match handle {
        SnapshotHandle::Snapshot { .. } => Ok(plan(VolumeSource {
            data_source: Some(handle.encode()),
            ..VolumeSource::default()
        })),
        SnapshotHandle::Backup { volume, backup } => {
            match check_backup(objects, volume.as_str(), backup.as_str()) {
                Outcome::Ready { .. } => {}
                Outcome::InProgress(why) | Outcome::Failed(why) => return Err(why),
                Outcome::Create(_) => return Err(format!("backup {backup} does not exist")),
            }
            let url = objects
                .backup(backup.as_str())
                .and_then(|b| b.status.as_ref().and_then(|s| s.url.clone()))
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    format!("Backup {backup} is Completed but has no status.url to restore from")
                })?;
            Ok(plan(VolumeSource {
                from_backup: Some(url),
                ..VolumeSource::default()
            }))
        }
        SnapshotHandle::BackingImage(image) => {
            let source = VolumeSource {
                backing_image: Some(image.name.as_str().to_owned()),
                ..VolumeSource::default()
            };
            match objects.backing_image(image.name.as_str()) {
                Some(existing) => {
                    match_backing_image(image, &existing)?;
                    if image_state(&existing) == Some(BackingImageState::Failed) {
                        return Err(format!(
                            "BackingImage {} failed: {}",
                            image.name,
                            existing
                                .status
                                .as_ref()
                                .and_then(|s| s.message.as_deref())
                                .unwrap_or("no message")
                        ));
                    }
                    Ok(plan(source))
                }
                None => match backing_image_from_handle(image, namespace, BTreeMap::new()) {
                    Some(create) => Ok(VolumePlan {
                        source,
                        create_backing_image: Some(create),
                    }),
                    None => Err(format!(
                        "BackingImage {} does not exist, and a {} handle cannot create it: create the BackingImage first",
                        image.name,
                        image.source.source_type()
                    )),
                },
            }
        }
    }
}
