//! Reconcile tests on the mock API server (exact requests and bodies), pure tests of the
//! handle checks and of `volume_source`, and one `#[ignore]`d test against a real cluster.

use super::*;
use crate::controllers::testing::{self, ApiServer, json_response, not_found};
use http::{Method, StatusCode};
use kube::runtime::reflector::{self, Store};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Instant;

const CONTENT: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/snapcontent-u1";
const CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";
const NS: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system";
const CREATED_AT: &str = "2026-11-27T10:00:00Z";
const GIB: i64 = 1 << 30;
const SUM_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SUM_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The server script's result; a script still waiting for a request the code never sent fails
/// the test instead of hanging it.
async fn finish<T>(script: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), script)
        .await
        .expect("the code under test sent every request the script expects")
        .expect("server script")
}

fn created_nanos() -> i64 {
    let at: jiff::Timestamp = CREATED_AT.parse().expect("a timestamp");
    i64::try_from(at.as_nanosecond()).expect("fits")
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn content(patch: Value) -> VolumeSnapshotContent {
    let mut base = json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "snapcontent-u1", "uid": "c-uid", "finalizers": [FINALIZER]},
        "spec": {
            "driver": "driver.bulwark.io", "deletionPolicy": "Retain", "source": {},
            "volumeSnapshotRef": {"kind": "VolumeSnapshot", "name": "vs-1", "namespace": "default", "uid": "u1"}
        }
    });
    merge(&mut base, patch);
    serde_json::from_value(base).expect("a content")
}

fn pre(handle: &str) -> VolumeSnapshotContent {
    content(json!({"spec": {"source": {"snapshotHandle": handle}}}))
}

fn dynamic(class: &str) -> VolumeSnapshotContent {
    content(
        json!({"spec": {"source": {"volumeHandle": "vol-1"}, "volumeSnapshotClassName": class}}),
    )
}

fn ours<K: DeserializeOwned>(kind: &str, name: &str, spec: Value, status: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": kind,
        "metadata": {"name": name, "namespace": "bulwark-system", "creationTimestamp": CREATED_AT},
        "spec": spec, "status": status
    }))
    .expect("a valid object")
}

fn volume(name: &str) -> Volume {
    ours("Volume", name, json!({"size": "1Gi"}), json!({}))
}

fn snapshot(name: &str, volume: &str, ready: bool) -> Snapshot {
    ours(
        "Snapshot",
        name,
        json!({"volume": volume}),
        json!({"readyToUse": ready, "creationTime": CREATED_AT, "size": 4096}),
    )
}

fn backup(name: &str, volume: &str, state: &str) -> Backup {
    ours(
        "Backup",
        name,
        json!({"volume": volume}),
        json!({
            "state": state, "volumeSize": 2 * GIB, "backupCreatedAt": CREATED_AT,
            "url": format!("s3://bucket@us-east-1/?backup={name}&volume={volume}"),
            "error": if state == "Error" { json!("upload refused") } else { Value::Null }
        }),
    )
}

fn backup_volume(volume: &str) -> BackupVolume {
    ours(
        "BackupVolume",
        &format!("{volume}-default"),
        json!({"backupTargetName": "default", "volumeName": volume}),
        json!({}),
    )
}

fn image(name: &str, spec: Value, status: Value) -> BackingImage {
    ours("BackingImage", name, spec, status)
}

fn download_image(checksum: &str, state: &str) -> BackingImage {
    image(
        "bi-1",
        json!({"sourceType": "download", "sourceParameters": {"url": "https://example.com/a.qcow2"}}),
        json!({"state": state, "size": 3 * GIB, "checksum": checksum, "readyAt": CREATED_AT}),
    )
}

/// Our objects, as the caches would hold them.
#[derive(Default)]
struct World {
    volumes: Vec<Volume>,
    snapshots: Vec<Snapshot>,
    backups: Vec<Backup>,
    backup_volumes: Vec<BackupVolume>,
    backing_images: Vec<BackingImage>,
}

fn store<K>(items: &[K]) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, mut writer) = reflector::store();
    for item in items {
        writer.apply_watcher_event(&watcher::Event::Apply(item.clone()));
    }
    store
}

impl World {
    fn caches(&self) -> Caches {
        Caches {
            volumes: store(&self.volumes),
            snapshots: store(&self.snapshots),
            backups: store(&self.backups),
            backup_volumes: store(&self.backup_volumes),
            backing_images: store(&self.backing_images),
            ..Caches::empty()
        }
    }
}

fn find<K: kube::Resource<DynamicType = ()> + Clone>(items: &[K], name: &str) -> Option<Arc<K>> {
    items
        .iter()
        .find(|i| i.meta().name.as_deref() == Some(name))
        .cloned()
        .map(Arc::new)
}

impl Objects for World {
    fn volume(&self, name: &str) -> Option<Arc<Volume>> {
        find(&self.volumes, name)
    }
    fn snapshot(&self, name: &str) -> Option<Arc<Snapshot>> {
        find(&self.snapshots, name)
    }
    fn backup(&self, name: &str) -> Option<Arc<Backup>> {
        find(&self.backups, name)
    }
    fn backup_volumes_of(&self, volume: &str) -> Vec<Arc<BackupVolume>> {
        self.backup_volumes
            .iter()
            .filter(|bv| bv.spec.volume_name == volume)
            .cloned()
            .map(Arc::new)
            .collect()
    }
    fn backing_image(&self, name: &str) -> Option<Arc<BackingImage>> {
        find(&self.backing_images, name)
    }
}

fn context(
    world: &World,
) -> (
    Context,
    ApiServer,
    Arc<std::sync::Mutex<Vec<crate::events::Published>>>,
) {
    let (mut ctx, server, events) = testing::context();
    ctx.caches = world.caches();
    (ctx, server, events)
}

fn events(list: &Arc<std::sync::Mutex<Vec<crate::events::Published>>>) -> Vec<(bool, String)> {
    list.lock()
        .expect("events")
        .iter()
        .map(|e| (e.warning, e.reason.clone()))
        .collect()
}

