//! Backup: one backup of a volume snapshot in a backup target.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{BackupMode, CompressionMethod, Condition, Time};
use crate::validate::{Checker, Validate};

pub mod rules {
    //! CEL rules of the Backup schema and their messages; `validate()` checks the same.
    pub const VOLUME: &str = "self.size() > 0";
    pub const VOLUME_MSG: &str = "spec.volume must name the Volume to back up";
    pub const SPEC_IMMUTABLE: &str = "self == oldSelf";
    pub const SPEC_IMMUTABLE_MSG: &str =
        "the spec of a Backup is immutable: create a new Backup to back up something else";
}

/// A backup of a volume snapshot (the operator takes a snapshot when none is named).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "bwb",
    category = "bulwark",
    derive = "PartialEq",
    doc = "A backup of a Volume snapshot in a BackupTarget.",
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volume"),
    printcolumn(
        name = "Snapshot",
        type_ = "string",
        json_path = ".status.snapshotName"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Progress", type_ = "integer", json_path = ".status.progress"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(
        name = "Uploaded",
        type_ = "integer",
        json_path = ".status.newlyUploadedDataSize",
        priority = "1"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.backupTargetName",
        priority = "1"
    ),
    printcolumn(
        name = "Created",
        type_ = "date",
        json_path = ".status.backupCreatedAt"
    ),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".status.error",
        priority = "1"
    )
)]
#[x_kube(validation = Rule::new(rules::SPEC_IMMUTABLE).message(rules::SPEC_IMMUTABLE_MSG))]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The Volume to back up.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(rules::VOLUME).message(rules::VOLUME_MSG))]
    pub volume: String,
    /// Snapshot to back up; a new snapshot is taken when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Labels stored with the backup in the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `incremental` (default: only blocks changed since the last backup) or `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_mode: Option<BackupMode>,
}

/// Where a backup is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupState {
    Pending,
    InProgress,
    Completed,
    Error,
    Unknown,
}

impl BackupState {
    /// The value Longhorn's `longhorn_backup_state` metric uses for this state.
    pub fn metric_value(self) -> i64 {
        match self {
            BackupState::Pending => 1,
            BackupState::InProgress => 2,
            BackupState::Completed => 3,
            BackupState::Error => 4,
            BackupState::Unknown => 5,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BackupState>,
    /// Percent done, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,
    /// Backup URL: `<target>?backup=<name>&volume=<volume>`; usable as a Volume's `fromBackup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The snapshot backed up (named in the spec, or taken for this backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_created_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_created_at: Option<Time>,
    /// Bytes of data the backup holds (blocks × block size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newly_uploaded_data_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_uploaded_data_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_method: Option<CompressionMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_target_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes read from the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<i64>,
    /// Bytes in blocks that differ from the previous backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_changed: Option<i64>,
    /// Bytes sent to the store (after compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_uploaded: Option<i64>,
    /// Bytes of changed blocks the store already had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_deduplicated: Option<i64>,
    /// Node whose agent runs the backup.
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Validate for Backup {
    fn check(&self, c: &mut Checker) {
        c.check(
            !self.spec.volume.is_empty(),
            "spec.volume",
            rules::VOLUME_MSG,
        );
    }

    fn check_update(&self, old: &Self, c: &mut Checker) {
        c.check(self.spec == old.spec, "spec", rules::SPEC_IMMUTABLE_MSG);
    }
}
