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
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // A failed `test` operation is answered 422 with no cause: say what it means.
        Err(kube::Error::Api(mut status)) if status.code == 422 => {
            status.code = 409;
            status.reason = "Conflict".to_owned();
            status.message = format!(
                "the finalizers of {} changed since they were read (another writer); retrying with the current list",
                object.name_any()
            );
            Err(kube::Error::Api(status))
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{ApiServer, status};
    use http::Method;

    /// The API server answers a failed JSON-patch `test` with a bare 422 "error in our
    /// request"; the error says instead that the list changed, as a conflict to retry.
    #[tokio::test]
    async fn a_list_changed_by_another_writer_is_a_conflict_that_says_so() {
        let (client, mut server) = ApiServer::start();
        let api: Api<crd_types::Volume> = Api::namespaced(client, "ns");
        let volume: crd_types::Volume = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "v1", "namespace": "ns", "finalizers": ["other"]},
            "spec": {"size": "1Mi"}
        }))
        .expect("a Volume");
        let script = tokio::spawn(async move {
            server
                .expect(
                    Method::PATCH,
                    "/apis/bulwark.io/v1beta1/namespaces/ns/volumes/v1",
                )
                .await
                .respond(status(422, "Invalid"));
        });
        let error = add(&api, &volume, VOLUME).await.expect_err("refused");
        script.await.expect("script");
        match error {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 409);
                assert!(
                    status.message.contains("finalizers of v1 changed"),
                    "{}",
                    status.message
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