/// The next request must be the status apply of the content; its `status`, `error.time`
/// checked and removed so the rest can be compared exactly.
async fn expect_status(server: &mut ApiServer, reply: &VolumeSnapshotContent) -> Value {
    let patch = server
        .expect(Method::PATCH, &format!("{CONTENT}/status"))
        .await;
    assert!(
        patch
            .query
            .contains("fieldManager=bulwark-snapshot-content"),
        "{}",
        patch.query
    );
    assert!(patch.query.contains("force=true"), "{}", patch.query);
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body = patch.json();
    assert_eq!(body["apiVersion"], "snapshot.storage.k8s.io/v1");
    assert_eq!(body["kind"], "VolumeSnapshotContent");
    let mut status = body["status"].clone();
    if let Some(error) = status.get_mut("error").and_then(Value::as_object_mut) {
        let time = error.remove("time").expect("error.time is set");
        assert!(
            time.as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "{time}"
        );
    }
    patch.respond(json_response(
        StatusCode::OK,
        serde_json::to_value(reply).expect("json"),
    ));
    status
}

fn error_message(status: &Value) -> String {
    status["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Reconcile a pre-provisioned content with exactly one status apply; the applied status.
async fn pre_status(handle: &str, world: World) -> (Value, Action) {
    let (ctx, mut server, _events) = context(&world);
    let content = pre(handle);
    let reply = content.clone();
    let script = tokio::spawn(async move { expect_status(&mut server, &reply).await });
    let action = reconcile(&content, &ctx).await.expect("reconciled");
    (finish(script).await, action)
}

// ---------------------------------------------------------------- pre-provisioned

#[tokio::test]
async fn a_new_content_gets_the_finalizer_then_a_ready_snapshot_is_published() {
    let world = World {
        volumes: vec![volume("vol-1")],
        snapshots: vec![snapshot("snap-1", "vol-1", true)],
        ..World::default()
    };
    let (ctx, mut server, events_list) = context(&world);
    let fresh = content(json!({
        "metadata": {"finalizers": null},
        "spec": {"source": {"snapshotHandle": "snap://vol-1/snap-1"}}
    }));
    let reply = fresh.clone();
    let script = tokio::spawn(async move {
        let finalizer = server.expect(Method::PATCH, CONTENT).await;
        assert_eq!(
            finalizer.json(),
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["bulwark.io/snapshot-content"]}
            ])
        );
        finalizer.respond(json_response(
            StatusCode::OK,
            serde_json::to_value(&reply).expect("json"),
        ));
        expect_status(&mut server, &reply).await
    });
    let action = reconcile(&fresh, &ctx).await.expect("reconciled");
    let status = finish(script).await;
    assert_eq!(
        status,
        json!({
            "snapshotHandle": "snap://vol-1/snap-1", "readyToUse": true,
            "restoreSize": GIB, "creationTime": created_nanos()
        })
    );
    assert_eq!(action, Action::requeue(RECHECK_READY));
    assert_eq!(events(&events_list), vec![(false, "SnapshotReady".into())]);
}

/// The external snapshot-controller appends its bound-protection finalizer without looking, so
/// a content can list it twice; server-side apply then fails with 500 for as long as the object
/// stays so. The status must still be published: as a merge patch guarded by resourceVersion.
#[tokio::test]
async fn a_duplicated_foreign_finalizer_does_not_block_the_status() {
    let world = World {
        volumes: vec![volume("vol-1")],
        snapshots: vec![snapshot("snap-1", "vol-1", true)],
        ..World::default()
    };
    let (ctx, mut server, events_list) = context(&world);
    let bound = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
    let doubled = content(json!({
        "metadata": {"finalizers": [FINALIZER, bound, bound], "resourceVersion": "41"},
        "spec": {"source": {"snapshotHandle": "snap://vol-1/snap-1"}}
    }));
    let reply = doubled.clone();
    let script = tokio::spawn(async move {
        let apply = server
            .expect(Method::PATCH, &format!("{CONTENT}/status"))
            .await;
        assert_eq!(
            apply.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        apply.respond(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500,
                "message": format!(
                    "failed to create typed live object: .metadata.finalizers: duplicate entries for key [value=\"{bound}\"]"
                )
            }),
        ));
        server
            .expect(Method::GET, CONTENT)
            .await
            .respond(json_response(
                StatusCode::OK,
                serde_json::to_value(&reply).expect("json"),
            ));
        let merge = server
            .expect(Method::PATCH, &format!("{CONTENT}/status"))
            .await;
        assert_eq!(
            merge.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert!(
            merge
                .query
                .contains("fieldManager=bulwark-snapshot-content"),
            "{}",
            merge.query
        );
        let body = merge.json();
        merge.respond(json_response(
            StatusCode::OK,
            serde_json::to_value(&reply).expect("json"),
        ));
        body
    });
    reconcile(&doubled, &ctx).await.expect("reconciled");
    let body = finish(script).await;
    assert_eq!(
        body,
        json!({
            "metadata": {"resourceVersion": "41"},
            "status": {
                "snapshotHandle": "snap://vol-1/snap-1", "readyToUse": true,
                "restoreSize": GIB, "creationTime": created_nanos()
            }
        })
    );
    assert_eq!(events(&events_list), vec![(false, "SnapshotReady".into())]);
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let world = World {
        volumes: vec![volume("vol-1")],
        snapshots: vec![snapshot("snap-1", "vol-1", true)],
        ..World::default()
    };
    let (ctx, server, events_list) = context(&world);
    let published = content(json!({
        "spec": {"source": {"snapshotHandle": "snap://vol-1/snap-1"}},
        "status": {"snapshotHandle": "snap://vol-1/snap-1", "readyToUse": true,
                   "restoreSize": GIB, "creationTime": created_nanos()}
    }));
    // Any request would fail: the server is gone.
    drop(server);
    let action = reconcile(&published, &ctx).await.expect("reconciled");
    assert_eq!(action, Action::requeue(RECHECK_READY));
    assert!(events(&events_list).is_empty());
}

#[tokio::test]
async fn a_snapshot_that_is_not_ready_is_a_handle_error_until_it_is() {
    let world = World {
        volumes: vec![volume("vol-1")],
        snapshots: vec![snapshot("snap-1", "vol-1", false)],
        ..World::default()
    };
    let (status, action) = pre_status("snap://vol-1/snap-1", world).await;
    assert_eq!(
        status,
        json!({
            "snapshotHandle": "snap://vol-1/snap-1", "readyToUse": false,
            "error": {"message": "Snapshot snap-1 of volume vol-1 is not ready to use yet (status.readyToUse is not true)"}
        })
    );
    assert_eq!(action, Action::requeue(RETRY_IN_PROGRESS));
}

