//! The mirror of a store: BackupVolume and Backup objects for what exists remotely.
//!
//! [`plan`] is pure: from the remote listing and the objects it decides what to create, refresh
//! and remove. [`mirror`] does the I/O around it. Rules that keep data safe:
//! - The objects are listed BEFORE the store, so an object that says `Completed` had its
//!   backup written before the listing that is compared with it.
//! - An empty volume listing, a failed one, or an empty or failed listing of one volume's
//!   backups removes nothing of what it would have covered.
//! - A removed object is first annotated `bulwark.io/remote-gone: "true"`, then deleted, so
//!   its deletion never deletes remote data.
//! - Backups the agent manages (`status.ownerID`) or users created keep their status: the sync
//!   only creates objects for backups that have none and removes vanished ones.

use std::collections::{BTreeMap, BTreeSet};

use backupstore::Store;
use backupstore::format::{BackupConfig, VolumeConfig};
use backupstore::target::TargetUrl;
use crd_types::backup::BackupState;
use crd_types::common::{CompressionMethod, Time};
use crd_types::{Backup, BackupSpec, BackupTarget, BackupVolume, BackupVolumeSpec};
use futures::StreamExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::controllers::Context;
use crate::finalizers;
use crate::status::{self, managers};

/// Label on mirrored Backups: the store volume they belong to.
pub const VOLUME_LABEL: &str = "bulwark.io/backup-volume";
/// Set on an object before it is deleted because its remote data vanished: its deletion must
/// not touch the store.
pub const REMOTE_GONE: &str = "bulwark.io/remote-gone";
/// Set at creation on Backups the sync creates (value: the target): they describe a backup
/// that exists in the store, and the agent must never run them.
pub const MIRRORED_FROM: &str = "bulwark.io/mirrored-from";

/// Store requests a sync keeps in flight (metadata reads: small, latency-bound).
const STORE_CONCURRENCY: usize = 16;

/// One volume of the store and its backups (`None`: listing them failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteVolume {
    pub name: String,
    pub backups: Option<Vec<String>>,
}

/// A store name that cannot become an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub why: String,
}

/// What one sync does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// BackupVolume objects to create (store volume names).
    pub create_volumes: Vec<String>,
    /// Volumes whose BackupVolume status is written (created or already ours).
    pub refresh_volumes: Vec<String>,
    /// BackupVolume objects whose volume vanished.
    pub gone_volumes: Vec<String>,
    /// Backup objects to create: (volume, backup).
    pub create_backups: Vec<(String, String)>,
    /// Mirrored Backups not yet `Completed`, whose status is read again: (volume, backup).
    pub refresh_backups: Vec<(String, String)>,
    /// Backup objects whose remote backup vanished.
    pub gone_backups: Vec<String>,
    /// Backup objects marked remote-gone but not deleted (a crash between the two steps) whose
    /// backup is listed again: the mark goes, so deleting them deletes the backup again.
    pub unmark_backups: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// Whether `name` can be an object name (an RFC 1123 subdomain).
pub fn is_object_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.last()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
}

/// A store volume name usable as a Volume name (spec.volume holds at most 63 characters) and
/// as a label value.
fn is_volume_object_name(name: &str) -> bool {
    is_object_name(name) && name.len() <= 63
}

/// Whether the sync created `backup` for `target` and nobody else runs it.
pub fn is_mirrored(backup: &Backup, target: &str) -> bool {
    backup.annotations().get(MIRRORED_FROM).map(String::as_str) == Some(target)
        && backup.status.as_ref().is_none_or(|s| s.owner_id.is_none())
}

/// Whether `backup` is stored in `target` as far as its object says.
fn belongs(backup: &Backup, target: &str) -> bool {
    backup.annotations().get(MIRRORED_FROM).map(String::as_str) == Some(target)
        || backup
            .status
            .as_ref()
            .and_then(|s| s.backup_target_name.as_deref())
            == Some(target)
}

fn state(backup: &Backup) -> Option<BackupState> {
    backup.status.as_ref().and_then(|s| s.state)
}

