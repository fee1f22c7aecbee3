//! What to do with one Backup, decided from what was read (pure), and the status bodies the
//! agent applies (pure). No I/O here: table tests cover every branch.

use backupstore::Compression;
use crd_types::BackupTarget;
use crd_types::backup::{Backup, BackupState};
use crd_types::common::{BackupMode, CompressionMethod, Condition, Time};
use crd_types::volume::{Volume, VolumeState};
use kube::ResourceExt;
use serde_json::{Value, json};

/// Condition type the agent owns on Backups.
pub const COMPLETED: &str = "Completed";
/// Label put on Snapshot objects the agent creates for a Backup (value: the Backup's name).
pub const BACKUP_LABEL: &str = "bulwark.io/backup";
/// Condition message of a backup re-run because the agent restarted during it.
pub const RESTARTED: &str = "restarted after agent restart";
/// Engine snapshot names are at most this long.
const MAX_SNAPSHOT_NAME: usize = 63;

/// What this process knows about a Backup beyond its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Not claimed by this process (maybe by an earlier run of the agent).
    Unknown,
    /// Claimed by this process; its last attempt stopped (an API error) and may be retried.
    Claimed,
    /// Running in this process now.
    Running,
}

/// What was read for one Backup.
pub struct Observed<'a> {
    pub backup: &'a Backup,
    pub volume: Option<&'a Volume>,
    /// The BackupTarget named by [`target_name`], if it exists.
    pub target: Option<&'a BackupTarget>,
    pub node: &'a str,
    pub local: Local,
}

/// A failure the user must fix: state Error, condition `Completed`=False, a warning Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The condition's reason and the Event's reason.
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// How to run a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Engine snapshot (and Snapshot object) to back up.
    pub snapshot: String,
    /// True when the agent picked the snapshot: it creates the Snapshot object if missing.
    pub create_snapshot: bool,
    pub target: String,
    pub full: bool,
    pub block_size: u64,
    pub compression: Compression,
    /// True when an earlier agent process claimed the backup and did not finish it.
    pub restarted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not this agent's business (finished, mirrored, another node's, being deleted).
    Ignore(&'static str),
    /// Look again later (the volume is not ready yet); the status is left as it is.
    Wait(String),
    Fail(Failure),
    Run(Plan),
}

/// The BackupTarget a Backup goes to: the one recorded when it was claimed, else the volume's.
pub fn target_name(backup: &Backup, volume: Option<&Volume>) -> Option<String> {
    backup
        .status
        .as_ref()
        .and_then(|s| s.backup_target_name.clone())
        .filter(|t| !t.is_empty())
        .or_else(|| volume.map(|v| v.spec.backup_target_name.clone()))
}

/// The snapshot the agent takes for a Backup that names none: the Backup's own name, shortened
/// (deterministically) when it is too long for the engine.
pub fn generated_snapshot_name(backup: &str) -> String {
    if backup.len() <= MAX_SNAPSHOT_NAME {
        return backup.to_owned();
    }
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same name gives the same snapshot name in every process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    backup.hash(&mut hasher);
    let suffix = format!("-{:016x}", hasher.finish());
    let keep = MAX_SNAPSHOT_NAME - suffix.len();
    let mut cut = keep;
    while !backup.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", backup[..cut].trim_end_matches(['-', '.']), suffix)
}

pub fn compression(method: Option<CompressionMethod>) -> Compression {
    match method {
        Some(CompressionMethod::None) => Compression::None,
        Some(CompressionMethod::Gzip) => Compression::Gzip,
        Some(CompressionMethod::Lz4) | None => Compression::Lz4,
    }
}

