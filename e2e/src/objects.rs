//! The YAML a user would apply, as typed objects, and waiting for what they report.

use crd_types::backup::BackupState;
use crd_types::volume::VolumeState;
use crd_types::{Backup, BackupTarget, Snapshot, Volume};
use serde::de::DeserializeOwned;

/// Label on every object a scenario creates: in deployed mode (the operator's own namespace)
/// the harness deletes what carries it when the scenario ends.
pub const E2E_LABEL: &str = "bulwark.io/e2e";

fn parse<T: DeserializeOwned>(json: serde_json::Value) -> T {
    serde_json::from_value(json).expect("the scenario's object is valid")
}

pub fn volume(name: &str, size: &str) -> Volume {
    parse(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}}, "spec": {"size": size}
    }))
}

pub fn restored_volume(name: &str, size: &str, backup_url: &str, standby: bool) -> Volume {
    parse(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
        "spec": {"size": size, "fromBackup": backup_url, "standby": standby}
    }))
}

pub fn snapshot(name: &str, volume: &str) -> Snapshot {
    parse(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}}, "spec": {"volume": volume}
    }))
}

pub fn backup(name: &str, volume: &str, snapshot: Option<&str>) -> Backup {
    parse(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}}, "spec": {"volume": volume, "snapshotName": snapshot}
    }))
}

pub fn backup_target(name: &str, url: &str, secret: Option<&str>) -> BackupTarget {
    parse(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
        "metadata": {"name": name, "labels": {E2E_LABEL: "true"}},
        "spec": {"backupTargetURL": url, "credentialSecret": secret, "pollInterval": "10s"}
    }))
}

pub fn is_ready(volume: &Volume) -> bool {
    volume.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready)
}

pub fn backup_state(backup: &Backup) -> Option<BackupState> {
    backup.status.as_ref().and_then(|s| s.state)
}

pub fn is_finished(backup: &Backup) -> bool {
    matches!(
        backup_state(backup),
        Some(BackupState::Completed | BackupState::Error)
    )
}

/// Deterministic test data: `len` bytes that differ with `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u64::from(seed)) as u8
        })
        .collect()
}