#[tokio::test]
async fn a_missing_or_foreign_snapshot_is_a_handle_error() {
    let world = World {
        snapshots: vec![snapshot("snap-1", "vol-2", true)],
        ..World::default()
    };
    let (status, action) = pre_status("snap://vol-1/snap-1", world).await;
    assert_eq!(
        error_message(&status),
        "Snapshot snap-1 belongs to volume vol-2, not to volume vol-1: fix the volume name in the handle"
    );
    assert_eq!(status["readyToUse"], false);
    assert_eq!(action, Action::requeue(RETRY_FAILED));
    let (status, _) = pre_status("snap://vol-1/snap-9", World::default()).await;
    assert_eq!(
        error_message(&status),
        "Snapshot snap-9 of volume vol-1 does not exist: check the snapshot name in the handle"
    );
}

#[tokio::test]
async fn a_completed_backup_is_published_in_both_spellings() {
    for handle in ["bak://vol-1/backup-1", "bs://vol-1/backup-1"] {
        let world = World {
            backups: vec![backup("backup-1", "vol-1", "Completed")],
            backup_volumes: vec![backup_volume("vol-1")],
            ..World::default()
        };
        let (status, _) = pre_status(handle, world).await;
        assert_eq!(
            status,
            json!({
                "snapshotHandle": handle, "readyToUse": true,
                "restoreSize": 2 * GIB, "creationTime": created_nanos()
            })
        );
    }
}

#[tokio::test]
async fn a_backup_that_is_not_completed_is_a_handle_error() {
    let cases = [
        (
            "InProgress",
            "Backup backup-1 of volume vol-1 is not completed yet (state InProgress)",
        ),
        (
            "Error",
            "Backup backup-1 of volume vol-1 failed: upload refused",
        ),
    ];
    for (state, message) in cases {
        let world = World {
            backups: vec![backup("backup-1", "vol-1", state)],
            backup_volumes: vec![backup_volume("vol-1")],
            ..World::default()
        };
        let (status, _) = pre_status("bak://vol-1/backup-1", world).await;
        assert_eq!(error_message(&status), message, "{state}");
        assert_eq!(status["readyToUse"], false);
    }
}

#[tokio::test]
async fn a_backup_is_looked_up_through_the_backup_volumes() {
    let (status, _) = pre_status("bak://vol-1/backup-1", World::default()).await;
    assert_eq!(
        error_message(&status),
        "no backup target holds backups of volume vol-1 (no BackupVolume for it): check the volume name in the handle, or wait for the target's next sync"
    );
    let world = World {
        backup_volumes: vec![backup_volume("vol-1")],
        backups: vec![backup("backup-1", "vol-2", "Completed")],
        ..World::default()
    };
    let (status, _) = pre_status("bak://vol-1/backup-2", world).await;
    assert_eq!(
        error_message(&status),
        "the backups of volume vol-1 include no backup backup-2 (no Backup object): check the backup name in the handle, or wait for the target's next sync"
    );
    let world = World {
        backup_volumes: vec![backup_volume("vol-1")],
        backups: vec![backup("backup-1", "vol-2", "Completed")],
        ..World::default()
    };
    let (status, _) = pre_status("bak://vol-1/backup-1", world).await;
    assert!(
        error_message(&status).starts_with("Backup backup-1 belongs to volume vol-2"),
        "{status}"
    );
}

fn download_handle(checksum: Option<&str>) -> String {
    let mut handle = "bi://backing?backingImage=bi-1&backingImageDataSourceType=download&url=https%3A%2F%2Fexample.com%2Fa.qcow2".to_owned();
    if let Some(sum) = checksum {
        handle.push_str(&format!("&backingImageChecksum={sum}"));
    }
    handle
}

#[tokio::test]
async fn a_matching_ready_backing_image_is_published() {
    let handle = download_handle(Some(SUM_A));
    let world = World {
        backing_images: vec![download_image(SUM_A, "ready")],
        ..World::default()
    };
    let (status, _) = pre_status(&handle, world).await;
    assert_eq!(
        status,
        json!({
            "snapshotHandle": handle, "readyToUse": true,
            "restoreSize": 3 * GIB, "creationTime": created_nanos()
        })
    );
    // Still downloading: not ready, and not an error either.
    let world = World {
        backing_images: vec![download_image(SUM_A, "in-progress")],
        ..World::default()
    };
    let (status, action) = pre_status(&handle, world).await;
    assert_eq!(
        status,
        json!({"snapshotHandle": handle, "readyToUse": false})
    );
    assert_eq!(action, Action::requeue(RETRY_IN_PROGRESS));
}

#[tokio::test]
async fn a_backing_image_that_differs_from_the_handle_is_a_handle_error() {
    let cases = [
        (
            download_handle(Some(SUM_B)),
            download_image(SUM_A, "ready"),
            format!(
                "checksum mismatch: the handle's backingImageChecksum is {SUM_B}, but BackingImage bi-1 has checksum {SUM_A}"
            ),
        ),
        (
            "bi://backing?backingImage=bi-1&backingImageDataSourceType=download&url=https%3A%2F%2Fexample.com%2Fb.qcow2".to_owned(),
            download_image(SUM_A, "ready"),
            "BackingImage bi-1 has url https://example.com/a.qcow2, but the handle says https://example.com/b.qcow2: fix the handle or the image name".to_owned(),
        ),
        (
            "bi://backing?backingImage=bi-1&backingImageDataSourceType=export-from-volume&volume-name=vol-1".to_owned(),
            download_image(SUM_A, "ready"),
            "BackingImage bi-1 has source type download, but the handle says export-from-volume: fix backingImageDataSourceType or the image name".to_owned(),
        ),
        (
            download_handle(None),
            download_image(SUM_A, "failed"),
            "BackingImage bi-1 failed: no message".to_owned(),
        ),
    ];
    for (handle, existing, message) in cases {
        let world = World {
            backing_images: vec![existing],
            ..World::default()
        };
        let (status, action) = pre_status(&handle, world).await;
        assert_eq!(error_message(&status), message, "{handle}");
        assert_eq!(status["readyToUse"], false);
        assert_eq!(action, Action::requeue(RETRY_FAILED));
    }
}

