//! Volume: a block volume with snapshots and backups, optionally a DR standby that follows a
//! backup volume in the store.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CompressionMethod, Condition, Time, parse_quantity_bytes};
use crate::validate::{Checker, Validate};

pub mod rules {
    //! CEL rules of the Volume schema and their messages; `validate()` checks the same.
    pub const NAME_LEN: &str = "self.metadata.name.size() <= 63";
    pub const NAME_LEN_MSG: &str =
        "metadata.name must be at most 63 characters: it is used as a label value and a store path";
    pub const SIZE: &str = "self.matches('^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')";
    pub const SIZE_MSG: &str = "spec.size must be a positive whole number of bytes with an optional suffix, e.g. 10Gi or 512Mi";
    pub const FROM_BACKUP: &str = "self.matches('^(s3|nfs|cifs|azblob|file)://[^?]*[?](.*&)?backup=[^&]+') && self.matches('[?&]volume=[^&]+')";
    pub const FROM_BACKUP_MSG: &str = "spec.fromBackup must be a backup URL such as s3://bucket@us-east-1/path/?backup=backup-0123456789abcdef&volume=vol-1: copy it from the Backup's status.url";
    pub const DATA_SOURCE: &str =
        "self.matches('^((snap|bak|bs)://[^/]+/[^/]+|vol://[^/]+|bi://backing[?].+)$')";
    pub const DATA_SOURCE_MSG: &str = "spec.dataSource must be snap://<volume>/<snapshot>, vol://<volume>, a backup handle bak://<volume>/<backup> (bs:// too) or a backing-image handle bi://backing?backingImage=<name>&...";
    pub const BLOCK_SIZE: &str = "self in ['2Mi', '16Mi', '2097152', '16777216']";
    pub const BLOCK_SIZE_MSG: &str = "spec.backupBlockSize must be 2Mi or 16Mi";
    pub const STANDBY_NEEDS_BACKUP: &str = "!self.standby || has(self.fromBackup)";
    pub const STANDBY_NEEDS_BACKUP_MSG: &str = "spec.standby requires spec.fromBackup: set the URL of the backup the standby volume follows";
    pub const ONE_SOURCE: &str = "!(has(self.fromBackup) && has(self.dataSource))";
    pub const ONE_SOURCE_MSG: &str = "spec.fromBackup and spec.dataSource are exclusive: a volume starts from a backup or from a snapshot/volume, not both";
    pub const BACKING_IMAGE_IMMUTABLE: &str = "has(self.backingImage) == has(oldSelf.backingImage) && (!has(self.backingImage) || self.backingImage == oldSelf.backingImage)";
    pub const BACKING_IMAGE_IMMUTABLE_MSG: &str =
        "spec.backingImage is immutable: create a new volume to use another backing image";
    pub const BLOCK_SIZE_IMMUTABLE: &str = "!has(oldSelf.backupBlockSize) || (has(self.backupBlockSize) && self.backupBlockSize == oldSelf.backupBlockSize)";
    pub const BLOCK_SIZE_IMMUTABLE_MSG: &str = "spec.backupBlockSize is immutable once set: the volume's backups in the store all use one block size";
}

/// A block volume. Its data lives on the node in `status.ownerID`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "Volume",
    namespaced,
    status = "VolumeStatus",
    shortname = "bwv",
    category = "bulwark",
    derive = "PartialEq",
    doc = "A block volume with snapshots, backups and optional DR standby mode.",
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.ownerID"),
    printcolumn(name = "Standby", type_ = "boolean", json_path = ".spec.standby"),
    printcolumn(name = "Last Backup", type_ = "string", json_path = ".status.lastBackup", priority = "1"),
    printcolumn(name = "Last Backup At", type_ = "date", json_path = ".status.lastBackupAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(rules::NAME_LEN).message(rules::NAME_LEN_MSG)
)]
#[x_kube(validation = Rule::new(rules::STANDBY_NEEDS_BACKUP).message(rules::STANDBY_NEEDS_BACKUP_MSG))]
#[x_kube(validation = Rule::new(rules::ONE_SOURCE).message(rules::ONE_SOURCE_MSG))]
#[x_kube(validation = Rule::new(rules::BACKING_IMAGE_IMMUTABLE).message(rules::BACKING_IMAGE_IMMUTABLE_MSG))]
#[x_kube(validation = Rule::new(rules::BLOCK_SIZE_IMMUTABLE).message(rules::BLOCK_SIZE_IMMUTABLE_MSG))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Size as a Kubernetes quantity (`10Gi`); rounded up to whole 2 MiB. May grow, never shrink.
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(rules::SIZE).message(rules::SIZE_MSG))]
    pub size: String,
    /// Node to place the volume on; chosen by the controller when empty.
    #[serde(default, rename = "nodeID", skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Backup URL (`<target>?backup=<name>&volume=<volume>`) to restore the volume from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(rules::FROM_BACKUP).message(rules::FROM_BACKUP_MSG))]
    pub from_backup: Option<String>,
    /// DR mode: keep restoring newer backups of `fromBackup`'s backup volume. Set to false to activate.
    #[serde(default)]
    pub standby: bool,
    /// Initial data from another volume (`vol://<volume>`) or a snapshot (`snap://<volume>/<snapshot>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new(rules::DATA_SOURCE).message(rules::DATA_SOURCE_MSG))]
    pub data_source: Option<String>,
    /// BackingImage whose content is the volume's bottom layer. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_image: Option<String>,
    /// BackupTarget the volume's backups go to.
    #[serde(default = "crate::common::default_backup_target")]
    pub backup_target_name: String,
    /// Compression of this volume's backup blocks; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_compression_method: Option<CompressionMethod>,
    /// Backup block size, `2Mi` (default) or `16Mi`. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new(rules::BLOCK_SIZE).message(rules::BLOCK_SIZE_MSG))]
    pub backup_block_size: Option<String>,
}