/// Decide what a sync of `target` does, given the store's listing and every BackupVolume and
/// Backup object of the namespace (listed before the store).
pub fn plan(
    target: &str,
    remote: &[RemoteVolume],
    volumes: &[BackupVolume],
    backups: &[Backup],
) -> Plan {
    let mut plan = Plan::default();
    let volume_objects: BTreeMap<String, &BackupVolume> =
        volumes.iter().map(|v| (v.name_any(), v)).collect();
    let backup_objects: BTreeMap<String, &Backup> =
        backups.iter().map(|b| (b.name_any(), b)).collect();
    for rv in remote {
        if !is_volume_object_name(&rv.name) {
            plan.skipped.push(Skipped {
                name: rv.name.clone(),
                why: format!(
                    "store volume {:?} is not a valid object name (lower-case letters, digits, '-' and '.', at most 63 characters): its backups are not mirrored",
                    rv.name
                ),
            });
            continue;
        }
        match volume_objects.get(&rv.name) {
            None => {
                plan.create_volumes.push(rv.name.clone());
                plan.refresh_volumes.push(rv.name.clone());
            }
            Some(v) if v.metadata.deletion_timestamp.is_some() => {}
            Some(v) if v.spec.backup_target_name == target => {
                plan.refresh_volumes.push(rv.name.clone())
            }
            Some(v) => plan.skipped.push(Skipped {
                name: rv.name.clone(),
                why: format!(
                    "store volume {:?}: BackupVolume {:?} already mirrors target {:?}",
                    rv.name, rv.name, v.spec.backup_target_name
                ),
            }),
        }
        for name in rv.backups.iter().flatten() {
            if !is_object_name(name) {
                plan.skipped.push(Skipped {
                    name: name.clone(),
                    why: format!(
                        "backup {name:?} of volume {:?} is not a valid object name: not mirrored",
                        rv.name
                    ),
                });
                continue;
            }
            match backup_objects.get(name) {
                None => plan.create_backups.push((rv.name.clone(), name.clone())),
                Some(b) if b.spec.volume != rv.name => plan.skipped.push(Skipped {
                    name: name.clone(),
                    why: format!(
                        "backup {name:?} of volume {:?}: a Backup of that name exists for volume {:?}",
                        rv.name, b.spec.volume
                    ),
                }),
                Some(b)
                    if b.metadata.deletion_timestamp.is_none()
                        && b.annotations().contains_key(REMOTE_GONE) =>
                {
                    plan.unmark_backups.push(name.clone())
                }
                Some(b)
                    if is_mirrored(b, target)
                        && b.metadata.deletion_timestamp.is_none()
                        && state(b) != Some(BackupState::Completed) =>
                {
                    plan.refresh_backups.push((rv.name.clone(), name.clone()))
                }
                Some(_) => {}
            }
        }
    }
    // An empty listing proves nothing (an unmounted NFS export, a wrong prefix): no removals.
    if remote.is_empty() {
        return plan;
    }
    let listed: BTreeMap<&str, Option<&Vec<String>>> = remote
        .iter()
        .map(|r| (r.name.as_str(), r.backups.as_ref()))
        .collect();
    for v in volumes {
        if v.spec.backup_target_name == target
            && v.metadata.deletion_timestamp.is_none()
            && !listed.contains_key(v.spec.volume_name.as_str())
        {
            plan.gone_volumes.push(v.name_any());
        }
    }
    for b in backups {
        if b.metadata.deletion_timestamp.is_some() || !belongs(b, target) {
            continue;
        }
        // Backups the agent runs only count once they completed: before, the store may not
        // show them yet.
        if !is_mirrored(b, target) && state(b) != Some(BackupState::Completed) {
            continue;
        }
        let name = b.name_any();
        let gone = match listed.get(b.spec.volume.as_str()) {
            None => true,
            Some(None) => false,
            Some(Some(names)) => !names.is_empty() && !names.contains(&name),
        };
        if gone {
            plan.gone_backups.push(name);
        }
    }
    plan
}

/// Parse a store time (`2006-01-02T15:04:05Z`); empty or unreadable gives `None`.
fn store_time(text: &str) -> Option<Time> {
    text.parse::<jiff::Timestamp>().ok().map(Time)
}

fn compression(text: &str) -> Option<CompressionMethod> {
    match text {
        "none" => Some(CompressionMethod::None),
        "lz4" => Some(CompressionMethod::Lz4),
        "gzip" => Some(CompressionMethod::Gzip),
        _ => None,
    }
}

