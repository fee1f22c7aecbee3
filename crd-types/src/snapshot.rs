//! Snapshot: a point-in-time, read-only layer of a volume on its node.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Time};
use crate::validate::{Checker, Validate};

pub mod rules {
    //! CEL rules of the Snapshot schema and their messages; `validate()` checks the same.
    pub const VOLUME: &str = "self.size() > 0";
    pub const VOLUME_MSG: &str = "spec.volume must name the Volume to snapshot";
    pub const VOLUME_IMMUTABLE: &str = "self == oldSelf";
    pub const VOLUME_IMMUTABLE_MSG: &str =
        "spec.volume is immutable: a snapshot belongs to one volume; create a new Snapshot";
}

/// A snapshot of a volume. Deleting it merges its data into the next layer; the volume's
/// visible data never changes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "Snapshot",
    namespaced,
    status = "SnapshotStatus",
    shortname = "bwsnap",
    category = "bulwark",
    derive = "PartialEq",
    doc = "A point-in-time snapshot of a Volume.",
    printcolumn(name = "Volume", type_ = "string", json_path = ".spec.volume"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.readyToUse"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(
        name = "Parent",
        type_ = "string",
        json_path = ".status.parent",
        priority = "1"
    ),
    printcolumn(
        name = "User",
        type_ = "boolean",
        json_path = ".status.userCreated",
        priority = "1"
    ),
    printcolumn(name = "Created", type_ = "date", json_path = ".status.creationTime"),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".status.error",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// The Volume (same namespace) to snapshot.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new(rules::VOLUME).message(rules::VOLUME_MSG))]
    #[x_kube(validation = Rule::new(rules::VOLUME_IMMUTABLE).message(rules::VOLUME_IMMUTABLE_MSG))]
    pub volume: String,
    /// Labels stored with the snapshot in the engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<Time>,
    /// Bytes allocated by this snapshot's layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// The snapshot below this one in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Size of a volume restored from this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    /// False for snapshots the engine has that no user asked for (e.g. taken for a backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Validate for Snapshot {
    fn check(&self, c: &mut Checker) {
        c.check(
            !self.spec.volume.is_empty(),
            "spec.volume",
            rules::VOLUME_MSG,
        );
    }

    fn check_update(&self, old: &Self, c: &mut Checker) {
        c.check(
            self.spec.volume == old.spec.volume,
            "spec.volume",
            rules::VOLUME_IMMUTABLE_MSG,
        );
    }
}