#[tokio::test]
async fn a_missing_download_image_is_created_on_demand_from_the_handle() {
    let handle = download_handle(Some(SUM_A));
    let (ctx, mut server, events_list) = context(&World::default());
    let content = pre(&handle);
    let reply = content.clone();
    let script = tokio::spawn(async move {
        let create = server
            .expect(Method::POST, &format!("{NS}/backingimages"))
            .await;
        let body = create.json();
        assert_eq!(
            body,
            json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
                "metadata": {"name": "bi-1", "namespace": "bulwark-system",
                             "labels": {"bulwark.io/snapshot-content": "snapcontent-u1"}},
                "spec": {"sourceType": "download",
                         "sourceParameters": {"url": "https://example.com/a.qcow2"},
                         "checksum": SUM_A}
            })
        );
        create.respond(json_response(StatusCode::CREATED, body));
        expect_status(&mut server, &reply).await
    });
    let action = reconcile(&content, &ctx).await.expect("reconciled");
    let status = finish(script).await;
    // Being made by the BackingImage controller: not an error.
    assert_eq!(
        status,
        json!({"snapshotHandle": handle, "readyToUse": false})
    );
    assert_eq!(action, Action::requeue(RETRY_IN_PROGRESS));
    assert_eq!(events(&events_list), vec![(false, "Creating".into())]);
}

#[tokio::test]
async fn a_missing_export_image_is_created_on_demand_and_an_existing_one_is_kept() {
    let handle = "bi://backing?backingImage=test-bi&backingImageDataSourceType=export-from-volume&export-type=qcow2&volume-name=vol-export-src";
    let (ctx, mut server, _events) = context(&World::default());
    let content = pre(handle);
    let reply = content.clone();
    let script = tokio::spawn(async move {
        let create = server
            .expect(Method::POST, &format!("{NS}/backingimages"))
            .await;
        let body = create.json();
        assert_eq!(body["metadata"]["name"], "test-bi");
        assert_eq!(
            body["spec"],
            json!({"sourceType": "export-from-volume",
                   "sourceParameters": {"export-type": "qcow2", "volume-name": "vol-export-src"}})
        );
        // Made meanwhile by someone else: fine, it is the same image.
        create.respond(testing::status(409, "AlreadyExists"));
        expect_status(&mut server, &reply).await
    });
    reconcile(&content, &ctx).await.expect("reconciled");
    let status = finish(script).await;
    assert_eq!(status["readyToUse"], false);
}

#[tokio::test]
async fn an_upload_image_that_does_not_exist_cannot_be_made_from_the_handle() {
    let (status, _) = pre_status(
        "bi://backing?backingImage=bi-up&backingImageDataSourceType=upload",
        World::default(),
    )
    .await;
    assert_eq!(
        error_message(&status),
        "BackingImage bi-up does not exist, and a upload handle cannot create it: create the BackingImage first (only download and export-from-volume handles create images on demand)"
    );
}

#[tokio::test]
async fn undecodable_handles_say_what_is_wrong() {
    let cases = [
        ("nfs://vol-1/x", "invalid CSI snapshot type \"nfs\""),
        ("vol-1/snap-1", "has no type prefix"),
        ("snap://vol-1", "has no '/<snapshot>' after the volume name"),
        ("bak:///backup-1", "empty volume name"),
        ("snap://vol-1/", "empty snapshot name"),
        (
            "bi://backing?backingImage=x&backingImageDataSourceType=floppy",
            "backingImageDataSourceType \"floppy\" is unknown",
        ),
        (
            "bi://backing?backingImageDataSourceType=download&url=https%3A%2F%2Fe.com%2Fa",
            "lacks the required parameter backingImage",
        ),
        (
            "bi://backing?backingImage=x&backingImageDataSourceType=download&url=ftp%3A%2F%2Fe.com%2Fa",
            "url",
        ),
    ];
    for (handle, expected) in cases {
        let (status, action) = pre_status(handle, World::default()).await;
        let message = error_message(&status);
        assert!(
            message.starts_with(&format!(
                "spec.source.snapshotHandle {handle:?} is invalid: "
            )),
            "{message}"
        );
        assert!(message.contains(expected), "{handle}: {message}");
        // No handle is published for something that is not one.
        assert_eq!(
            status,
            json!({"readyToUse": false, "error": {"message": message}})
        );
        assert_eq!(action, Action::requeue(RETRY_FAILED));
    }
}

#[tokio::test]
async fn a_handle_error_is_a_warning_event() {
    let (ctx, mut server, events_list) = context(&World::default());
    let content = pre("nfs://vol-1/x");
    let reply = content.clone();
    let script = tokio::spawn(async move { expect_status(&mut server, &reply).await });
    reconcile(&content, &ctx).await.expect("reconciled");
    finish(script).await;
    assert_eq!(
        events(&events_list),
        vec![(true, "InvalidSnapshotHandle".into())]
    );
}

#[tokio::test]
async fn contents_of_other_drivers_are_ignored() {
    let (ctx, server, events_list) = context(&World::default());
    let foreign = content(json!({
        "metadata": {"finalizers": null},
        "spec": {"driver": "ebs.csi.aws.com", "deletionPolicy": "Delete", "source": {"snapshotHandle": "snap-0123"}}
    }));
    drop(server);
    assert_eq!(
        reconcile(&foreign, &ctx).await.expect("reconciled"),
        Action::await_change()
    );
    let deleting = content(json!({
        "metadata": {"deletionTimestamp": CREATED_AT, "finalizers": ["other"]},
        "spec": {"driver": "ebs.csi.aws.com", "deletionPolicy": "Delete", "source": {"snapshotHandle": "snap://vol-1/s"}}
    }));
    assert_eq!(
        reconcile(&deleting, &ctx).await.expect("reconciled"),
        Action::await_change()
    );
    assert!(events(&events_list).is_empty());
}

// ---------------------------------------------------------------- dynamic

fn class(parameters: Value) -> Value {
    json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "bulwark"}, "driver": "driver.bulwark.io",
        "deletionPolicy": "Delete", "parameters": parameters
    })
}

/// An object as the controller creates it for content `snapcontent-u1`.
fn created(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": kind,
        "metadata": {"name": name, "namespace": "bulwark-system",
                     "labels": {"bulwark.io/snapshot-content": "snapcontent-u1"}},
        "spec": spec
    })
}

