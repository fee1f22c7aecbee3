//! Metrics of our objects as their status says (volume size, state, last backup; the bytes of
//! a volume's snapshots; the state and size of its latest backup), rebuilt from the caches on
//! every refresh so the series of deleted objects disappear with them. Series are per volume,
//! never per snapshot or backup: a volume accumulates thousands of those.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crd_types::backup::BackupState;
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

/// Replace every object series with what these objects say. Snapshots and backups are
/// summarised per volume (their names are unbounded): the bytes of all of a volume's
/// snapshots, the state of its latest backup and the size of its latest completed one; only
/// for volumes that exist, so the series of a deleted volume go with it.
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
    let mut live = BTreeSet::new();
    for volume in volumes {
        let name = volume.name_any();
        let labels = [name.as_str()];
        if let Some(size) = volume.spec.size_bytes() {
            metrics
                .volume_capacity
                .with_label_values(&labels)
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
        if let Some(status) = &volume.status {
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
        live.insert(name);
    }
    let mut snapshot_bytes: BTreeMap<&str, i64> = BTreeMap::new();
    for snapshot in snapshots {
        let volume = snapshot.spec.volume.as_str();
        if let Some(size) = snapshot.status.as_ref().and_then(|s| s.size)
            && live.contains(volume)
        {
            let total = snapshot_bytes.entry(volume).or_default();
            *total = total.saturating_add(size);
        }
    }
    for (volume, bytes) in snapshot_bytes {
        metrics
            .snapshot_size
            .with_label_values(&[volume])
            .set(bytes);
    }
    let (latest, latest_completed) = latest_backups(backups, &live);
    for (volume, backup) in latest {
        if let Some(state) = backup.status.as_ref().and_then(|s| s.state) {
            metrics
                .backup_state
                .with_label_values(&[volume])
                .set(state.metric_value());
        }
    }
    for (volume, backup) in latest_completed {
        if let Some(size) = backup.status.as_ref().and_then(|s| s.size) {
            metrics.backup_size.with_label_values(&[volume]).set(size);
        }
    }
}

/// When a backup was taken: its snapshot's time once known, else when the object was created
/// (a backup being claimed); the name breaks ties.
fn taken(backup: &Backup) -> (Option<jiff::Timestamp>, &str) {
    let at = backup
        .status
        .as_ref()
        .and_then(|s| s.snapshot_created_at.as_ref())
        .or(backup.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    (at, backup.metadata.name.as_deref().unwrap_or_default())
}

/// Per existing volume: its latest backup (any state) and its latest completed one.
fn latest_backups<'a>(
    backups: &'a [Arc<Backup>],
    live: &BTreeSet<String>,
) -> (BTreeMap<&'a str, &'a Backup>, BTreeMap<&'a str, &'a Backup>) {
    let mut latest: BTreeMap<&str, &Backup> = BTreeMap::new();
    let mut completed: BTreeMap<&str, &Backup> = BTreeMap::new();
    let newer = |candidate: &Backup, held: Option<&&Backup>| {
        held.is_none_or(|held| taken(candidate) > taken(held))
    };
    for backup in backups {
        let volume = backup.spec.volume.as_str();
        if !live.contains(volume) {
            continue;
        }
        if newer(backup, latest.get(volume)) {
            latest.insert(volume, backup);
        }
        let done = backup.status.as_ref().and_then(|s| s.state) == Some(BackupState::Completed);
        if done && newer(backup, completed.get(volume)) {
            completed.insert(volume, backup);
        }
    }
    (latest, completed)
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
            "bulwark_snapshot_size_bytes{volume=\"vol-1\"} 8192",
            "bulwark_backup_state{volume=\"vol-1\"} 3",
            "bulwark_backup_size_bytes{volume=\"vol-1\"} 2097152",
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

    /// Series per (family, volume) in the gathered registry, and every label name seen.
    fn series(metrics: &Metrics) -> (BTreeMap<(String, String), usize>, BTreeSet<String>) {
        let mut count = BTreeMap::new();
        let mut names = BTreeSet::new();
        for family in metrics.registry.gather() {
            for metric in family.get_metric() {
                let mut volume = String::new();
                for label in metric.get_label() {
                    names.insert(label.name().to_owned());
                    if label.name() == "volume" {
                        volume = label.value().to_owned();
                    }
                }
                *count.entry((family.name().to_owned(), volume)).or_default() += 1;
            }
        }
        (count, names)
    }

    #[test]
    fn thousands_of_backups_and_snapshots_make_one_series_per_volume() {
        let metrics = Metrics::new().expect("metrics");
        let volume = |name: &str| -> Arc<Volume> {
            parse(serde_json::json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
                "metadata": {"name": name, "namespace": "bulwark-system"},
                "spec": {"size": "1Gi"}, "status": {"state": "Ready"}
            }))
        };
        let backup = |volume: &str, n: u32, state: &str, size: i64| -> Arc<Backup> {
            parse(serde_json::json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
                "metadata": {"name": format!("{volume}-backup-{n:05}"), "namespace": "bulwark-system",
                             "creationTimestamp": "2026-11-27T00:00:00Z"},
                "spec": {"volume": volume},
                "status": {"state": state, "size": size,
                           "snapshotCreatedAt": format!("2026-11-27T{:02}:{:02}:{:02}Z", n / 3600, n / 60 % 60, n % 60)}
            }))
        };
        let mut backups = Vec::new();
        // vol-1: 10,000 completed backups, listed newest first, then an older failed one and
        // the newest, still running.
        for n in (0..10_000).rev() {
            backups.push(backup("vol-1", n + 10, "Completed", i64::from(n) + 1));
        }
        backups.push(backup("vol-1", 5, "Error", 0));
        backups.push(backup("vol-1", 20_000, "InProgress", 0));
        // vol-2: one completed backup that a newer failed one follows.
        backups.push(backup("vol-2", 1, "Completed", 4096));
        backups.push(backup("vol-2", 2, "Error", 0));
        // Backups of a volume that no longer exists make no series.
        backups.extend((0..50).map(|n| backup("gone", n, "Completed", 1)));
        let snapshots: Vec<Arc<Snapshot>> = (0..5_000)
            .map(|n| {
                parse(serde_json::json!({
                    "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
                    "metadata": {"name": format!("snap-{n}"), "namespace": "bulwark-system"},
                    "spec": {"volume": if n % 2 == 0 { "vol-1" } else { "gone" }},
                    "status": {"size": 10}
                }))
            })
            .collect();
        refresh(
            &metrics,
            &[volume("vol-1"), volume("vol-2")],
            &snapshots,
            &backups,
        );
        let (count, labels) = series(&metrics);
        for family in [
            "bulwark_backup_state",
            "bulwark_backup_size_bytes",
            "bulwark_volume_state",
        ] {
            for volume in ["vol-1", "vol-2"] {
                assert_eq!(
                    count.get(&(family.to_owned(), volume.to_owned())),
                    Some(&1),
                    "{family}{{volume={volume}}}: {count:?}"
                );
            }
        }
        assert_eq!(
            count.get(&("bulwark_snapshot_size_bytes".to_owned(), "vol-1".to_owned())),
            Some(&1)
        );
        assert!(
            !count.keys().any(|(_, volume)| volume == "gone"),
            "series of a deleted volume: {count:?}"
        );
        assert!(
            !labels.contains("backup") && !labels.contains("snapshot"),
            "labels per backup or snapshot: {labels:?}"
        );
        // The latest backup's state, the latest completed one's size, all snapshots' bytes.
        let text = metrics.render();
        for line in [
            "bulwark_backup_state{volume=\"vol-1\"} 2",
            "bulwark_backup_size_bytes{volume=\"vol-1\"} 10000",
            "bulwark_backup_state{volume=\"vol-2\"} 4",
            "bulwark_backup_size_bytes{volume=\"vol-2\"} 4096",
            "bulwark_snapshot_size_bytes{volume=\"vol-1\"} 25000",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }
}
