//! The external-snapshotter objects we read and write (`snapshot.storage.k8s.io/v1`), with only
//! the fields we use. They are not ours: the user installs their CRDs (we never generate them),
//! so the `Resource` impls are written by hand instead of derived with a CRD.
//!
//! Unknown fields are dropped on reading; that is safe because we never write a whole object
//! back: only a JSON patch of `metadata.finalizers` and server-side apply of the fields of
//! `status` we own.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crd_types::common::Time;
use kube::api::ObjectMeta;
use kube::core::ClusterResourceScope;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "snapshot.storage.k8s.io";
pub const VERSION: &str = "v1";

/// `Delete` removes the underlying snapshot when the content goes; `Retain` keeps it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    Delete,
    #[default]
    Retain,
}

/// A snapshot on the storage side, bound to a VolumeSnapshot (cluster-scoped).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContent {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: VolumeSnapshotContentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeSnapshotContentStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentSpec {
    pub driver: String,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    #[serde(default)]
    pub source: ContentSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class_name: Option<String>,
    #[serde(default)]
    pub volume_snapshot_ref: SnapshotRef,
}

/// Exactly one of the two is set (the CRD's schema says so): a pre-provisioned snapshot's
/// handle, or the volume a dynamic snapshot is taken of.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContentSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_handle: Option<String>,
}

/// The VolumeSnapshot the content is bound to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContentStatus {
    /// Unix nanoseconds (the CSI API's format), not an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// A class of dynamic snapshots (cluster-scoped); its fields sit at the top level, not in a spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

macro_rules! cluster_resource {
    ($ty:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = ClusterResourceScope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                VERSION.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cluster_resource!(
    VolumeSnapshotContent,
    "VolumeSnapshotContent",
    "volumesnapshotcontents"
);
cluster_resource!(
    VolumeSnapshotClass,
    "VolumeSnapshotClass",
    "volumesnapshotclasses"
);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn paths_and_api_version_are_the_snapshotters() {
        assert_eq!(
            VolumeSnapshotContent::url_path(&(), None),
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
        );
        assert_eq!(
            VolumeSnapshotClass::url_path(&(), None),
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses"
        );
        assert_eq!(
            VolumeSnapshotContent::api_version(&()),
            "snapshot.storage.k8s.io/v1"
        );
    }

    #[test]
    fn reads_what_the_snapshot_controller_writes() {
        let content: VolumeSnapshotContent = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-1"},
            "spec": {
                "driver": "driver.bulwark.io", "deletionPolicy": "Delete",
                "source": {"volumeHandle": "vol-1"}, "sourceVolumeMode": "Filesystem",
                "volumeSnapshotClassName": "bulwark-snap",
                "volumeSnapshotRef": {"kind": "VolumeSnapshot", "name": "s", "namespace": "default", "uid": "u-1"}
            },
            "status": {"creationTime": 1_764_000_000_123_456_789_i64, "readyToUse": true, "restoreSize": 1024,
                       "snapshotHandle": "snap://vol-1/s", "error": {"message": "m", "time": "2026-11-27T10:00:00Z"}}
        }))
        .expect("a content");
        assert_eq!(content.spec.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(content.spec.source.volume_handle.as_deref(), Some("vol-1"));
        assert_eq!(content.spec.volume_snapshot_ref.uid.as_deref(), Some("u-1"));
        let status = content.status.expect("status");
        assert_eq!(status.creation_time, Some(1_764_000_000_123_456_789));
        assert_eq!(status.error.and_then(|e| e.message).as_deref(), Some("m"));
        let class: VolumeSnapshotClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": {"name": "c"}, "driver": "driver.bulwark.io", "deletionPolicy": "Retain",
            "parameters": {"type": "snap"}
        }))
        .expect("a class");
        assert_eq!(class.parameters["type"], "snap");
    }
}