/// One reconcile of a dynamic content whose class `bulwark` has `parameters` (`None`: there is
/// no such class): the class is read, the object created when `create` names its collection
/// and exact body, then the status applied. The status, the action and the Events.
async fn dynamic_pass(
    world: &World,
    content: &VolumeSnapshotContent,
    parameters: Option<Value>,
    create: Option<(&'static str, Value)>,
) -> (Value, Action, Vec<(bool, String)>) {
    let (ctx, mut server, events_list) = context(world);
    let reply = content.clone();
    let script = tokio::spawn(async move {
        let get = server
            .expect(Method::GET, &format!("{CLASSES}/bulwark"))
            .await;
        get.respond(match parameters {
            Some(parameters) => json_response(StatusCode::OK, class(parameters)),
            None => not_found(),
        });
        if let Some((collection, expected)) = create {
            let request = server
                .expect(Method::POST, &format!("{NS}/{collection}"))
                .await;
            let body = request.json();
            assert_eq!(body, expected);
            request.respond(json_response(StatusCode::CREATED, body));
        }
        expect_status(&mut server, &reply).await
    });
    let action = reconcile(content, &ctx).await.expect("reconciled");
    let status = finish(script).await;
    (status, action, events(&events_list))
}

fn with_volume() -> World {
    World {
        volumes: vec![volume("vol-1")],
        ..World::default()
    }
}

#[tokio::test]
async fn a_dynamic_snap_content_creates_a_snapshot_named_after_the_volume_snapshot() {
    let (status, action, events) = dynamic_pass(
        &with_volume(),
        &dynamic("bulwark"),
        Some(json!({"type": "snap"})),
        Some((
            "snapshots",
            created("Snapshot", "snapshot-u1", json!({"volume": "vol-1"})),
        )),
    )
    .await;
    // In progress: no handle yet, and no error.
    assert_eq!(status, json!({"readyToUse": false}));
    assert_eq!(action, Action::requeue(RETRY_IN_PROGRESS));
    assert_eq!(events, vec![(false, "Creating".into())]);
}

#[tokio::test]
async fn a_dynamic_snapshot_publishes_its_handle_when_ready() {
    let world = World {
        snapshots: vec![snapshot("snapshot-u1", "vol-1", true)],
        ..with_volume()
    };
    let content = content(json!({
        "spec": {"source": {"volumeHandle": "vol-1"}, "volumeSnapshotClassName": "bulwark"},
        "status": {"readyToUse": false}
    }));
    let (status, action, events) =
        dynamic_pass(&world, &content, Some(json!({"type": "snap"})), None).await;
    assert_eq!(
        status,
        json!({
            "snapshotHandle": "snap://vol-1/snapshot-u1", "readyToUse": true,
            "restoreSize": GIB, "creationTime": created_nanos()
        })
    );
    assert_eq!(action, Action::requeue(RECHECK_READY));
    assert_eq!(events, vec![(false, "SnapshotReady".into())]);
}

#[tokio::test]
async fn a_published_dynamic_handle_needs_no_class() {
    let world = World {
        snapshots: vec![snapshot("snapshot-u1", "vol-1", true)],
        ..with_volume()
    };
    let (ctx, server, _events) = context(&world);
    let content = content(json!({
        "spec": {"source": {"volumeHandle": "vol-1"}, "volumeSnapshotClassName": "gone"},
        "status": {"snapshotHandle": "snap://vol-1/snapshot-u1", "readyToUse": true,
                   "restoreSize": GIB, "creationTime": created_nanos()}
    }));
    drop(server);
    assert_eq!(
        reconcile(&content, &ctx).await.expect("reconciled"),
        Action::requeue(RECHECK_READY)
    );
}

#[tokio::test]
async fn a_dynamic_backup_content_creates_a_backup_with_the_class_mode() {
    for (parameters, mode) in [
        (json!({"type": "bak", "backupMode": "full"}), "full"),
        (json!({"type": "bs"}), "incremental"),
        (json!({}), "incremental"),
    ] {
        let expected = created(
            "Backup",
            "backup-u1",
            json!({"volume": "vol-1", "backupMode": mode}),
        );
        let (status, _, _) = dynamic_pass(
            &with_volume(),
            &dynamic("bulwark"),
            Some(parameters),
            Some(("backups", expected)),
        )
        .await;
        assert_eq!(status, json!({"readyToUse": false}));
    }
}

#[tokio::test]
async fn a_completed_dynamic_backup_publishes_a_bak_handle() {
    let world = World {
        backups: vec![backup("backup-u1", "vol-1", "Completed")],
        ..with_volume()
    };
    let (status, _, _) =
        dynamic_pass(&world, &dynamic("bulwark"), Some(json!({"type": ""})), None).await;
    assert_eq!(
        status,
        json!({
            "snapshotHandle": "bak://vol-1/backup-u1", "readyToUse": true,
            "restoreSize": 2 * GIB, "creationTime": created_nanos()
        })
    );
}

#[tokio::test]
async fn a_failed_dynamic_backup_is_an_error_not_a_retry() {
    let world = World {
        backups: vec![backup("backup-u1", "vol-1", "Error")],
        ..with_volume()
    };
    let (status, action, events) = dynamic_pass(
        &world,
        &dynamic("bulwark"),
        Some(json!({"type": "bak"})),
        None,
    )
    .await;
    assert_eq!(
        error_message(&status),
        "Backup backup-u1 of volume vol-1 failed: upload refused"
    );
    assert_eq!(action, Action::requeue(RETRY_FAILED));
    assert_eq!(events, vec![(true, "SnapshotFailed".into())]);
}

#[tokio::test]
async fn a_dynamic_bi_content_exports_the_volume_and_publishes_the_checksum() {
    let spec = json!({"sourceType": "export-from-volume",
                      "sourceParameters": {"export-type": "qcow2", "volume-name": "vol-1"}});
    let (status, _, _) = dynamic_pass(
        &with_volume(),
        &dynamic("bulwark"),
        Some(json!({"type": "bi", "exportType": "qcow2"})),
        Some((
            "backingimages",
            created("BackingImage", "bi-u1", spec.clone()),
        )),
    )
    .await;
    assert_eq!(status, json!({"readyToUse": false}));

    let world = World {
        backing_images: vec![image(
            "bi-u1",
            spec,
            json!({"state": "ready", "size": GIB, "checksum": SUM_A, "readyAt": CREATED_AT}),
        )],
        ..with_volume()
    };
    let (status, _, _) = dynamic_pass(
        &world,
        &dynamic("bulwark"),
        Some(json!({"type": "bi", "export-type": "qcow2"})),
        None,
    )
    .await;
    let handle = format!(
        "bi://backing?backingImage=bi-u1&backingImageDataSourceType=export-from-volume&export-type=qcow2&volume-name=vol-1&backingImageChecksum={SUM_A}"
    );
    assert_eq!(
        status,
        json!({"snapshotHandle": handle, "readyToUse": true,
               "restoreSize": GIB, "creationTime": created_nanos()})
    );
    // What we publish, we accept back as a pre-provisioned handle.
    let decoded = handle_codec::decode(&handle).expect("decodes");
    assert_eq!(decoded.encode(), handle);
}

#[tokio::test]
async fn class_and_source_problems_are_errors() {
    let cases: [(Option<Value>, &str); 4] = [
        (
            Some(json!({"type": "nfs"})),
            "VolumeSnapshotClass bulwark: invalid CSI snapshot type \"nfs\"",
        ),
        (
            Some(json!({"type": "snap", "backupMode": "full"})),
            "VolumeSnapshotClass bulwark: VolumeSnapshotClass parameter backupMode applies only to type",
        ),
        (
            Some(json!({"type": "bi", "export-type": "vmdk"})),
            "VolumeSnapshotClass bulwark: VolumeSnapshotClass parameter export-type \"vmdk\" is invalid",
        ),
        (
            None,
            "VolumeSnapshotClass bulwark does not exist: create it or fix spec.volumeSnapshotClassName",
        ),
    ];
    for (parameters, expected) in cases {
        let (status, action, _) =
            dynamic_pass(&with_volume(), &dynamic("bulwark"), parameters, None).await;
        assert!(
            error_message(&status).starts_with(expected),
            "{expected}: {status}"
        );
        assert_eq!(status["readyToUse"], false);
        assert_eq!(action, Action::requeue(RETRY_FAILED));
    }

    // The volume to snapshot does not exist.
    let (status, _, _) = dynamic_pass(
        &World::default(),
        &dynamic("bulwark"),
        Some(json!({"type": "snap"})),
        None,
    )
    .await;
    assert_eq!(
        error_message(&status),
        "spec.source.volumeHandle names volume vol-1, which does not exist in namespace bulwark-system"
    );
}

// ---------------------------------------------------------------- deletion

fn deleting(patch: Value) -> VolumeSnapshotContent {
    let mut c = content(patch);
    c.metadata.deletion_timestamp = Some(crd_types::common::Time(
        CREATED_AT.parse().expect("a timestamp"),
    ));
    c
}

async fn expect_finalizer_removed(server: &mut ApiServer, reply: &VolumeSnapshotContent) {
    let patch = server.expect(Method::PATCH, CONTENT).await;
    assert_eq!(
        patch.json(),
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": ["bulwark.io/snapshot-content"]},
            {"op": "replace", "path": "/metadata/finalizers", "value": []}
        ])
    );
    patch.respond(json_response(
        StatusCode::OK,
        serde_json::to_value(reply).expect("json"),
    ));
}