/// Why the agent leaves `backup` alone whatever else it reads, if it does.
pub fn settled(backup: &Backup, node: &str) -> Option<&'static str> {
    if backup.metadata.deletion_timestamp.is_some() {
        return Some("being deleted");
    }
    // The target sync creates mirrored objects before it writes their status: in that moment
    // they look new, and a volume of the same name must not back up under the remote's name.
    if backup
        .annotations()
        .contains_key(crate::controllers::backup_target::sync::MIRRORED_FROM)
    {
        return Some("mirrored from the store");
    }
    let status = backup.status.as_ref();
    if crate::agent::skip::already_skipped(status.and_then(|s| s.conditions.as_deref()), COMPLETED)
    {
        return Some("skipped: nothing changed");
    }
    let mine = status.and_then(|s| s.owner_id.as_deref()) == Some(node);
    match status.and_then(|s| s.state) {
        // Mirrored backups arrive Completed without an owner: the store already has them.
        Some(BackupState::Completed) => Some("completed"),
        Some(BackupState::Error) => Some("failed"),
        Some(BackupState::Unknown) => Some("state unknown"),
        Some(BackupState::InProgress) if !mine => Some("in progress on another node"),
        _ => None,
    }
}

/// Whether `backup` may still need an agent (no final state yet).
pub fn unfinished(backup: &Backup) -> bool {
    backup.metadata.deletion_timestamp.is_none()
        && matches!(
            backup.status.as_ref().and_then(|s| s.state),
            None | Some(BackupState::Pending) | Some(BackupState::InProgress)
        )
}

