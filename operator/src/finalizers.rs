//! Finalizers: ours keep an object until its data (local or remote) is gone. Added and removed
//! with a JSON patch that first tests the current list, so a concurrent change by another
//! writer makes the patch fail instead of being overwritten.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Volume data on the owner node: removed by the agent after deleting the data.
pub const VOLUME: &str = "bulwark.io/volume-data";
/// Engine snapshot on the volume's node: removed by the agent after merging the layer.
pub const SNAPSHOT: &str = "bulwark.io/snapshot-data";
/// Remote backup: removed by the controller after deleting the backup from the store.
pub const BACKUP: &str = "bulwark.io/remote-backup";

/// Add `finalizer` to `object` unless present.
pub async fn add<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let mut list = object.finalizers().to_vec();
    list.push(finalizer.to_owned());
    patch_list(api, object, list).await
}

/// Remove `finalizer` from `object` if present.
pub async fn remove<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let list: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    patch_list(api, object, list).await
}

async fn patch_list<K>(api: &Api<K>, object: &K, list: Vec<String>) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let current = object.finalizers();
    let patch: json_patch::Patch = if current.is_empty() {
        serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": list},
        ]))
    } else {
        serde_json::from_value(serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "replace", "path": "/metadata/finalizers", "value": list},
        ]))
    }
    .map_err(kube::Error::SerdeError)?;
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(())
}
