//! Every admission rule, checked twice: by the CEL rules in the generated schema (evaluated
//! client-side with kube's CEL engine, as the API server would) and by the pure `validate()`.
//! Both must reject the same bad objects with the same message, and accept the good ones.

use crd_types::{
    BackingImage, Backup, BackupTarget, RecurringJob, Snapshot, Validate, Volume, backing_image,
    backup, backup_target, recurring_job, snapshot, volume,
};
use kube::CustomResourceExt;
use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

fn parse<K: DeserializeOwned>(yaml: &str) -> K {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("test YAML does not parse: {e}\n{yaml}"))
}

fn cel_messages<K: CustomResourceExt + Serialize>(object: &K, old: Option<&K>) -> Vec<String> {
    let result = match old {
        None => kube::core::cel::validate_cel(object),
        Some(old) => kube::core::cel::validate_cel_update(object, old),
    };
    match result {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[track_caller]
fn assert_rejected<K>(yaml: &str, field: &str, message: &str)
where
    K: DeserializeOwned + CustomResourceExt + Serialize + Validate,
{
    let object: K = parse(yaml);
    let errors = object
        .validate()
        .expect_err("validate() accepts an invalid object");
    assert!(
        errors
            .0
            .iter()
            .any(|e| e.field == field && e.message == message),
        "validate() did not report {field}: {message}\ngot: {errors}"
    );
    let cel = cel_messages(&object, None);
    assert!(
        cel.iter().any(|m| m == message),
        "CEL did not report {message:?}\ngot: {cel:?}\n{yaml}"
    );
}

#[track_caller]
fn assert_accepted<K>(yaml: &str)
where
    K: DeserializeOwned + CustomResourceExt + Serialize + Validate,
{
    let object: K = parse(yaml);
    if let Err(errors) = object.validate() {
        panic!("validate() rejects a valid object: {errors}\n{yaml}");
    }
    let cel = cel_messages(&object, None);
    assert!(
        cel.is_empty(),
        "CEL rejects a valid object: {cel:?}\n{yaml}"
    );
}

#[track_caller]
fn assert_update_rejected<K>(old: &str, new: &str, message: &str)
where
    K: DeserializeOwned + CustomResourceExt + Serialize + Validate,
{
    let (old, new): (K, K) = (parse(old), parse(new));
    assert!(new.validate().is_ok(), "the new object is valid on its own");
    let errors = new
        .validate_update(&old)
        .expect_err("validate_update() accepts the change");
    assert!(
        errors.0.iter().any(|e| e.message == message),
        "got: {errors}"
    );
    let cel = cel_messages(&new, Some(&old));
    assert!(
        cel.iter().any(|m| m == message),
        "CEL did not report {message:?}: {cel:?}"
    );
}

#[track_caller]
fn assert_update_accepted<K>(old: &str, new: &str)
where
    K: DeserializeOwned + CustomResourceExt + Serialize + Validate,
{
    let (old, new): (K, K) = (parse(old), parse(new));
    if let Err(errors) = new.validate_update(&old) {
        panic!("validate_update() rejects an allowed change: {errors}");
    }
    let cel = cel_messages(&new, Some(&old));
    assert!(cel.is_empty(), "CEL rejects an allowed change: {cel:?}");
}

fn volume(spec: &str) -> String {
    format!("apiVersion: bulwark.io/v1beta1\nkind: Volume\nmetadata:\n  name: vol-1\nspec:\n{spec}")
}

#[test]
fn volume_rules() {
    use volume::rules::*;
    assert_accepted::<Volume>(&volume("  size: 10Gi\n"));
    assert_accepted::<Volume>(&volume(
        "  size: 1Gi\n  standby: true\n  fromBackup: s3://b@us-east-1/p/?backup=backup-1&volume=vol-1\n",
    ));
    assert_accepted::<Volume>(&volume(
        "  size: 1Gi\n  fromBackup: nfs://svc:/opt/bs?backup=b&nfsOptions=soft%2Ctimeo%3D150&volume=v\n",
    ));
    assert_accepted::<Volume>(&volume("  size: 1Gi\n  dataSource: snap://vol-0/snap-1\n"));
    // Handles of the CSI snapshot API (VolumeSnapshotContents) name a backup or an image.
    for handle in [
        "bak://vol-0/backup-0123456789abcdef",
        "bs://vol-0/backup-0123456789abcdef",
        "bi://backing?backingImage=img&backingImageDataSourceType=export-from-volume&export-type=raw&volume-name=v",
    ] {
        assert_accepted::<Volume>(&volume(&format!(
            "  size: 1Gi\n  dataSource: \"{handle}\"\n"
        )));
    }
    assert_accepted::<Volume>(&volume(
        "  size: 1Gi\n  dataSource: vol://vol-0\n  backupBlockSize: 16Mi\n",
    ));
    for bad in ["0", "10GB", "1.5Gi", "-1Gi", "ten", "010Gi"] {
        assert_rejected::<Volume>(
            &volume(&format!("  size: \"{bad}\"\n")),
            "spec.size",
            SIZE_MSG,
        );
    }
    assert_rejected::<Volume>(
        &volume("  size: 1Gi\n  standby: true\n"),
        "spec",
        STANDBY_NEEDS_BACKUP_MSG,
    );
    for bad in [
        "s3://b@r/p/",
        "http://x/?backup=a&volume=b",
        "s3://b@r/p/?backup=&volume=v",
        "s3://b@r/p/?backup=b",
    ] {
        let yaml = volume(&format!("  size: 1Gi\n  fromBackup: \"{bad}\"\n"));
        assert_rejected::<Volume>(&yaml, "spec.fromBackup", FROM_BACKUP_MSG);
    }
    for bad in [
        "snap://vol-0",
        "snap://vol-0/s/x",
        "vol://",
        "bak://v",
        "bs://v/b/c",
        "bi://backing",
        "bi://other?backingImage=x",
        "vol://a/b",
    ] {
        let yaml = volume(&format!("  size: 1Gi\n  dataSource: \"{bad}\"\n"));
        assert_rejected::<Volume>(&yaml, "spec.dataSource", DATA_SOURCE_MSG);
    }
    assert_rejected::<Volume>(
        &volume(
            "  size: 1Gi\n  dataSource: vol://a\n  fromBackup: s3://b@r/p/?backup=x&volume=y\n",
        ),
        "spec",
        ONE_SOURCE_MSG,
    );
    assert_rejected::<Volume>(
        &volume("  size: 1Gi\n  backupBlockSize: 4Mi\n"),
        "spec.backupBlockSize",
        BLOCK_SIZE_MSG,
    );
    let long_name = format!(
        "apiVersion: bulwark.io/v1beta1\nkind: Volume\nmetadata:\n  name: {}\nspec:\n  size: 1Gi\n",
        "v".repeat(64)
    );
    assert_rejected::<Volume>(&long_name, "metadata.name", NAME_LEN_MSG);
}

#[test]
fn volume_immutable_fields() {
    use volume::rules::*;
    let with_image = volume("  size: 1Gi\n  backingImage: parrot\n");
    let other_image = volume("  size: 1Gi\n  backingImage: other\n");
    let no_image = volume("  size: 1Gi\n");
    assert_update_rejected::<Volume>(&with_image, &other_image, BACKING_IMAGE_IMMUTABLE_MSG);
    assert_update_rejected::<Volume>(&with_image, &no_image, BACKING_IMAGE_IMMUTABLE_MSG);
    assert_update_rejected::<Volume>(&no_image, &with_image, BACKING_IMAGE_IMMUTABLE_MSG);
    let block_2 = volume("  size: 1Gi\n  backupBlockSize: 2Mi\n");
    let block_16 = volume("  size: 1Gi\n  backupBlockSize: 16Mi\n");
    assert_update_rejected::<Volume>(&block_2, &block_16, BLOCK_SIZE_IMMUTABLE_MSG);
    assert_update_accepted::<Volume>(&no_image, &block_16);
    assert_update_accepted::<Volume>(&no_image, &volume("  size: 2Gi\n"));
    // Shrinking is refused by validate_update (the API server cannot compare quantities).
    let grown: Volume = parse(&volume("  size: 2Gi\n"));
    let shrunk: Volume = parse(&no_image);
    let errors = shrunk
        .validate_update(&grown)
        .expect_err("shrinking is refused");
    assert!(errors.fields().any(|f| f == "spec.size"));
}

fn target(spec: &str) -> String {
    format!(
        "apiVersion: bulwark.io/v1beta1\nkind: BackupTarget\nmetadata:\n  name: default\nspec:\n{spec}"
    )
}

#[test]
fn backup_target_rules() {
    use backup_target::rules::*;
    for good in [
        "s3://backups@us-east-1/bulwark/",
        "s3://backups/",
        "nfs://nfs.svc:/exports/backups?nfsOptions=soft,timeo=150",
        "file:///var/lib/bulwark/backups",
        "",
    ] {
        assert_accepted::<BackupTarget>(&target(&format!("  backupTargetURL: \"{good}\"\n")));
    }
    let cases = [
        ("ftp://host/path", SCHEME_MSG),
        ("/var/backups", SCHEME_MSG),
        ("s3://bucket@region/pa$th/", PATH_CHARS_MSG),
        ("file:///a,b", PATH_CHARS_MSG),
        ("s3://bucket@region", S3_SHAPE_MSG),
        ("s3://@region/p/", S3_SHAPE_MSG),
        ("nfs://host/path", NFS_SHAPE_MSG),
        ("file://relative/path", FILE_SHAPE_MSG),
    ];
    for (url, message) in cases {
        let yaml = target(&format!("  backupTargetURL: \"{url}\"\n"));
        assert_rejected::<BackupTarget>(&yaml, "spec.backupTargetURL", message);
    }
    for good in ["300s", "5m", "1h30m", "0"] {
        assert_accepted::<BackupTarget>(&target(&format!(
            "  backupTargetURL: \"\"\n  pollInterval: \"{good}\"\n"
        )));
    }
    for bad in ["5", "five minutes", "-5m", "5d"] {
        let yaml = target(&format!(
            "  backupTargetURL: \"\"\n  pollInterval: \"{bad}\"\n"
        ));
        assert_rejected::<BackupTarget>(&yaml, "spec.pollInterval", POLL_INTERVAL_MSG);
    }
    let parsed: BackupTarget = parse(&target("  backupTargetURL: \"\"\n"));
    assert_eq!(parsed.spec.poll_interval, "300s", "default poll interval");
    assert_eq!(
        parsed.spec.poll_interval(),
        Some(std::time::Duration::from_secs(300))
    );
}

fn job(spec: &str) -> String {
    format!(
        "apiVersion: bulwark.io/v1beta1\nkind: RecurringJob\nmetadata:\n  name: daily\nspec:\n{spec}"
    )
}

#[test]
fn recurring_job_rules() {
    use recurring_job::rules::*;
    for cron in [
        "0 2 * * *",
        "*/15 * * * MON-FRI",
        "@daily",
        "@every 90m",
        "0 0 1 JAN,JUL *",
    ] {
        assert_accepted::<RecurringJob>(&job(&format!(
            "  task: backup\n  cron: \"{cron}\"\n  retain: 3\n"
        )));
    }
    for cron in [
        "0 2 * *",
        "* * * * * *",
        "@fortnightly",
        "@every",
        "",
        "0  2 * * * *",
    ] {
        let yaml = job(&format!(
            "  task: backup\n  cron: \"{cron}\"\n  retain: 3\n"
        ));
        assert_rejected::<RecurringJob>(&yaml, "spec.cron", CRON_MSG);
    }
    for task in [
        "snapshot",
        "snapshot-force-create",
        "backup",
        "backup-force-create",
    ] {
        let yaml = job(&format!(
            "  task: {task}\n  cron: \"@daily\"\n  retain: 0\n"
        ));
        assert_rejected::<RecurringJob>(&yaml, "spec.retain", RETAIN_MSG);
    }
    assert_accepted::<RecurringJob>(&job("  task: snapshot-cleanup\n  cron: \"@daily\"\n"));
    let tz =
        job("  task: snapshot\n  cron: \"@daily\"\n  retain: 1\n  timeZone: \"Europe Berlin\"\n");
    assert_rejected::<RecurringJob>(&tz, "spec.timeZone", TIME_ZONE_MSG);
    let tz = job(
        "  task: snapshot\n  cron: \"@daily\"\n  retain: 1\n  timeZone: America/Argentina/Buenos_Aires\n",
    );
    assert_accepted::<RecurringJob>(&tz);
    let age = job("  task: snapshot\n  cron: \"@daily\"\n  retain: 1\n  retainAge: 7d\n");
    assert_rejected::<RecurringJob>(&age, "spec.retainAge", RETAIN_AGE_MSG);
    let groups =
        job("  task: snapshot\n  cron: \"@daily\"\n  retain: 1\n  groups: [\"ok\", \"not ok\"]\n");
    assert_rejected::<RecurringJob>(&groups, "spec.groups", GROUP_MSG);
    let params = job(
        "  task: backup\n  cron: \"@daily\"\n  retain: 1\n  parameters:\n    min-changed-byte: 1Mi\n",
    );
    assert_rejected::<RecurringJob>(&params, "spec.parameters", PARAMETERS_MSG);
    let name = job("  name: other\n  task: snapshot\n  cron: \"@daily\"\n  retain: 1\n");
    assert_rejected::<RecurringJob>(&name, "metadata.name", NAME_MSG);
    let parsed: RecurringJob = parse(&job("  task: snapshot\n  cron: \"@daily\"\n  retain: 1\n"));
    assert_eq!(
        (parsed.spec.concurrency, parsed.spec.time_zone.as_str()),
        (10, "UTC"),
        "defaults"
    );
    // An unknown task is refused when the object is read (the schema's enum does the same).
    let unknown: Result<RecurringJob, _> = serde_saphyr::from_str(&job(
        "  task: weekly-backup\n  cron: \"@daily\"\n  retain: 1\n",
    ));
    assert!(unknown.is_err());
}

fn image(spec: &str) -> String {
    format!(
        "apiVersion: bulwark.io/v1beta1\nkind: BackingImage\nmetadata:\n  name: parrot\nspec:\n{spec}"
    )
}

#[test]
fn backing_image_rules() {
    use backing_image::rules::*;
    let sum = "bd79ab9e6d45abf4f3f0adf552a868074dd235c4698ce7258d521160e0ad79ffe555b94e7d4007add6e1a25f4526885eb25c53ce38f7d344dd4925b9f2cb5d3b";
    assert_accepted::<BackingImage>(&image(&format!(
        "  sourceType: download\n  sourceParameters:\n    url: https://example.com/parrot.qcow2\n  checksum: {sum}\n"
    )));
    assert_accepted::<BackingImage>(&image(
        "  sourceType: export-from-volume\n  sourceParameters:\n    volume-name: vol-1\n    export-type: qcow2\n",
    ));
    assert_accepted::<BackingImage>(&image("  sourceType: upload\n"));
    let upper = sum.to_uppercase();
    for bad in [&sum[..127], upper.as_str(), "sha512:abc"] {
        let yaml = image(&format!("  sourceType: upload\n  checksum: \"{bad}\"\n"));
        assert_rejected::<BackingImage>(&yaml, "spec.checksum", CHECKSUM_MSG);
    }
    for bad in ["ftp://example.com/x", "example.com/x", "https:///x"] {
        let yaml = image(&format!(
            "  sourceType: download\n  sourceParameters:\n    url: \"{bad}\"\n"
        ));
        assert_rejected::<BackingImage>(&yaml, "spec.sourceParameters", DOWNLOAD_URL_MSG);
    }
    assert_rejected::<BackingImage>(
        &image("  sourceType: download\n"),
        "spec.sourceParameters",
        DOWNLOAD_URL_MSG,
    );
    assert_rejected::<BackingImage>(
        &image("  sourceType: export-from-volume\n  sourceParameters:\n    export-type: raw\n"),
        "spec.sourceParameters",
        EXPORT_VOLUME_MSG,
    );
    assert_rejected::<BackingImage>(
        &image(
            "  sourceType: export-from-volume\n  sourceParameters:\n    volume-name: v\n    export-type: vmdk\n",
        ),
        "spec.sourceParameters",
        EXPORT_TYPE_MSG,
    );
    assert_rejected::<BackingImage>(
        &image("  sourceType: restore\n"),
        "spec.sourceParameters",
        RESTORE_URL_MSG,
    );
    assert_rejected::<BackingImage>(
        &image("  sourceType: clone\n"),
        "spec.sourceParameters",
        CLONE_SOURCE_MSG,
    );
    let download =
        image("  sourceType: download\n  sourceParameters:\n    url: https://example.com/a\n");
    let moved =
        image("  sourceType: download\n  sourceParameters:\n    url: https://example.com/b\n");
    assert_update_rejected::<BackingImage>(&download, &moved, SOURCE_IMMUTABLE_MSG);
    let with_sum = image(&format!("  sourceType: upload\n  checksum: {sum}\n"));
    let other_sum = image(&format!(
        "  sourceType: upload\n  checksum: {}\n",
        "0".repeat(128)
    ));
    assert_update_rejected::<BackingImage>(&with_sum, &other_sum, CHECKSUM_IMMUTABLE_MSG);
    assert_update_accepted::<BackingImage>(&image("  sourceType: upload\n"), &with_sum);
}

#[test]
fn snapshot_and_backup_rules() {
    let snap = |v: &str| {
        format!(
            "apiVersion: bulwark.io/v1beta1\nkind: Snapshot\nmetadata:\n  name: s\nspec:\n  volume: \"{v}\"\n"
        )
    };
    assert_accepted::<Snapshot>(&snap("vol-1"));
    assert_rejected::<Snapshot>(&snap(""), "spec.volume", snapshot::rules::VOLUME_MSG);
    assert_update_rejected::<Snapshot>(
        &snap("vol-1"),
        &snap("vol-2"),
        snapshot::rules::VOLUME_IMMUTABLE_MSG,
    );
    let bak = |v: &str, mode: &str| {
        format!(
            "apiVersion: bulwark.io/v1beta1\nkind: Backup\nmetadata:\n  name: b\nspec:\n  volume: \"{v}\"\n  backupMode: {mode}\n"
        )
    };
    assert_accepted::<Backup>(&bak("vol-1", "full"));
    assert_rejected::<Backup>(&bak("", "full"), "spec.volume", backup::rules::VOLUME_MSG);
    assert_update_rejected::<Backup>(
        &bak("vol-1", "full"),
        &bak("vol-1", "incremental"),
        backup::rules::SPEC_IMMUTABLE_MSG,
    );
}

// The Rust mirror and the CEL rule agree on arbitrary input, not only on the hand-picked cases.
proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn cron_shape_agrees_with_cel(cron in "(@[a-z]{0,9}( [0-9a-z]{0,4})?|[0-9*/,A-Z-]{1,4}( {1,2}[0-9*/,A-Z-]{1,4}){3,5})") {
        let object: RecurringJob = parse(&job(&format!("  task: snapshot-cleanup\n  cron: \"{cron}\"\n")));
        let rust = object.validate().is_ok();
        let cel = cel_messages(&object, None).is_empty();
        prop_assert_eq!(rust, cel, "cron {:?}", cron);
    }

    #[test]
    fn target_url_agrees_with_cel(url in "(s3|nfs|file|ftp)://[a-z@:/$,?=]{0,16}") {
        let object: BackupTarget = parse(&target(&format!("  backupTargetURL: \"{url}\"\n")));
        let rust = object.validate().is_ok();
        let cel = cel_messages(&object, None).is_empty();
        prop_assert_eq!(rust, cel, "url {:?}", url);
    }

    #[test]
    fn size_agrees_with_cel(size in "[0-9.-]{0,4}(Ki|Mi|Gi|G|m|B)?") {
        let object: Volume = parse(&volume(&format!("  size: \"{size}\"\n")));
        let rust = object.validate().is_ok();
        let cel = cel_messages(&object, None).is_empty();
        prop_assert_eq!(rust, cel, "size {:?}", size);
    }

    #[test]
    fn data_source_agrees_with_cel(source in "(snap|vol|bak|bs|bi)://(backing[?])?[a-z/=]{0,8}") {
        let object: Volume = parse(&volume(&format!("  size: 1Gi\n  dataSource: \"{source}\"\n")));
        let rust = object.validate().is_ok();
        let cel = cel_messages(&object, None).is_empty();
        prop_assert_eq!(rust, cel, "dataSource {:?}", source);
    }
}