/// Decide what to do with `o.backup`.
pub fn decide(o: &Observed) -> Decision {
    let backup = o.backup;
    let name = backup.name_any();
    let status = backup.status.clone().unwrap_or_default();
    if let Some(why) = settled(backup, o.node) {
        return Decision::Ignore(why);
    }
    let mine = status.owner_id.as_deref() == Some(o.node);
    if o.local == Local::Running {
        return Decision::Ignore("running in this process");
    }
    let restarted = status.state == Some(BackupState::InProgress) && o.local == Local::Unknown;

    let Some(volume) = o.volume else {
        return Decision::Fail(Failure::new(
            "VolumeNotFound",
            format!(
                "spec.volume names Volume {:?}, which does not exist: create the Volume, or delete this Backup and create one that names an existing Volume",
                backup.spec.volume
            ),
        ));
    };
    let volume_status = volume.status.clone().unwrap_or_default();
    if volume_status.owner_id.as_deref() != Some(o.node) {
        if mine && status.state == Some(BackupState::InProgress) {
            return Decision::Fail(Failure::new(
                "VolumeMoved",
                format!(
                    "Volume {:?} moved from node {} to {} during the backup: create a new Backup",
                    backup.spec.volume,
                    o.node,
                    volume_status.owner_id.as_deref().unwrap_or("(none)")
                ),
            ));
        }
        return Decision::Ignore("volume on another node");
    }
    if let Err(e) = backupstore::names::validate_name("backup", &name) {
        return Decision::Fail(Failure::new(
            "InvalidName",
            format!(
                "metadata.name {name:?} cannot name a backup in the store ({e}): create the Backup under a name of at least two characters"
            ),
        ));
    }
    if let Err(e) = backupstore::names::validate_name("volume", &backup.spec.volume) {
        return Decision::Fail(Failure::new(
            "InvalidName",
            format!(
                "spec.volume {:?} cannot name a backup volume in the store ({e}): back up a Volume whose name has at least two characters",
                backup.spec.volume
            ),
        ));
    }
    if volume.metadata.deletion_timestamp.is_some() {
        return Decision::Fail(Failure::new(
            "VolumeDeleting",
            format!(
                "Volume {:?} is being deleted: it cannot be backed up",
                backup.spec.volume
            ),
        ));
    }
    if volume.spec.standby || volume_status.is_standby == Some(true) {
        return Decision::Fail(Failure::new(
            "StandbyVolume",
            format!(
                "Volume {:?} is a DR standby volume (spec.standby: true), which cannot be backed up: activate it (spec.standby: false) first",
                backup.spec.volume
            ),
        ));
    }
    match volume_status.state {
        Some(VolumeState::Ready) => {}
        Some(state @ (VolumeState::Faulted | VolumeState::Deleting)) => {
            return Decision::Fail(Failure::new(
                "VolumeNotReady",
                format!(
                    "Volume {:?} is {state:?}, not Ready: fix the volume (see its conditions) and create a new Backup",
                    backup.spec.volume
                ),
            ));
        }
        state => {
            return Decision::Wait(format!(
                "Volume {:?} is {}; waiting until it is Ready",
                backup.spec.volume,
                state.map_or("not set up yet".to_owned(), |s| format!("{s:?}"))
            ));
        }
    }
    let Some(block_size) = volume.spec.backup_block_size_bytes() else {
        return Decision::Fail(Failure::new(
            "InvalidBlockSize",
            format!(
                "Volume {:?} spec.backupBlockSize {:?} is not 2Mi or 16Mi: fix the Volume and create a new Backup",
                backup.spec.volume,
                volume.spec.backup_block_size.as_deref().unwrap_or_default()
            ),
        ));
    };
    let target = target_name(backup, Some(volume)).unwrap_or_default();
    let Some(target_object) = o.target else {
        return Decision::Fail(Failure::new(
            "TargetNotFound",
            format!(
                "Volume {:?} spec.backupTargetName names BackupTarget {target:?}, which does not exist: create it or point the Volume at an existing target",
                backup.spec.volume
            ),
        ));
    };
    if target_object.spec.backup_target_url.is_empty() {
        return Decision::Fail(Failure::new(
            "TargetUnavailable",
            format!(
                "BackupTarget {target:?} has an empty spec.backupTargetURL: set it to the store's URL"
            ),
        ));
    }
    let target_status = target_object.status.clone().unwrap_or_default();
    if target_status.available == Some(false) {
        let why = crate::status::find(target_status.conditions.as_deref(), "Unavailable")
            .map(|c| c.message.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no reason given".to_owned());
        return Decision::Fail(Failure::new(
            "TargetUnavailable",
            format!(
                "BackupTarget {target:?} is unavailable ({why}): fix the target (see its Unavailable condition) and create a new Backup"
            ),
        ));
    }

    let named = backup.spec.snapshot_name.clone().filter(|s| !s.is_empty());
    let (snapshot, create_snapshot) = match named {
        Some(s) => (s, false),
        None => (
            status
                .snapshot_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| generated_snapshot_name(&name)),
            true,
        ),
    };
    Decision::Run(Plan {
        snapshot,
        create_snapshot,
        target,
        full: backup.spec.backup_mode == Some(BackupMode::Full),
        block_size,
        compression: compression(volume.spec.backup_compression_method),
        restarted,
    })
}

/// The progress (0–99 while running) of `done` of `total` blocks.
pub fn percent(done: u64, total: u64) -> i32 {
    if total == 0 {
        return 0;
    }
    (done.saturating_mul(100) / total).min(99) as i32
}

/// The `Completed` condition while a backup runs.
pub fn running_condition(
    existing: Option<&[Condition]>,
    plan: &Plan,
    generation: Option<i64>,
) -> Condition {
    let (reason, message) = if plan.restarted {
        (
            "Restarted",
            format!(
                "{RESTARTED}: backing up snapshot {} to target {} again from the start",
                plan.snapshot, plan.target
            ),
        )
    } else {
        (
            "InProgress",
            format!(
                "backing up snapshot {} to target {}",
                plan.snapshot, plan.target
            ),
        )
    };
    crate::status::condition(existing, COMPLETED, false, reason, message, generation)
}

/// Status of a claimed, running backup (every field the agent owns while it runs).
pub fn running_status(node: &str, plan: &Plan, progress: i32, condition: &Condition) -> Value {
    json!({
        "state": BackupState::InProgress,
        "ownerID": node,
        "progress": progress,
        "snapshotName": plan.snapshot,
        "backupTargetName": plan.target,
        "conditions": [condition],
    })
}

