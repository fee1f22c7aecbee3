//! PVC → Volume recurring-job labels, as Longhorn does: a PVC of our driver that carries
//! `recurring-job.bulwark.io/source: enabled` has its job and group labels mirrored onto its
//! volume (added, changed and removed) whenever the PVC changes, and every few minutes in case
//! the volume's labels were edited. The rules are `recurring::selection::propagate_pvc_labels`.

use std::sync::Arc;
use std::time::Duration;

use crd_types::Volume;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use recurring::selection::{ENABLED, SOURCE_LABEL, propagate_pvc_labels};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::metrics::ErrorCategory;

const CONTROLLER: &str = "pvc-labels";
/// A volume's labels may be edited by hand: they are put back this often.
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let pvcs: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    // Only PVCs that asked for it are watched.
    let selector = format!("{SOURCE_LABEL}={ENABLED}");
    Controller::new(pvcs, watcher::Config::default().labels(&selector))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            |pvc, ctx: Arc<Context>| async move {
                ctx.metrics
                    .timed(CONTROLLER, reconcile(&pvc, &ctx), |_| {
                        ErrorCategory::Kubernetes
                    })
                    .await
            },
            |pvc, error, _| {
                tracing::warn!(pvc = %pvc.name_any(), %error, "PVC label sync failed");
                Action::requeue(Duration::from_secs(10))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// One PVC: find its Volume through its PV (ours only), then put the PVC's job labels on it.
pub async fn reconcile(pvc: &PersistentVolumeClaim, ctx: &Context) -> Result<Action, Error> {
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) else {
        // Not bound yet: binding changes the PVC, which wakes this again.
        return Ok(Action::await_change());
    };
    let pv = Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(pv_name)
        .await?;
    let Some(csi) = pv.and_then(|pv| pv.spec.and_then(|s| s.csi)) else {
        return Ok(Action::await_change());
    };
    if csi.driver != ctx.config.csi_driver_name {
        return Ok(Action::await_change());
    }
    let volumes: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    let Some(volume) = volumes.get_opt(&csi.volume_handle).await? else {
        return Ok(Action::requeue(RESYNC));
    };
    let changes = propagate_pvc_labels(pvc.labels(), volume.labels());
    if changes.is_empty() {
        return Ok(Action::requeue(RESYNC));
    }
    let mut labels = serde_json::Map::new();
    for (key, value) in &changes.set {
        labels.insert(key.clone(), value.clone().into());
    }
    for key in &changes.remove {
        labels.insert(key.clone(), serde_json::Value::Null);
    }
    let patch = serde_json::json!({"metadata": {"labels": labels}});
    volumes
        .patch(
            &volume.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let describe = |keys: Vec<&String>| {
        keys.iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut note = format!(
        "recurring-job labels from PVC {}/{}",
        pvc.namespace().unwrap_or_default(),
        pvc.name_any()
    );
    if !changes.set.is_empty() {
        note.push_str(&format!("; set {}", describe(changes.set.keys().collect())));
    }
    if !changes.remove.is_empty() {
        note.push_str(&format!(
            "; removed {}",
            describe(changes.remove.iter().collect())
        ));
    }
    ctx.events.normal(&volume, "LabelsFromPVC", note).await;
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::json;

    use super::*;
    use crate::controllers::testing::{context, json_response};

    fn pvc(labels: serde_json::Value, volume_name: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "apps", "labels": labels},
            "spec": {"volumeName": volume_name},
        }))
        .expect("a PVC")
    }

    fn pv(name: &str, driver: &str, handle: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
               "spec": {"csi": {"driver": driver, "volumeHandle": handle}}})
    }

    #[tokio::test]
    async fn a_source_pvc_job_labels_are_mirrored_onto_its_volume() {
        let (ctx, mut server, events) = context();
        let script = tokio::spawn(async move {
            server
                .expect(Method::GET, "/api/v1/persistentvolumes/pvc-1")
                .await
                .respond(json_response(
                    StatusCode::OK,
                    pv("pvc-1", "driver.bulwark.io", "pvc-1"),
                ));
            server
                .expect(
                    Method::GET,
                    "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes/pvc-1",
                )
                .await
                .respond(json_response(
                    StatusCode::OK,
                    json!({"apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
                           "metadata": {"name": "pvc-1", "namespace": "bulwark-system",
                                        "labels": {"recurring-job.bulwark.io/old": "enabled",
                                                   "bulwark.io/created-by": "csi"}},
                           "spec": {"size": "1Mi"}}),
                ));
            let patch = server
                .expect(
                    Method::PATCH,
                    "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes/pvc-1",
                )
                .await;
            let body = patch.json();
            patch.respond(json_response(
                StatusCode::OK,
                json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
                "metadata": {"name": "pvc-1", "namespace": "bulwark-system"},
                "spec": {"size": "1Mi"}}),
            ));
            body
        });
        let claim = pvc(
            json!({"recurring-job.bulwark.io/source": "enabled",
                   "recurring-job-group.bulwark.io/nightly": "enabled",
                   "app": "db"}),
            Some("pvc-1"),
        );
        let action = reconcile(&claim, &ctx).await.expect("synced");
        assert_eq!(action, Action::requeue(RESYNC));
        let patch = script.await.expect("script");
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {
                "recurring-job-group.bulwark.io/nightly": "enabled",
                "recurring-job.bulwark.io/old": null,
            }}})
        );
        let events = events.lock().expect("events");
        assert_eq!(events.len(), 1);
        assert!(
            events[0].note.contains("from PVC apps/data; set recurring-job-group.bulwark.io/nightly; removed recurring-job.bulwark.io/old"),
            "{}",
            events[0].note
        );
    }

    #[tokio::test]
    async fn an_unbound_pvc_or_another_drivers_volume_is_left_alone() {
        let (ctx, mut server, _) = context();
        let unbound = pvc(json!({"recurring-job.bulwark.io/source": "enabled"}), None);
        assert_eq!(
            reconcile(&unbound, &ctx).await.expect("nothing to do"),
            Action::await_change()
        );
        let script = tokio::spawn(async move {
            server
                .expect(Method::GET, "/api/v1/persistentvolumes/pv-9")
                .await
                .respond(json_response(
                    StatusCode::OK,
                    pv("pv-9", "other.example.com", "x"),
                ));
        });
        let foreign = pvc(
            json!({"recurring-job.bulwark.io/source": "enabled"}),
            Some("pv-9"),
        );
        assert_eq!(
            reconcile(&foreign, &ctx).await.expect("not ours"),
            Action::await_change()
        );
        script.await.expect("script");
    }
}
