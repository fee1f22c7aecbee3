//! Every manifest in `deploy/examples/` parses into its Rust type, passes `validate()` and the
//! CEL rules, and survives a YAML round trip unchanged.

use std::path::Path;

use crd_types::{
    BackingImage, Backup, BackupTarget, BackupVolume, RecurringJob, Snapshot, Validate, Volume,
};
use kube::CustomResourceExt;
use serde::{Serialize, de::DeserializeOwned};

fn check<K>(doc: serde_json::Value, file: &str) -> K
where
    K: DeserializeOwned + Serialize + CustomResourceExt + Validate + PartialEq + std::fmt::Debug,
{
    let object: K = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
    if let Err(errors) = object.validate() {
        panic!("{file}: {errors}");
    }
    if let Err(errors) = kube::core::cel::validate_cel(&object) {
        panic!("{file}: CEL: {errors:?}");
    }
    let yaml = serde_saphyr::to_string(&object).expect("serializes");
    let again: K = serde_saphyr::from_str(&yaml).expect("reads back");
    assert_eq!(again, object, "{file}: YAML round trip");
    object
}

#[test]
fn every_example_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut kinds = std::collections::BTreeSet::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/examples exists")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("readable");
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!docs.is_empty(), "{file} holds no manifest");
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "Volume" => drop(check::<Volume>(doc, &file)),
                "Snapshot" => drop(check::<Snapshot>(doc, &file)),
                "Backup" => drop(check::<Backup>(doc, &file)),
                "BackupVolume" => drop(check::<BackupVolume>(doc, &file)),
                "BackupTarget" => drop(check::<BackupTarget>(doc, &file)),
                "BackingImage" => drop(check::<BackingImage>(doc, &file)),
                "RecurringJob" => drop(check::<RecurringJob>(doc, &file)),
                "Secret" => drop(
                    serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(doc)
                        .expect("Secret"),
                ),
                // Kubernetes kinds for the CSI driver: their parameters are checked by
                // operator/tests/manifests.rs, which can read them as the driver does.
                "StorageClass" | "VolumeSnapshotClass" => {
                    assert_eq!(
                        doc.get("provisioner").or(doc.get("driver")),
                        Some(&serde_json::json!("driver.bulwark.io")),
                        "{file}: another driver"
                    );
                }
                "PersistentVolumeClaim" => drop(
                    serde_json::from_value::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
                        doc,
                    )
                    .expect("PersistentVolumeClaim"),
                ),
                "VolumeSnapshot" => {
                    assert!(doc["spec"]["source"].is_object(), "{file}: no source");
                }
                other => panic!("{file}: unexpected kind {other:?}"),
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "Volume",
        "Snapshot",
        "Backup",
        "BackupVolume",
        "BackupTarget",
        "BackingImage",
        "RecurringJob",
    ] {
        assert!(kinds.contains(kind), "no example of {kind}");
    }
}

#[test]
fn dr_volume_example_is_a_standby_following_a_backup() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/dr-volume.yaml");
    let volume: Volume =
        serde_saphyr::from_str(&std::fs::read_to_string(dir).expect("exists")).expect("parses");
    assert!(volume.spec.standby);
    assert!(
        volume
            .spec
            .from_backup
            .as_deref()
            .is_some_and(|u| u.contains("backup=") && u.contains("volume="))
    );
    assert_eq!(volume.spec.backup_target_name, "default");
}