/// Status of a failed backup. `plan` is known when it failed after the claim.
pub fn failed_status(node: &str, backup: &Backup, plan: Option<&Plan>, failure: &Failure) -> Value {
    let status = backup.status.clone().unwrap_or_default();
    let condition = crate::status::condition(
        status.conditions.as_deref(),
        COMPLETED,
        false,
        failure.reason,
        failure.message.clone(),
        backup.metadata.generation,
    );
    let mut body = json!({
        "state": BackupState::Error,
        "ownerID": node,
        "error": failure.message,
        "conditions": [condition],
    });
    let snapshot = plan
        .map(|p| p.snapshot.clone())
        .or(status.snapshot_name.clone());
    let target = plan
        .map(|p| p.target.clone())
        .or(status.backup_target_name.clone());
    if let Some(s) = snapshot {
        body["snapshotName"] = json!(s);
    }
    if let Some(t) = target {
        body["backupTargetName"] = json!(t);
    }
    body
}

/// What a completed backup reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub url: String,
    pub snapshot_created_at: Time,
    pub backup_created_at: Time,
    pub size: u64,
    pub volume_size: u64,
    pub newly_uploaded: u64,
    pub re_uploaded: u64,
    pub compression: Compression,
    pub block_size: u64,
    pub bytes_read: u64,
    pub bytes_changed: u64,
    pub bytes_uploaded: u64,
    pub bytes_deduplicated: u64,
    /// How it went, for the condition message (e.g. incremental from which snapshot).
    pub summary: String,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Status of a completed backup.
pub fn completed_status(node: &str, backup: &Backup, plan: &Plan, done: &Completion) -> Value {
    let status = backup.status.clone().unwrap_or_default();
    let condition = crate::status::condition(
        status.conditions.as_deref(),
        COMPLETED,
        true,
        "Completed",
        done.summary.clone(),
        backup.metadata.generation,
    );
    json!({
        "state": BackupState::Completed,
        "ownerID": node,
        "progress": 100,
        "snapshotName": plan.snapshot,
        "backupTargetName": plan.target,
        "url": done.url,
        "snapshotCreatedAt": done.snapshot_created_at,
        "backupCreatedAt": done.backup_created_at,
        "size": to_i64(done.size),
        "volumeSize": to_i64(done.volume_size),
        "newlyUploadedDataSize": to_i64(done.newly_uploaded),
        "reUploadedDataSize": to_i64(done.re_uploaded),
        "compressionMethod": done.compression.as_str(),
        "blockSize": to_i64(done.block_size),
        "bytesRead": to_i64(done.bytes_read),
        "bytesChanged": to_i64(done.bytes_changed),
        "bytesUploaded": to_i64(done.bytes_uploaded),
        "bytesDeduplicated": to_i64(done.bytes_deduplicated),
        "conditions": [condition],
    })
}