#[tokio::test]
async fn delete_policy_deletes_the_pre_provisioned_snapshot() {
    let world = World {
        snapshots: vec![snapshot("snap-1", "vol-1", true)],
        ..World::default()
    };
    let (ctx, mut server, events_list) = context(&world);
    let content = deleting(json!({"spec": {"deletionPolicy": "Delete",
                                           "source": {"snapshotHandle": "snap://vol-1/snap-1"}}}));
    let reply = content.clone();
    let script = tokio::spawn(async move {
        server
            .expect(Method::DELETE, &format!("{NS}/snapshots/snap-1"))
            .await
            .respond(json_response(
                StatusCode::OK,
                serde_json::to_value(snapshot("snap-1", "vol-1", true)).expect("json"),
            ));
        expect_finalizer_removed(&mut server, &reply).await;
    });
    let action = reconcile(&content, &ctx).await.expect("reconciled");
    finish(script).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(events(&events_list), vec![(false, "Deleted".into())]);
}

#[tokio::test]
async fn delete_policy_deletes_what_a_dynamic_content_created() {
    let world = World {
        volumes: vec![volume("vol-1")],
        backups: vec![backup("backup-u1", "vol-1", "InProgress")],
        ..World::default()
    };
    let (ctx, mut server, _events) = context(&world);
    // Not published yet: found under its deterministic name.
    let content = deleting(json!({"spec": {"deletionPolicy": "Delete",
                                           "source": {"volumeHandle": "vol-1"},
                                           "volumeSnapshotClassName": "bulwark"}}));
    let reply = content.clone();
    let script = tokio::spawn(async move {
        // Deleted meanwhile by someone else: fine.
        server
            .expect(Method::DELETE, &format!("{NS}/backups/backup-u1"))
            .await
            .respond(not_found());
        expect_finalizer_removed(&mut server, &reply).await;
    });
    reconcile(&content, &ctx).await.expect("reconciled");
    finish(script).await;

    // Published: the handle says what to delete.
    let world = World {
        backing_images: vec![download_image(SUM_A, "ready")],
        ..World::default()
    };
    let (ctx, mut server, _events) = context(&world);
    let content = deleting(json!({"spec": {"deletionPolicy": "Delete",
                                           "source": {"volumeHandle": "vol-1"}},
                                  "status": {"snapshotHandle": download_handle(None)}}));
    let reply = content.clone();
    let script = tokio::spawn(async move {
        server
            .expect(Method::DELETE, &format!("{NS}/backingimages/bi-1"))
            .await
            .respond(json_response(
                StatusCode::OK,
                serde_json::to_value(download_image(SUM_A, "ready")).expect("json"),
            ));
        expect_finalizer_removed(&mut server, &reply).await;
    });
    reconcile(&content, &ctx).await.expect("reconciled");
    finish(script).await;
}

#[tokio::test]
async fn delete_policy_never_deletes_another_volumes_backup() {
    let world = World {
        backups: vec![backup("backup-1", "vol-2", "Completed")],
        ..World::default()
    };
    let (ctx, mut server, events_list) = context(&world);
    let content = deleting(json!({"spec": {"deletionPolicy": "Delete",
                                           "source": {"snapshotHandle": "bak://vol-1/backup-1"}}}));
    let reply = content.clone();
    let script = tokio::spawn(async move { expect_finalizer_removed(&mut server, &reply).await });
    reconcile(&content, &ctx).await.expect("reconciled");
    finish(script).await;
    assert!(events(&events_list).is_empty());
}

#[tokio::test]
async fn retain_policy_keeps_the_object_and_releases_the_content() {
    let world = World {
        backups: vec![backup("backup-1", "vol-1", "Completed")],
        ..World::default()
    };
    let (ctx, mut server, events_list) = context(&world);
    let content = deleting(json!({"spec": {"deletionPolicy": "Retain",
                                           "source": {"snapshotHandle": "bak://vol-1/backup-1"}}}));
    let reply = content.clone();
    let script = tokio::spawn(async move { expect_finalizer_removed(&mut server, &reply).await });
    let action = reconcile(&content, &ctx).await.expect("reconciled");
    finish(script).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(events(&events_list), vec![(false, "Retained".into())]);
}

