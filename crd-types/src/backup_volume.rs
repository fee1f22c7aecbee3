//! BackupVolume: the store's view of one volume's backups, mirrored from a backup target.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CompressionMethod, Condition, Time};
use crate::validate::{Checker, Validate};

pub mod rules {
    //! CEL rules of the BackupVolume schema and their messages; `validate()` checks the same.
    pub const VOLUME_NAME: &str = "self.size() > 0";
    pub const VOLUME_NAME_MSG: &str = "spec.volumeName must name the volume in the backup store";
}

/// A volume directory in a backup target. Created and deleted by the operator as the store
/// changes; deleting one that still exists remotely deletes its backups.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "BackupVolume",
    namespaced,
    status = "BackupVolumeStatus",
    shortname = "bwbv",
    category = "bulwark",
    derive = "PartialEq",
    doc = "The backups of one volume in a BackupTarget.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.backupTargetName"
    ),
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volumeName"),
    printcolumn(name = "Backups", type_ = "integer", json_path = ".status.backupCount"),
    printcolumn(
        name = "Last Backup",
        type_ = "string",
        json_path = ".status.lastBackupName"
    ),
    printcolumn(
        name = "Last Backup At",
        type_ = "date",
        json_path = ".status.lastBackupAt"
    ),
    printcolumn(
        name = "Last Synced",
        type_ = "date",
        json_path = ".status.lastSyncedAt",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolumeSpec {
    #[serde(default = "crate::common::default_backup_target")]
    pub backup_target_name: String,
    /// Name of the volume in the store.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new(rules::VOLUME_NAME).message(rules::VOLUME_NAME_MSG))]
    pub volume_name: String,
    /// Ask for a sync now: the operator syncs when this is newer than `status.lastSyncedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_requested_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolumeStatus {
    /// Volume size recorded in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_count: Option<i64>,
    /// Bytes of blocks stored for the volume (before compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_stored: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_image_checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_method: Option<CompressionMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    /// Change marker of the store's `volume.cfg` (ETag or mtime) at the last full sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_at: Option<Time>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
}

impl Validate for BackupVolume {
    fn check(&self, c: &mut Checker) {
        c.check(
            !self.spec.volume_name.is_empty(),
            "spec.volumeName",
            rules::VOLUME_NAME_MSG,
        );
    }
}