/// Whether a completed backup whose snapshot was taken at `at` should become the volume's
/// `lastBackup`: not when the volume already records a newer one.
pub fn is_newest(volume: &Volume, backup: &str, at: &Time) -> bool {
    let status = volume.status.clone().unwrap_or_default();
    match (status.last_backup.as_deref(), status.last_backup_at) {
        (Some(last), Some(last_at)) if last != backup => last_at.0 <= at.0,
        _ => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NODE: &str = "node-a";

    fn backup(name: &str, status: Value) -> Backup {
        serde_json::from_value(json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
            "metadata": {"name": name, "namespace": "bulwark-system", "generation": 1},
            "spec": {"volume": "vol-a"},
            "status": status,
        }))
        .unwrap()
    }

    fn volume(spec: Value, status: Value) -> Volume {
        let mut s = json!({"size": "64Mi"});
        for (k, v) in spec.as_object().unwrap() {
            s[k] = v.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "vol-a", "namespace": "bulwark-system"},
            "spec": s,
            "status": status,
        }))
        .unwrap()
    }

    fn ready() -> Value {
        json!({"ownerID": NODE, "state": "Ready"})
    }

    fn target(status: Value) -> BackupTarget {
        serde_json::from_value(json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
            "metadata": {"name": "default", "namespace": "bulwark-system"},
            "spec": {"backupTargetURL": "file:///backups", "pollInterval": "300s"},
            "status": status,
        }))
        .unwrap()
    }

    fn plan(snapshot: &str, create: bool, restarted: bool) -> Plan {
        Plan {
            snapshot: snapshot.to_owned(),
            create_snapshot: create,
            target: "default".to_owned(),
            full: false,
            block_size: 2 << 20,
            compression: Compression::Lz4,
            restarted,
        }
    }

    fn decide_with(
        b: &Backup,
        v: Option<&Volume>,
        t: Option<&BackupTarget>,
        local: Local,
    ) -> Decision {
        decide(&Observed {
            backup: b,
            volume: v,
            target: t,
            node: NODE,
            local,
        })
    }

    fn reason(d: &Decision) -> &'static str {
        match d {
            Decision::Fail(f) => f.reason,
            Decision::Ignore(_) => "ignore",
            Decision::Wait(_) => "wait",
            Decision::Run(_) => "run",
        }
    }

    /// What, backup, volume, target, local state, expected decision.
    type Case<'a> = (
        &'a str,
        Backup,
        Option<Volume>,
        Option<&'a BackupTarget>,
        Local,
        Decision,
    );
    /// What, backup, volume, target, expected reason, a word the message must contain.
    type FailCase<'a> = (
        &'a str,
        Backup,
        Option<Volume>,
        Option<&'a BackupTarget>,
        &'a str,
        &'a str,
    );

    #[test]
    fn decisions() {
        let ok_vol = volume(json!({}), ready());
        let ok_target = target(json!({"available": true}));
        let fresh = backup("backup-1", json!({}));
        let mut named = fresh.clone();
        named.spec.snapshot_name = Some("snap-1".into());
        let mut full = fresh.clone();
        full.spec.backup_mode = Some(BackupMode::Full);
        let mut mirrored_without_status = fresh.clone();
        mirrored_without_status.metadata.annotations =
            Some([("bulwark.io/mirrored-from".to_owned(), "default".to_owned())].into());
        let mut deleting = fresh.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let mut deleting_vol = ok_vol.clone();
        deleting_vol.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        let in_progress_here = backup(
            "backup-1",
            json!({"state": "InProgress", "ownerID": NODE, "snapshotName": "snap-x", "backupTargetName": "default"}),
        );
        let unavailable = target(json!({"available": false, "conditions": [{
            "type": "Unavailable", "status": "True", "reason": "ProbeFailed",
            "message": "bucket missing", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}));
        let unprobed = target(json!({}));
        let mut no_url = ok_target.clone();
        no_url.spec.backup_target_url = String::new();
        let run = |p: Plan| Decision::Run(p);
        let mut full_plan = plan("backup-1", true, false);
        full_plan.full = true;
        let mut gzip_16 = plan("backup-1", true, false);
        gzip_16.compression = Compression::Gzip;
        gzip_16.block_size = 16 << 20;

        let cases: Vec<Case> = vec![
            (
                "fresh: run, snapshot named after the backup",
                fresh.clone(),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                run(plan("backup-1", true, false)),
            ),
            (
                "named snapshot is used, not created",
                named.clone(),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                run(plan("snap-1", false, false)),
            ),
            (
                "backupMode full",
                full.clone(),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                run(full_plan),
            ),
            (
                "volume compression and block size",
                fresh.clone(),
                Some(volume(
                    json!({"backupCompressionMethod": "gzip", "backupBlockSize": "16Mi"}),
                    ready(),
                )),
                Some(&ok_target),
                Local::Unknown,
                run(gzip_16),
            ),
            (
                "target not probed yet: try",
                fresh.clone(),
                Some(ok_vol.clone()),
                Some(&unprobed),
                Local::Unknown,
                run(plan("backup-1", true, false)),
            ),
            (
                "restart: InProgress here, unknown to this process",
                in_progress_here.clone(),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                run(plan("snap-x", true, true)),
            ),
            (
                "retry after an API error: not a restart",
                in_progress_here.clone(),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Claimed,
                run(plan("snap-x", true, false)),
            ),
            (
                "running in this process",
                in_progress_here.clone(),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Running,
                Decision::Ignore("running in this process"),
            ),
            (
                "completed",
                backup("backup-1", json!({"state": "Completed", "ownerID": NODE})),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                Decision::Ignore("completed"),
            ),
            (
                "mirrored from the store",
                backup("backup-1", json!({"state": "Completed"})),
                None,
                None,
                Local::Unknown,
                Decision::Ignore("completed"),
            ),
            (
                "mirrored, before the sync wrote its status",
                mirrored_without_status,
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                Decision::Ignore("mirrored from the store"),
            ),
            (
                "failed",
                backup("backup-1", json!({"state": "Error", "ownerID": NODE})),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                Decision::Ignore("failed"),
            ),
            (
                "other node's",
                backup(
                    "backup-1",
                    json!({"state": "InProgress", "ownerID": "node-b"}),
                ),
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                Decision::Ignore("in progress on another node"),
            ),
            (
                "being deleted",
                deleting,
                Some(ok_vol.clone()),
                Some(&ok_target),
                Local::Unknown,
                Decision::Ignore("being deleted"),
            ),
            (
                "volume on another node",
                fresh.clone(),
                Some(volume(
                    json!({}),
                    json!({"ownerID": "node-b", "state": "Ready"}),
                )),
                None,
                Local::Unknown,
                Decision::Ignore("volume on another node"),
            ),
            (
                "volume not placed",
                fresh.clone(),
                Some(volume(json!({}), json!({}))),
                None,
                Local::Unknown,
                Decision::Ignore("volume on another node"),
            ),
        ];
        for (what, b, v, t, local, want) in cases {
            assert_eq!(decide_with(&b, v.as_ref(), t, local), want, "{what}");
        }

        let failures: Vec<FailCase> = vec![
            (
                "volume missing",
                fresh.clone(),
                None,
                None,
                "VolumeNotFound",
                "spec.volume",
            ),
            (
                "backup name too short",
                backup("b", json!({})),
                Some(ok_vol.clone()),
                Some(&ok_target),
                "InvalidName",
                "metadata.name",
            ),
            (
                "volume deleting",
                fresh.clone(),
                Some(deleting_vol),
                Some(&ok_target),
                "VolumeDeleting",
                "being deleted",
            ),
            (
                "standby",
                fresh.clone(),
                Some(volume(
                    json!({"standby": true, "fromBackup": "file:///b?backup=x1&volume=v1"}),
                    ready(),
                )),
                Some(&ok_target),
                "StandbyVolume",
                "spec.standby",
            ),
            (
                "faulted",
                fresh.clone(),
                Some(volume(
                    json!({}),
                    json!({"ownerID": NODE, "state": "Faulted"}),
                )),
                Some(&ok_target),
                "VolumeNotReady",
                "Faulted",
            ),
            (
                "bad block size",
                fresh.clone(),
                Some(volume(json!({"backupBlockSize": "4Mi"}), ready())),
                Some(&ok_target),
                "InvalidBlockSize",
                "spec.backupBlockSize",
            ),
            (
                "target missing",
                fresh.clone(),
                Some(ok_vol.clone()),
                None,
                "TargetNotFound",
                "spec.backupTargetName",
            ),
            (
                "target unavailable",
                fresh.clone(),
                Some(ok_vol.clone()),
                Some(&unavailable),
                "TargetUnavailable",
                "bucket missing",
            ),
            (
                "target without URL",
                fresh.clone(),
                Some(ok_vol.clone()),
                Some(&no_url),
                "TargetUnavailable",
                "spec.backupTargetURL",
            ),
            (
                "volume moved during the backup",
                in_progress_here.clone(),
                Some(volume(
                    json!({}),
                    json!({"ownerID": "node-b", "state": "Ready"}),
                )),
                None,
                "VolumeMoved",
                "node-b",
            ),
        ];
        for (what, b, v, t, want, mentions) in failures {
            let got = decide_with(&b, v.as_ref(), t, Local::Unknown);
            assert_eq!(reason(&got), want, "{what}: {got:?}");
            let Decision::Fail(f) = got else {
                unreachable!()
            };
            assert!(f.message.contains(mentions), "{what}: {}", f.message);
        }

        for state in [
            json!({"ownerID": NODE}),
            json!({"ownerID": NODE, "state": "Creating"}),
            json!({"ownerID": NODE, "state": "Restoring"}),
        ] {
            let got = decide_with(
                &fresh,
                Some(&volume(json!({}), state.clone())),
                Some(&ok_target),
                Local::Unknown,
            );
            assert_eq!(reason(&got), "wait", "{state}");
        }
    }

    #[test]
    fn snapshot_names_fit_the_engine() {
        assert_eq!(generated_snapshot_name("backup-1"), "backup-1");
        let long = format!("{}.x", "a".repeat(80));
        let s = generated_snapshot_name(&long);
        assert!(s.len() <= 63, "{s}");
        assert_eq!(s, generated_snapshot_name(&long), "deterministic");
        assert_ne!(s, generated_snapshot_name(&format!("{long}y")));
    }

    #[test]
    fn status_bodies() {
        let b = backup("backup-1", json!({}));
        let p = plan("snap-1", false, true);
        let c = running_condition(None, &p, Some(1));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Restarted")
        );
        assert!(c.message.starts_with(RESTARTED));
        let running = running_status(NODE, &p, 42, &c);
        assert_eq!(running["state"], "InProgress");
        assert_eq!(running["ownerID"], NODE);
        assert_eq!(running["progress"], 42);
        assert_eq!(running["snapshotName"], "snap-1");
        assert_eq!(running["backupTargetName"], "default");

        let failed = failed_status(NODE, &b, Some(&p), &Failure::new("StoreError", "boom"));
        assert_eq!(failed["state"], "Error");
        assert_eq!(failed["error"], "boom");
        assert_eq!(failed["conditions"][0]["type"], COMPLETED);
        assert_eq!(failed["conditions"][0]["status"], "False");
        assert_eq!(failed["snapshotName"], "snap-1");
        let unclaimed = failed_status(NODE, &b, None, &Failure::new("VolumeNotFound", "x"));
        assert!(unclaimed.get("snapshotName").is_none());

        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(3, 3), 99, "100 only once completed");
    }

    #[test]
    fn last_backup_only_moves_forward() {
        let t = |s: &str| Time(s.parse().unwrap());
        let v = volume(
            json!({}),
            json!({"lastBackup": "backup-2", "lastBackupAt": "2026-01-02T00:00:00Z"}),
        );
        assert!(is_newest(&v, "backup-3", &t("2026-01-03T00:00:00Z")));
        assert!(!is_newest(&v, "backup-1", &t("2026-01-01T00:00:00Z")));
        assert!(is_newest(&v, "backup-2", &t("2026-01-01T00:00:00Z")));
        assert!(is_newest(
            &volume(json!({}), json!({})),
            "backup-1",
            &t("2026-01-01T00:00:00Z")
        ));
    }
}