fn put<T: serde::Serialize>(status: &mut serde_json::Map<String, Value>, key: &str, value: T) {
    if let Ok(v) = serde_json::to_value(value)
        && !v.is_null()
    {
        status.insert(key.to_owned(), v);
    }
}

fn non_empty(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

/// The BackupVolume status (the fields this controller owns) of a store volume.
pub fn volume_status(
    config: &VolumeConfig,
    backup_count: Option<usize>,
    last: Option<&BackupConfig>,
    now: &Time,
) -> Value {
    let block_size = last.and_then(|l| l.block_size().ok());
    let mut s = serde_json::Map::new();
    put(&mut s, "size", config.size);
    put(
        &mut s,
        "labels",
        config.labels.as_ref().filter(|l| !l.is_empty()),
    );
    put(&mut s, "createdAt", store_time(&config.created_time));
    put(
        &mut s,
        "lastBackupName",
        non_empty(&config.last_backup_name),
    );
    put(&mut s, "lastBackupAt", store_time(&config.last_backup_at));
    put(&mut s, "backupCount", backup_count.map(|c| c as i64));
    put(
        &mut s,
        "dataStored",
        block_size.and_then(|b| config.block_count.checked_mul(b as i64)),
    );
    put(
        &mut s,
        "backingImageName",
        non_empty(&config.backing_image_name),
    );
    put(
        &mut s,
        "backingImageChecksum",
        non_empty(&config.backing_image_checksum),
    );
    put(
        &mut s,
        "compressionMethod",
        compression(&config.compression_method),
    );
    put(&mut s, "blockSize", block_size.map(|b| b as i64));
    put(&mut s, "lastSyncedAt", now);
    Value::Object(s)
}

/// The Backup status of a mirrored backup.
pub fn backup_status(
    target: &str,
    url: &TargetUrl,
    volume: Option<&VolumeConfig>,
    config: &BackupConfig,
) -> Value {
    let completed = !config.in_progress();
    let mut s = serde_json::Map::new();
    let state = if completed {
        BackupState::Completed
    } else {
        BackupState::InProgress
    };
    put(&mut s, "state", state);
    if completed {
        put(&mut s, "progress", 100);
    }
    put(
        &mut s,
        "url",
        url.backup_url(&config.name, &config.volume_name)
            .ok()
            .map(|u| u.to_string()),
    );
    put(&mut s, "snapshotName", non_empty(&config.snapshot_name));
    put(
        &mut s,
        "snapshotCreatedAt",
        store_time(&config.snapshot_created_at),
    );
    put(&mut s, "backupCreatedAt", store_time(&config.created_time));
    put(&mut s, "size", config.size);
    put(&mut s, "volumeSize", volume.map(|v| v.size));
    put(
        &mut s,
        "compressionMethod",
        compression(&config.compression_method),
    );
    put(
        &mut s,
        "blockSize",
        config.block_size().ok().map(|b| b as i64),
    );
    put(&mut s, "backupTargetName", target);
    Value::Object(s)
}

/// A new BackupVolume object for store volume `volume`.
pub fn volume_object(target: &str, volume: &str) -> BackupVolume {
    BackupVolume::new(
        volume,
        BackupVolumeSpec {
            backup_target_name: target.to_owned(),
            volume_name: volume.to_owned(),
            sync_requested_at: None,
        },
    )
}

/// A new mirrored Backup object; it carries the finalizer so that deleting it deletes the
/// remote backup, unless it is marked remote-gone.
pub fn backup_object(target: &str, volume: &str, name: &str, config: &BackupConfig) -> Backup {
    let mut backup = Backup::new(
        name,
        BackupSpec {
            volume: volume.to_owned(),
            snapshot_name: non_empty(&config.snapshot_name).map(str::to_owned),
            labels: config.labels.clone().unwrap_or_default(),
            backup_mode: None,
        },
    );
    backup.metadata.labels = Some([(VOLUME_LABEL.to_owned(), volume.to_owned())].into());
    backup.metadata.annotations = Some([(MIRRORED_FROM.to_owned(), target.to_owned())].into());
    backup.metadata.finalizers = Some(vec![finalizers::BACKUP.to_owned()]);
    backup
}

/// What a sync did, for the status message and the Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub volumes: usize,
    pub backups: usize,
    pub created_volumes: usize,
    pub created_backups: usize,
    pub removed_volumes: usize,
    pub removed_backups: usize,
    /// Store failures and skipped names (each one sentence).
    pub problems: Vec<String>,
}

