//! Metrics of our objects as their status says (volume size, state, last backup; snapshot
//! size; backup state and sizes), rebuilt from the caches on every refresh so the series of
//! deleted objects disappear with them.

use std::sync::Arc;
use std::time::Duration;

use crd_types::{BackingImage, Backup, Snapshot, Volume};
use kube::ResourceExt;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::metrics::{Metrics, backing_image_state_value, volume_state_value};

/// How often the series are rebuilt; Prometheus usually scrapes every 15–60 s.
const REFRESH: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        // The caches hold only the operator's namespace.
        let caches = &ctx.caches;
        let (volumes, snapshots) = (caches.volumes.state(), caches.snapshots.state());
        let (backups, images) = (caches.backups.state(), caches.backing_images.state());
        refresh(&ctx.metrics, &volumes, &snapshots, &backups);
        refresh_images(&ctx.metrics, &images);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Replace every object series with what these objects say.
pub fn refresh(
    metrics: &Metrics,
    volumes: &[Arc<Volume>],
    snapshots: &[Arc<Snapshot>],
    backups: &[Arc<Backup>],
) {
    metrics.volume_capacity.reset();
    metrics.volume_actual_size.reset();
    metrics.volume_state.reset();
    metrics.volume_last_backup.reset();
    metrics.snapshot_size.reset();
    metrics.backup_state.reset();
    metrics.backup_size.reset();
    metrics.backup_uploaded.reset();
    for volume in volumes {
        let name = volume.name_any();
        let labels = [name.as_str()];
        if let Some(size) = volume.spec.size_bytes() {
            metrics
                .volume_capacity
                .with_label_values(&labels)
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        let Some(status) = &volume.status else {
            continue;
        };
        if let Some(actual) = status.actual_size {
            metrics
                .volume_actual_size
                .with_label_values(&labels)
                .set(actual);
        }
        if let Some(state) = status.state {
            metrics
                .volume_state
                .with_label_values(&labels)
                .set(volume_state_value(state));
        }
        if let Some(at) = &status.last_backup_at {
            metrics
                .volume_last_backup
                .with_label_values(&labels)
                .set(at.0.as_second());
        }
    }
    for snapshot in snapshots {
        if let Some(size) = snapshot.status.as_ref().and_then(|s| s.size) {
            metrics
                .snapshot_size
                .with_label_values(&[snapshot.spec.volume.as_str(), &snapshot.name_any()])
                .set(size);
        }
    }
    for backup in backups {
        let name = backup.name_any();
        let labels = [backup.spec.volume.as_str(), name.as_str()];
        let Some(status) = &backup.status else {
            continue;
        };
        if let Some(state) = status.state {
            metrics
                .backup_state
                .with_label_values(&labels)
                .set(state.metric_value());
        }
        if let Some(size) = status.size {
            metrics.backup_size.with_label_values(&labels).set(size);
        }
        if let Some(uploaded) = status.newly_uploaded_data_size {
            metrics
                .backup_uploaded
                .with_label_values(&labels)
                .set(uploaded);
        }
    }
}

/// Replace the backing-image series with what these images say.
pub fn refresh_images(metrics: &Metrics, images: &[Arc<BackingImage>]) {
    metrics.backing_image_state.reset();
    for image in images {
        if let Some(state) = image.status.as_ref().and_then(|s| s.state) {
            metrics
                .backing_image_state
                .with_label_values(&[image.name_any().as_str()])
                .set(backing_image_state_value(state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(json).expect("valid object"))
    }

    #[test]
    fn series_follow_the_objects_and_vanish_with_them() {
        let metrics = Metrics::new().expect("metrics");
        let volume: Arc<Volume> = parse(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "vol-1", "namespace": "bulwark-system"},
            "spec": {"size": "1Gi"},
            "status": {"state": "Ready", "actualSize": 4096, "lastBackupAt": "2026-11-27T10:00:00Z"}
        }));
        let snapshot: Arc<Snapshot> = parse(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
            "metadata": {"name": "snap-1", "namespace": "bulwark-system"},
            "spec": {"volume": "vol-1"}, "status": {"size": 8192}
        }));
        let backup: Arc<Backup> = parse(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
            "metadata": {"name": "backup-1", "namespace": "bulwark-system"},
            "spec": {"volume": "vol-1"},
            "status": {"state": "Completed", "size": 2097152, "newlyUploadedDataSize": 1000}
        }));
        refresh(&metrics, &[volume], &[snapshot], &[backup]);
        let text = metrics.render();
        for line in [
            "bulwark_volume_capacity_bytes{volume=\"vol-1\"} 1073741824",
            "bulwark_volume_actual_size_bytes{volume=\"vol-1\"} 4096",
            "bulwark_volume_state{volume=\"vol-1\"} 4",
            "bulwark_volume_last_backup_timestamp_seconds{volume=\"vol-1\"} 1795773600",
            "bulwark_snapshot_size_bytes{snapshot=\"snap-1\",volume=\"vol-1\"} 8192",
            "bulwark_backup_state{backup=\"backup-1\",volume=\"vol-1\"} 3",
            "bulwark_backup_size_bytes{backup=\"backup-1\",volume=\"vol-1\"} 2097152",
            "bulwark_backup_uploaded_bytes{backup=\"backup-1\",volume=\"vol-1\"} 1000",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        refresh(&metrics, &[], &[], &[]);
        let text = metrics.render();
        assert!(
            !text.contains("vol-1"),
            "series of deleted objects remain:\n{text}"
        );
    }
}