/// Lifecycle of a volume's data on its node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VolumeState {
    /// Waiting for a node.
    Pending,
    /// The agent is creating the data (empty, cloned or from a backing image).
    Creating,
    /// The agent is restoring a backup into the volume.
    Restoring,
    /// Data present and served.
    Ready,
    /// The data cannot be used; see the conditions.
    Faulted,
    /// The data is being removed.
    Deleting,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VolumeState>,
    /// Node whose agent holds the data.
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Bytes allocated on the node (all layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_size: Option<i64>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the newest backup of this volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_standby: Option<bool>,
    /// The newest backup in the store is not restored yet (standby volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restored_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restored_at: Option<Time>,
    /// Percent (0–100) of the restore in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_progress: Option<i32>,
    /// Seconds since the newest backup was taken while it is not restored; 0 once it is (standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dr_lag_seconds: Option<i64>,
    /// Labels of the volume's backups in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_labels: Option<BTreeMap<String, String>>,
}

impl VolumeSpec {
    /// The size in bytes, when `size` is a valid quantity.
    pub fn size_bytes(&self) -> Option<u64> {
        parse_quantity_bytes(&self.size)
    }

    /// The backup block size in bytes (2 MiB when unset).
    pub fn backup_block_size_bytes(&self) -> Option<u64> {
        match &self.backup_block_size {
            None => Some(2 << 20),
            Some(s) => parse_quantity_bytes(s).filter(|b| *b == 2 << 20 || *b == 16 << 20),
        }
    }
}

fn is_backup_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let Some((_, query)) = rest.split_once('?') else {
        return false;
    };
    let has_param = |key: &str| {
        query.split('&').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, v)| k == key && !v.is_empty())
        })
    };
    matches!(scheme, "s3" | "nfs" | "cifs" | "azblob" | "file")
        && has_param("backup")
        && has_param("volume")
}

fn is_data_source(s: &str) -> bool {
    let two_parts = ["snap://", "bak://", "bs://"]
        .iter()
        .find_map(|scheme| s.strip_prefix(scheme));
    if let Some(rest) = two_parts {
        let mut parts = rest.split('/');
        matches!((parts.next(), parts.next(), parts.next()), (Some(v), Some(n), None) if !v.is_empty() && !n.is_empty())
    } else if let Some(rest) = s.strip_prefix("vol://") {
        !rest.is_empty() && !rest.contains('/')
    } else if let Some(query) = s.strip_prefix("bi://backing?") {
        !query.is_empty()
    } else {
        false
    }
}

fn is_size(s: &str) -> bool {
    !s.starts_with('0') && parse_quantity_bytes(s).is_some_and(|b| b > 0)
}

impl Validate for Volume {
    fn check(&self, c: &mut Checker) {
        let spec = &self.spec;
        let name_len = self.metadata.name.as_deref().map_or(0, str::len);
        c.check(name_len <= 63, "metadata.name", rules::NAME_LEN_MSG);
        c.check(is_size(&spec.size), "spec.size", rules::SIZE_MSG);
        if let Some(url) = &spec.from_backup {
            c.check(
                is_backup_url(url),
                "spec.fromBackup",
                rules::FROM_BACKUP_MSG,
            );
        }
        if let Some(source) = &spec.data_source {
            c.check(
                is_data_source(source),
                "spec.dataSource",
                rules::DATA_SOURCE_MSG,
            );
        }
        if let Some(block) = &spec.backup_block_size {
            c.check(
                ["2Mi", "16Mi", "2097152", "16777216"].contains(&block.as_str()),
                "spec.backupBlockSize",
                rules::BLOCK_SIZE_MSG,
            );
        }
        c.check(
            !spec.standby || spec.from_backup.is_some(),
            "spec",
            rules::STANDBY_NEEDS_BACKUP_MSG,
        );
        c.check(
            !(spec.from_backup.is_some() && spec.data_source.is_some()),
            "spec",
            rules::ONE_SOURCE_MSG,
        );
    }

    fn check_update(&self, old: &Self, c: &mut Checker) {
        c.check(
            self.spec.backing_image == old.spec.backing_image,
            "spec",
            rules::BACKING_IMAGE_IMMUTABLE_MSG,
        );
        c.check(
            old.spec.backup_block_size.is_none()
                || self.spec.backup_block_size == old.spec.backup_block_size,
            "spec",
            rules::BLOCK_SIZE_IMMUTABLE_MSG,
        );
        // Shrinking is not a CEL rule (quantities compare poorly there) but loses data.
        if let (Some(new), Some(was)) = (self.spec.size_bytes(), old.spec.size_bytes()) {
            c.check(
                new >= was,
                "spec.size",
                "spec.size may only grow: shrinking a volume would cut off data",
            );
        }
    }
}