#[tokio::test]
async fn a_deleted_content_without_our_finalizer_is_left_alone() {
    let (ctx, server, _events) = context(&World::default());
    let content = deleting(
        json!({"metadata": {"finalizers": ["snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]},
                                  "spec": {"deletionPolicy": "Delete", "source": {"snapshotHandle": "snap://vol-1/s"}}}),
    );
    drop(server);
    assert_eq!(
        reconcile(&content, &ctx).await.expect("reconciled"),
        Action::await_change()
    );
}

// ---------------------------------------------------------------- pure parts

#[test]
fn objects_wake_the_content_they_were_made_for() {
    let mut snap = snapshot("snapshot-u1", "vol-1", false);
    assert_eq!(content_of(snap.clone()), None);
    snap.metadata.labels = Some(BTreeMap::from([(
        CONTENT_LABEL.to_owned(),
        "snapcontent-u1".to_owned(),
    )]));
    assert_eq!(content_of(snap), Some(ObjectRef::new("snapcontent-u1")));
}

#[test]
fn dynamic_names_come_from_the_volume_snapshot_uid() {
    let c = dynamic("bulwark");
    let kinds = resolve::DYNAMIC_KINDS;
    let names: Vec<_> = kinds
        .iter()
        .map(|k| resolve::dynamic_name(*k, &c))
        .collect();
    assert_eq!(
        names,
        vec![
            Some("snapshot-u1".to_owned()),
            Some("backup-u1".to_owned()),
            Some("bi-u1".to_owned())
        ]
    );
    let unbound = content(json!({"spec": {"volumeSnapshotRef": {"uid": null}}}));
    assert_eq!(
        resolve::dynamic_name(kinds[0], &unbound).as_deref(),
        Some("snapshot-c-uid")
    );
    let nameless =
        content(json!({"metadata": {"uid": null}, "spec": {"volumeSnapshotRef": {"uid": null}}}));
    assert_eq!(resolve::dynamic_name(kinds[0], &nameless), None);
}

#[test]
fn volume_source_maps_each_handle_kind() {
    let world = World {
        backups: vec![backup("backup-1", "vol-1", "Completed")],
        backup_volumes: vec![backup_volume("vol-1")],
        backing_images: vec![download_image(SUM_A, "in-progress")],
        ..World::default()
    };
    let decode = |h: &str| handle_codec::decode(h).expect("a handle");
    let plan = volume_source(&world, &decode("snap://vol-1/snap-1"), "ns").expect("maps");
    assert_eq!(
        plan,
        VolumePlan {
            source: VolumeSource {
                data_source: Some("snap://vol-1/snap-1".into()),
                ..VolumeSource::default()
            },
            create_backing_image: None
        }
    );
    let plan = volume_source(&world, &decode("bs://vol-1/backup-1"), "ns").expect("maps");
    assert_eq!(
        plan.source.from_backup.as_deref(),
        Some("s3://bucket@us-east-1/?backup=backup-1&volume=vol-1")
    );
    assert_eq!(plan.source.data_source, None);
    // An existing matching image is used even while it is being made.
    let plan = volume_source(&world, &decode(&download_handle(Some(SUM_A))), "ns").expect("maps");
    assert_eq!(plan.source.backing_image.as_deref(), Some("bi-1"));
    assert_eq!(plan.create_backing_image, None);
}

#[test]
fn volume_source_creates_images_on_demand_and_refuses_what_does_not_fit() {
    let world = World {
        backups: vec![backup("backup-2", "vol-1", "InProgress")],
        backing_images: vec![download_image(SUM_A, "ready")],
        ..World::default()
    };
    let decode = |h: &str| handle_codec::decode(h).expect("a handle");
    let plan = volume_source(
        &world,
        &decode("bi://backing?backingImage=new-bi&backingImageDataSourceType=export-from-volume&volume-name=vol-1"),
        "bulwark-system",
    )
    .expect("maps");
    assert_eq!(plan.source.backing_image.as_deref(), Some("new-bi"));
    let create = plan.create_backing_image.expect("to create");
    assert_eq!(create.metadata.namespace.as_deref(), Some("bulwark-system"));
    assert_eq!(
        create.spec.source_parameters,
        BTreeMap::from([
            ("export-type".to_owned(), "raw".to_owned()),
            ("volume-name".to_owned(), "vol-1".to_owned())
        ])
    );

    let refused = volume_source(&world, &decode(&download_handle(Some(SUM_B))), "ns")
        .expect_err("checksum differs");
    assert!(refused.starts_with("checksum mismatch"), "{refused}");
    let refused =
        volume_source(&world, &decode("bak://vol-1/backup-2"), "ns").expect_err("not completed");
    assert!(refused.contains("not completed yet"), "{refused}");
    let refused = volume_source(
        &world,
        &decode("bi://backing?backingImage=x&backingImageDataSourceType=clone&backing-image=y"),
        "ns",
    )
    .expect_err("clone images are not made from handles");
    assert!(refused.contains("cannot create it"), "{refused}");
}

#[test]
fn an_export_image_without_export_type_matches_a_raw_handle() {
    let handle = handle_codec::decode(
        "bi://backing?backingImage=img&backingImageDataSourceType=export-from-volume&export-type=raw&volume-name=v",
    )
    .expect("a handle");
    let handle_codec::SnapshotHandle::BackingImage(handle) = handle else {
        panic!("a bi handle")
    };
    let existing = image(
        "img",
        json!({"sourceType": "export-from-volume", "sourceParameters": {"volume-name": "v"}}),
        json!({}),
    );
    assert_eq!(resolve::match_backing_image(&handle, &existing), Ok(()));
}

#[test]
fn published_status_is_compared_without_error_times() {
    let ready = Outcome::Ready {
        restore_size: Some(1),
        creation_time: Some(2),
    };
    let published = Published::from_outcome(Some("snap://v/s".into()), &ready, true);
    let c = content(
        json!({"status": {"snapshotHandle": "snap://v/s", "readyToUse": true,
                                     "restoreSize": 1, "creationTime": 2}}),
    );
    assert_eq!(Published::current(&c), published);
    let failed = Published::from_outcome(None, &Outcome::Failed("bad".into()), false);
    let c = content(json!({"status": {"readyToUse": false,
                                     "error": {"message": "bad", "time": "2020-01-01T00:00:00Z"}}}));
    assert_eq!(Published::current(&c), failed);
    // In progress: an error only for handles that should already be usable.
    let waiting = Outcome::InProgress("later".into());
    assert_eq!(Published::from_outcome(None, &waiting, false).error, None);
    assert_eq!(
        Published::from_outcome(None, &waiting, true)
            .error
            .as_deref(),
        Some("later")
    );
}

// ---------------------------------------------------------------- real cluster

/// Against the cluster in `KUBECONFIG`, with the external-snapshotter CRDs installed from the
/// directory in `BULWARK_SNAPSHOT_CRDS` (e.g. the upstream `client/config/crd/`; on Kubernetes
/// 1.24 a copy without the `oldSelf` rules, with `BULWARK_CRDS=preinstalled`):
/// `cargo test -p operator snapshot_content::tests::cluster -- --ignored`.
#[tokio::test]
#[ignore = "needs a cluster in KUBECONFIG and BULWARK_SNAPSHOT_CRDS"]
async fn cluster_pre_provisioned_snapshot_content_becomes_ready_and_is_released() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};

    let dir = std::env::var("BULWARK_SNAPSHOT_CRDS")
        .expect("BULWARK_SNAPSHOT_CRDS names the directory of the snapshot CRDs");
    let client = kube::Client::try_default()
        .await
        .expect("a cluster in KUBECONFIG");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply("bulwark-test").force();
    for file in [
        "snapshot.storage.k8s.io_volumesnapshotclasses.yaml",
        "snapshot.storage.k8s.io_volumesnapshotcontents.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("the CRD file");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("a CRD");
        crds.patch(
            &crd.metadata.name.clone().expect("named"),
            &apply,
            &Patch::Apply(&crd),
        )
        .await
        .expect("CRD applied");
    }
    // On a Kubernetes 1.24 API server our CRDs are a copy installed by hand, without the CEL
    // transition rules it cannot compile (`BULWARK_CRDS=preinstalled`).
    if std::env::var("BULWARK_CRDS").as_deref() == Ok("preinstalled") {
        eprintln!("not installing our CRDs: BULWARK_CRDS=preinstalled");
    } else {
        crate::crds::install(&client).await.expect("our CRDs");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let namespace = format!("bulwark-vsc-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns"),
        )
        .await
        .expect("namespace");

    // A ready Snapshot, as the agent would leave it.
    let snapshots: Api<Snapshot> = Api::namespaced(client.clone(), &namespace);
    let mut snap = snapshot("snap-1", "vol-1", true);
    snap.metadata = kube::api::ObjectMeta {
        name: Some("snap-1".into()),
        ..Default::default()
    };
    let status = snap.status.take();
    snapshots
        .create(&PostParams::default(), &snap)
        .await
        .expect("snapshot");
    status::apply(
        &snapshots,
        "snap-1",
        "bulwark-test",
        serde_json::to_value(status).expect("json"),
    )
    .await
    .expect("snapshot status");

    let contents: Api<VolumeSnapshotContent> = Api::all(client.clone());
    let name = format!("bulwark-test-{}", std::process::id());
    // Created as a dynamic object: our type of the upstream kind serializes no apiVersion and
    // kind (the controller only ever patches contents).
    let gvk =
        kube::api::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent");
    let dynamic: Api<kube::api::DynamicObject> =
        Api::all_with(client.clone(), &kube::api::ApiResource::from_gvk(&gvk));
    let content: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": name},
        "spec": {"driver": "driver.bulwark.io", "deletionPolicy": "Delete",
                 "source": {"snapshotHandle": "snap://vol-1/snap-1"},
                 "volumeSnapshotRef": {"name": "vs", "namespace": namespace}}
    }))
    .expect("a content");
    dynamic
        .create(&PostParams::default(), &content)
        .await
        .expect("content created");

    let (mut ctx, _server, _events) = testing::context();
    let mut config = (*ctx.config).clone();
    config.common.namespace = namespace.clone();
    ctx.config = Arc::new(config);
    ctx.client = client.clone();
    let readiness = crate::readiness::Readiness::default();
    let stop = CancellationToken::new();
    ctx.caches = Caches::start(&client, &namespace, &readiness, &stop);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let current = contents.get(&name).await.expect("content");
        reconcile(&current, &ctx).await.expect("reconciled");
        let current = contents.get(&name).await.expect("content");
        ready = current.status.as_ref().and_then(|s| s.ready_to_use) == Some(true);
    }
    assert!(ready, "the content became ready");
    let current = contents.get(&name).await.expect("content");
    assert!(current.finalizers().iter().any(|f| f == FINALIZER));
    assert_eq!(
        current.status.and_then(|s| s.snapshot_handle).as_deref(),
        Some("snap://vol-1/snap-1")
    );

    contents
        .delete(&name, &DeleteParams::default())
        .await
        .expect("deletion requested");
    let current = contents.get(&name).await.expect("still there: finalizer");
    reconcile(&current, &ctx).await.expect("finalized");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(contents.get_opt(&name).await.expect("get").is_none());
    stop.cancel();
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn serving_csi_releases_only_our_finalizer_on_our_drivers_contents() {
    let (client, mut server) = ApiServer::start();
    let api: Api<VolumeSnapshotContent> = Api::all(client);
    let named = |name: &str, driver: &str, finalizers: Value| {
        let mut object = serde_json::to_value(content(json!({}))).expect("json");
        object["apiVersion"] = json!("snapshot.storage.k8s.io/v1");
        object["kind"] = json!("VolumeSnapshotContent");
        object["metadata"]["name"] = json!(name);
        object["metadata"]["finalizers"] = finalizers;
        object["spec"]["driver"] = json!(driver);
        object
    };
    let bound = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
    let script = tokio::spawn(async move {
        server
            .expect(
                Method::GET,
                "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
            )
            .await
            .respond(json_response(
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [
                    named("ours-held", "driver.bulwark.io", json!([bound, FINALIZER])),
                    named("ours-free", "driver.bulwark.io", json!([bound])),
                    named("theirs", "other.example.com", json!([FINALIZER])),
                ]}),
            ));
        let patch = server
            .expect(
                Method::PATCH,
                "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/ours-held",
            )
            .await;
        let body = patch.json();
        patch.respond(json_response(
            StatusCode::OK,
            named("ours-held", "driver.bulwark.io", json!([bound])),
        ));
        body
    });
    let released = release_all(&api, "driver.bulwark.io")
        .await
        .expect("released");
    assert_eq!(released, 1);
    let patch = finish(script).await;
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": [bound, FINALIZER]},
            {"op": "replace", "path": "/metadata/finalizers", "value": [bound]},
        ]),
        "the snapshot-controller's finalizer stays"
    );
}