impl Report {
    pub fn changed(&self) -> bool {
        self.created_volumes + self.created_backups + self.removed_volumes + self.removed_backups
            > 0
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} volumes and {} backups in the store; created {} BackupVolumes and {} Backups, removed {} BackupVolumes and {} Backups whose remote data vanished",
            self.volumes,
            self.backups,
            self.created_volumes,
            self.created_backups,
            self.removed_volumes,
            self.removed_backups
        );
        if !self.problems.is_empty() {
            text.push_str(&format!(
                "; {} problems: {}",
                self.problems.len(),
                self.problems.join("; ")
            ));
        }
        text
    }
}

/// Everything read from the store about one volume.
struct VolumeFacts {
    config: Option<VolumeConfig>,
    backups: Option<Vec<String>>,
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(managers::BACKUP_TARGET.to_owned()),
        ..PostParams::default()
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == code)
}

/// Ignore "not found" (the object went away meanwhile).
fn allow_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Mirror `volumes` (the store's listing) of `target` into objects. `volume_objects` and
/// `backup_objects` are every BackupVolume and Backup of the namespace, listed before the store.
/// API failures abort the sync (it is retried); store failures become problems in the report.
pub async fn mirror(
    ctx: &Context,
    target: &BackupTarget,
    url: &TargetUrl,
    store: &Store,
    volumes: Vec<String>,
    volume_objects: &[BackupVolume],
    backup_objects: &[Backup],
) -> Result<Report, kube::Error> {
    let target_name = target.name_any();
    let namespace = &ctx.config.common.namespace;
    let bv_api: Api<BackupVolume> = Api::namespaced(ctx.client.clone(), namespace);
    let backup_api: Api<Backup> = Api::namespaced(ctx.client.clone(), namespace);
    let mut report = Report {
        volumes: volumes.len(),
        ..Report::default()
    };

    // Read the store: each volume's config and backup names, a few volumes at once.
    // Owned names and store handles: the futures must not borrow from the closure's argument
    // (the controller's future has to be `Send` for every lifetime).
    let read = futures::stream::iter(volumes.clone())
        .map(|volume| {
            let store = store.clone();
            async move {
                let (config, names) = tokio::join!(
                    store.inspect_volume(&volume),
                    store.list_backup_names(&volume)
                );
                (volume, config, names)
            }
        })
        .buffered(STORE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut facts: BTreeMap<String, VolumeFacts> = BTreeMap::new();
    for (volume, config, names) in read {
        ctx.metrics.store_request("inspect", &config);
        ctx.metrics.store_request("list", &names);
        let config = config
            .map_err(|e| {
                report
                    .problems
                    .push(format!("cannot read volume {volume}: {e}"))
            })
            .ok();
        let names = names
            .map_err(|e| {
                report
                    .problems
                    .push(format!("cannot list the backups of volume {volume}: {e}"))
            })
            .ok();
        report.backups += names.as_ref().map_or(0, Vec::len);
        facts.insert(
            volume,
            VolumeFacts {
                config,
                backups: names,
            },
        );
    }
    let remote: Vec<RemoteVolume> = facts
        .iter()
        .map(|(name, f)| RemoteVolume {
            name: name.clone(),
            backups: f.backups.clone(),
        })
        .collect();
    let plan = plan(&target_name, &remote, volume_objects, backup_objects);
    for skipped in &plan.skipped {
        report.problems.push(skipped.why.clone());
    }

    // Backup metadata needed: new and unfinished mirrored backups, and each volume's last
    // backup (its block size sizes the data stored).
    let mut wanted: BTreeSet<(String, String)> = plan
        .create_backups
        .iter()
        .chain(&plan.refresh_backups)
        .cloned()
        .collect();
    for volume in &plan.refresh_volumes {
        if let Some(last) = facts
            .get(volume)
            .and_then(|f| f.config.as_ref())
            .and_then(|c| non_empty(&c.last_backup_name))
        {
            wanted.insert((volume.clone(), last.to_owned()));
        }
    }
    let read = futures::stream::iter(wanted)
        .map(|(volume, backup)| {
            let store = store.clone();
            async move {
                let config = store.inspect_backup(&volume, &backup).await;
                (volume, backup, config)
            }
        })
        .buffered(STORE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut configs: BTreeMap<(String, String), BackupConfig> = BTreeMap::new();
    for (volume, backup, config) in read {
        ctx.metrics.store_request("inspect", &config);
        match config {
            Ok(config) => {
                configs.insert((volume, backup), config);
            }
            Err(e) => report.problems.push(format!(
                "cannot read backup {backup} of volume {volume}: {e}"
            )),
        }
    }

    let now = status::now();
    for volume in &plan.create_volumes {
        match bv_api
            .create(&post_params(), &volume_object(&target_name, volume))
            .await
        {
            Ok(_) => report.created_volumes += 1,
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(e),
        }
    }
    for volume in &plan.refresh_volumes {
        let Some(f) = facts.get(volume) else { continue };
        let Some(config) = &f.config else { continue };
        let last = non_empty(&config.last_backup_name)
            .and_then(|last| configs.get(&(volume.clone(), last.to_owned())));
        let body = volume_status(config, f.backups.as_ref().map(Vec::len), last, &now);
        allow_missing(status::apply(&bv_api, volume, managers::BACKUP_TARGET, body).await)?;
    }
    for (volume, backup) in &plan.create_backups {
        let Some(config) = configs.get(&(volume.clone(), backup.clone())) else {
            continue;
        };
        match backup_api
            .create(
                &post_params(),
                &backup_object(&target_name, volume, backup, config),
            )
            .await
        {
            Ok(_) => report.created_backups += 1,
            // Someone created it meanwhile: theirs, not ours to describe.
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(e),
        }
        let volume_config = facts.get(volume).and_then(|f| f.config.as_ref());
        let body = backup_status(&target_name, url, volume_config, config);
        allow_missing(status::apply(&backup_api, backup, managers::BACKUP_TARGET, body).await)?;
    }
    for (volume, backup) in &plan.refresh_backups {
        let Some(config) = configs.get(&(volume.clone(), backup.clone())) else {
            continue;
        };
        let volume_config = facts.get(volume).and_then(|f| f.config.as_ref());
        let body = backup_status(&target_name, url, volume_config, config);
        allow_missing(status::apply(&backup_api, backup, managers::BACKUP_TARGET, body).await)?;
    }
    for name in &plan.unmark_backups {
        let unmark = json!({"metadata": {"annotations": {REMOTE_GONE: null}}});
        allow_missing(
            backup_api
                .patch(name, &PatchParams::default(), &Patch::Merge(&unmark))
                .await,
        )?;
    }
    for name in &plan.gone_backups {
        if remove_gone(&backup_api, name).await? {
            report.removed_backups += 1;
            if let Some(object) = backup_objects.iter().find(|b| b.name_any() == *name) {
                ctx.events
                    .normal(
                        object,
                        "RemoteGone",
                        format!(
                            "backup {name} of volume {} no longer exists in target {target_name}: deleting this object without touching the store",
                            object.spec.volume
                        ),
                    )
                    .await;
            }
        }
    }
    for name in &plan.gone_volumes {
        if remove_gone(&bv_api, name).await? {
            report.removed_volumes += 1;
        }
    }
    Ok(report)
}

/// Mark `name` remote-gone, then delete it. `false` when it was already gone.
async fn remove_gone<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mark = json!({"metadata": {"annotations": {REMOTE_GONE: "true"}}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&mark))
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => return Ok(false),
        Err(e) => return Err(e),
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crd_types::BackupStatus;

    const T: &str = "main";

    fn bv(name: &str, target: &str) -> BackupVolume {
        volume_object(target, name)
    }

    fn mirrored(volume: &str, name: &str, state: Option<BackupState>) -> Backup {
        let mut b = backup_object(T, volume, name, &BackupConfig::default());
        b.status = Some(BackupStatus {
            state,
            backup_target_name: Some(T.into()),
            ..BackupStatus::default()
        });
        b
    }

    fn agent(volume: &str, name: &str, state: BackupState) -> Backup {
        let mut b = Backup::new(
            name,
            BackupSpec {
                volume: volume.into(),
                snapshot_name: None,
                labels: BTreeMap::new(),
                backup_mode: None,
            },
        );
        b.status = Some(BackupStatus {
            state: Some(state),
            owner_id: Some("node-1".into()),
            backup_target_name: Some(T.into()),
            ..BackupStatus::default()
        });
        b
    }

    fn remote(name: &str, backups: Option<&[&str]>) -> RemoteVolume {
        RemoteVolume {
            name: name.into(),
            backups: backups.map(|b| b.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn new_remote_volumes_and_backups_get_objects() {
        let p = plan(T, &[remote("vol-a", Some(&["b-1", "b-2"]))], &[], &[]);
        assert_eq!(p.create_volumes, ["vol-a"]);
        assert_eq!(p.refresh_volumes, ["vol-a"]);
        assert_eq!(
            p.create_backups,
            pairs(&[("vol-a", "b-1"), ("vol-a", "b-2")])
        );
        assert!(p.gone_backups.is_empty() && p.gone_volumes.is_empty());
    }

    #[test]
    fn existing_objects_are_kept_and_unfinished_mirrors_refreshed() {
        let p = plan(
            T,
            &[remote("vol-a", Some(&["b-1", "b-2", "b-3"]))],
            &[bv("vol-a", T)],
            &[
                mirrored("vol-a", "b-1", Some(BackupState::Completed)),
                mirrored("vol-a", "b-2", Some(BackupState::InProgress)),
                agent("vol-a", "b-3", BackupState::InProgress),
            ],
        );
        assert!(p.create_volumes.is_empty());
        assert_eq!(p.refresh_volumes, ["vol-a"]);
        assert!(p.create_backups.is_empty());
        // The agent's backup keeps its status; only the mirror is read again.
        assert_eq!(p.refresh_backups, pairs(&[("vol-a", "b-2")]));
        assert!(p.gone_backups.is_empty());
    }

    #[test]
    fn vanished_backups_and_volumes_are_removed() {
        let p = plan(
            T,
            &[remote("vol-a", Some(&["b-1"]))],
            &[bv("vol-a", T), bv("vol-gone", T), bv("vol-other", "other")],
            &[
                mirrored("vol-a", "b-1", Some(BackupState::Completed)),
                mirrored("vol-a", "b-old", Some(BackupState::Completed)),
                agent("vol-a", "b-agent-done", BackupState::Completed),
                // Not completed yet: the store may not show it.
                agent("vol-a", "b-agent-running", BackupState::InProgress),
                mirrored("vol-gone", "b-x", Some(BackupState::Completed)),
            ],
        );
        assert_eq!(p.gone_volumes, ["vol-gone"]);
        assert_eq!(p.gone_backups, ["b-old", "b-agent-done", "b-x"]);
    }

    #[test]
    fn empty_or_failed_listings_remove_nothing() {
        let objects = [
            mirrored("vol-a", "b-1", Some(BackupState::Completed)),
            mirrored("vol-b", "b-2", Some(BackupState::Completed)),
        ];
        let volumes = [bv("vol-a", T), bv("vol-b", T), bv("vol-c", T)];
        let p = plan(T, &[], &volumes, &objects);
        assert_eq!(p, Plan::default());
        // vol-a's listing failed, vol-b's is empty: none of their backups go; vol-c vanished.
        let p = plan(
            T,
            &[remote("vol-a", None), remote("vol-b", Some(&[]))],
            &volumes,
            &objects,
        );
        assert!(p.gone_backups.is_empty(), "{p:?}");
        assert_eq!(p.gone_volumes, ["vol-c"]);
    }

    #[test]
    fn other_targets_and_users_objects_are_left_alone() {
        let mut users = agent("vol-a", "b-user", BackupState::Completed);
        users.status = None;
        let mut other = mirrored("vol-a", "b-other", Some(BackupState::Completed));
        other.metadata.annotations = Some([(MIRRORED_FROM.to_owned(), "other".into())].into());
        other.status.as_mut().expect("status").backup_target_name = Some("other".into());
        let mut deleting = mirrored("vol-a", "b-deleting", Some(BackupState::Completed));
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let p = plan(
            T,
            &[remote("vol-a", Some(&["b-1"]))],
            &[bv("vol-a", T)],
            &[users, other, deleting],
        );
        assert!(p.gone_backups.is_empty(), "{p:?}");
    }

    #[test]
    fn names_that_cannot_be_objects_are_skipped() {
        let p = plan(
            T,
            &[
                remote("Vol_Upper", Some(&["b-1"])),
                remote("vol-a", Some(&["Backup_X", "b-2"])),
            ],
            &[bv("vol-b", "other")],
            &[agent("vol-z", "b-2", BackupState::Completed)],
        );
        assert_eq!(p.create_volumes, ["vol-a"]);
        assert!(p.create_backups.is_empty());
        let skipped: Vec<&str> = p.skipped.iter().map(|s| s.name.as_str()).collect();
        // b-2's name is taken by a Backup of another volume.
        assert_eq!(skipped, ["Vol_Upper", "Backup_X", "b-2"]);
        // A volume of another target with the same name.
        let p = plan(
            T,
            &[remote("vol-b", Some(&[]))],
            &[bv("vol-b", "other")],
            &[],
        );
        assert!(p.create_volumes.is_empty() && p.refresh_volumes.is_empty());
        assert_eq!(p.skipped.len(), 1);
    }

    #[test]
    fn a_remote_gone_mark_is_lifted_when_the_backup_is_listed_again() {
        let mut marked = mirrored("vol-a", "b-1", Some(BackupState::Completed));
        marked
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(REMOTE_GONE.into(), "true".into());
        let p = plan(
            T,
            &[remote("vol-a", Some(&["b-1"]))],
            &[bv("vol-a", T)],
            &[marked.clone()],
        );
        assert_eq!(p.unmark_backups, ["b-1"]);
        assert!(p.gone_backups.is_empty());
        // Still gone: deleted again (the mark stays).
        let p = plan(
            T,
            &[remote("vol-a", Some(&["b-2"]))],
            &[bv("vol-a", T)],
            &[marked],
        );
        assert!(p.unmark_backups.is_empty());
        assert_eq!(p.gone_backups, ["b-1"]);
    }

    #[test]
    fn object_names() {
        assert!(is_object_name("backup-0123456789abcdef"));
        assert!(is_object_name("a.b-c"));
        assert!(!is_object_name("A"));
        assert!(!is_object_name("a_b"));
        assert!(!is_object_name("-a"));
        assert!(!is_object_name(""));
    }

    #[test]
    fn statuses_from_store_metadata() {
        let volume = VolumeConfig {
            name: "vol-a".into(),
            size: 4 << 20,
            created_time: "2026-01-02T03:04:05Z".into(),
            last_backup_name: "b-1".into(),
            last_backup_at: "2026-01-03T00:00:00Z".into(),
            block_count: 3,
            compression_method: "lz4".into(),
            ..VolumeConfig::default()
        };
        let backup = BackupConfig {
            name: "b-1".into(),
            volume_name: "vol-a".into(),
            snapshot_name: "snap-1".into(),
            snapshot_created_at: "2026-01-02T23:59:00Z".into(),
            created_time: "2026-01-03T00:00:00Z".into(),
            size: 2 << 20,
            compression_method: "lz4".into(),
            ..BackupConfig::default()
        };
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            volume_status(&volume, Some(1), Some(&backup), &now),
            json!({
                "size": 4194304, "createdAt": "2026-01-02T03:04:05Z", "lastBackupName": "b-1",
                "lastBackupAt": "2026-01-03T00:00:00Z", "backupCount": 1,
                "dataStored": 6291456, "compressionMethod": "lz4", "blockSize": 2097152,
                "lastSyncedAt": "1970-01-01T00:00:00Z"
            })
        );
        let url = TargetUrl::parse("s3://bucket@us-east-1/backups/").expect("url");
        assert_eq!(
            backup_status("main", &url, Some(&volume), &backup),
            json!({
                "state": "Completed", "progress": 100,
                "url": "s3://bucket@us-east-1/backups/?backup=b-1&volume=vol-a",
                "snapshotName": "snap-1", "snapshotCreatedAt": "2026-01-02T23:59:00Z",
                "backupCreatedAt": "2026-01-03T00:00:00Z", "size": 2097152,
                "volumeSize": 4194304, "compressionMethod": "lz4", "blockSize": 2097152,
                "backupTargetName": "main"
            })
        );
        let running = BackupConfig::placeholder("b-2", "vol-a", "lz4");
        let status = backup_status("main", &url, None, &running);
        assert_eq!(status["state"], "InProgress");
        assert!(status.get("backupCreatedAt").is_none() && status.get("progress").is_none());
    }
}
