//! The product as a user runs it. Run with a cluster in `KUBECONFIG`:
//! `BULWARK_E2E=1 cargo test -p e2e -- --ignored --test-threads=1` (local mode needs root and
//! /dev/fuse for the agents' volume files).

use std::os::unix::fs::FileExt;
use std::time::Duration;

use crd_types::backup::BackupState;
use crd_types::volume::VolumeState;
use crd_types::{Backup, BackupTarget, RecurringJob, Snapshot, Volume};
use e2e::objects::{self, backup, is_finished, is_ready, pattern, snapshot, volume};
use e2e::{Cluster, Options, Target};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

const MINUTE: Duration = Duration::from_secs(60);

fn write(cluster: &Cluster, node: usize, volume: &str, offset: u64, data: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(cluster.volume_file(node, volume))
        .expect("the volume's file is served");
    file.write_all_at(data, offset)
        .expect("write through the volume file");
    file.sync_all().expect("fsync reaches the volume");
}

fn read(cluster: &Cluster, node: usize, volume: &str) -> Vec<u8> {
    std::fs::read(cluster.volume_file(node, volume)).expect("read the volume file")
}

async fn backed_up(cluster: &Cluster, name: &str, volume: &str, snap: Option<&str>) -> Backup {
    let backups: Api<Backup> = cluster.api();
    backups
        .create(&PostParams::default(), &backup(name, volume, snap))
        .await
        .expect("create backup");
    let done = cluster
        .wait_for(&backups, name, "finished", 3 * MINUTE, is_finished)
        .await;
    assert_eq!(
        objects::backup_state(&done),
        Some(BackupState::Completed),
        "{done:#?}"
    );
    done
}

fn execution_count(job: &RecurringJob) -> i64 {
    job.status
        .as_ref()
        .and_then(|s| s.execution_count)
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs a cluster; BULWARK_E2E=1"]
async fn backup_target_available_and_unavailable_with_the_reason() {
    let cluster = Cluster::start(Options::default()).await;
    let targets: Api<BackupTarget> = cluster.api();
    cluster
        .wait_for(&targets, "default", "available", MINUTE, |t| {
            t.status.as_ref().and_then(|s| s.available) == Some(true)
        })
        .await;
    let missing = objects::backup_target("missing", "file:///nonexistent/bulwark-e2e", None);
    targets
        .create(&PostParams::default(), &missing)
        .await
        .expect("create target");
    let down = cluster
        .wait_for(&targets, "missing", "unavailable", MINUTE, |t| {
            t.status.as_ref().and_then(|s| s.available) == Some(false)
        })
        .await;
    let conditions = down.status.and_then(|s| s.conditions).unwrap_or_default();
    let unavailable = conditions
        .iter()
        .find(|c| c.type_ == "Unavailable")
        .expect("an Unavailable condition");
    assert_eq!(unavailable.status, "True");
    assert!(
        unavailable.message.contains("/nonexistent/bulwark-e2e"),
        "{}",
        unavailable.message
    );
}

#[tokio::test]
#[ignore = "needs a cluster; BULWARK_E2E=1"]
async fn volume_snapshot_backup_restore_gives_identical_bytes() {
    let cluster = Cluster::start(Options {
        agents: 1,
        target: Target::S3,
        csi: false,
    })
    .await;
    let volumes: Api<Volume> = cluster.api();
    let snapshots: Api<Snapshot> = cluster.api();
    volumes
        .create(&PostParams::default(), &volume("data", "64Mi"))
        .await
        .expect("create volume");
    cluster
        .wait_for(&volumes, "data", "Ready", MINUTE, is_ready)
        .await;
    write(&cluster, 0, "data", 1 << 20, &pattern(10 << 20, 1));
    snapshots
        .create(&PostParams::default(), &snapshot("data-s1", "data"))
        .await
        .expect("create snapshot");
    cluster
        .wait_for(&snapshots, "data-s1", "ready to use", MINUTE, |s| {
            s.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
        })
        .await;
    let done = backed_up(&cluster, "backup-00000000000000a1", "data", Some("data-s1")).await;
    let url = done
        .status
        .and_then(|s| s.url)
        .expect("a Completed backup has a URL");
    volumes
        .create(
            &PostParams::default(),
            &objects::restored_volume("copy", "64Mi", &url, false),
        )
        .await
        .expect("create restored volume");
    cluster
        .wait_for(&volumes, "copy", "Ready", 3 * MINUTE, is_ready)
        .await;
    assert!(
        read(&cluster, 0, "data") == read(&cluster, 0, "copy"),
        "restored bytes differ"
    );

    // 1% of the volume changes; the next backup reads about that, not the volume.
    write(&cluster, 0, "data", 40 << 20, &pattern(640 << 10, 2));
    let incremental = backed_up(&cluster, "backup-00000000000000a2", "data", None).await;
    let read_bytes = incremental
        .status
        .and_then(|s| s.bytes_read)
        .expect("bytesRead");
    assert!(
        read_bytes <= 2 << 20,
        "incremental backup read {read_bytes} bytes for a 640 KiB change"
    );
}

#[tokio::test]
#[ignore = "needs a cluster; BULWARK_E2E=1"]
async fn recurring_jobs_snapshot_retain_and_skip_visibly() {
    let cluster = Cluster::start(Options::default()).await;
    let volumes: Api<Volume> = cluster.api();
    let mut labelled = volume("rec", "32Mi");
    labelled.metadata.labels = Some(
        [(
            "recurring-job.bulwark.io/every-minute".to_owned(),
            "enabled".to_owned(),
        )]
        .into(),
    );
    volumes
        .create(&PostParams::default(), &labelled)
        .await
        .expect("create volume");
    cluster
        .wait_for(&volumes, "rec", "Ready", MINUTE, is_ready)
        .await;
    let jobs: Api<RecurringJob> = cluster.api();
    let job: RecurringJob = serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
        "metadata": {"name": "every-minute", "labels": {objects::E2E_LABEL: "true"}},
        "spec": {"task": "snapshot", "cron": "* * * * *", "retain": 2, "concurrency": 1}
    }))
    .expect("a valid job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    let snapshots: Api<Snapshot> = cluster.api();
    let by_job = kube::api::ListParams::default().labels("RecurringJob=every-minute");
    for round in 0..3u8 {
        write(
            &cluster,
            0,
            "rec",
            u64::from(round) << 20,
            &pattern(4096, round),
        );
        let before = execution_count(&jobs.get("every-minute").await.expect("job"));
        cluster
            .wait_for(&jobs, "every-minute", "run once more", 2 * MINUTE, |j| {
                execution_count(j) > before
            })
            .await;
    }
    let kept = snapshots.list(&by_job).await.expect("list").items.len();
    assert_eq!(kept, 2, "retain: 2 keeps two of the job's snapshots");
    // Nothing written: the next run skips, and says so.
    let before = execution_count(&jobs.get("every-minute").await.expect("job"));
    let skipped = cluster
        .wait_for(&jobs, "every-minute", "run once more", 2 * MINUTE, |j| {
            execution_count(j) > before
        })
        .await;
    let status = skipped.status.expect("status");
    assert_eq!(
        status.last_result,
        Some(crd_types::recurring_job::RunResult::Skipped),
        "{status:#?}"
    );
    assert_eq!(snapshots.list(&by_job).await.expect("list").items.len(), 2);
}

#[tokio::test]
#[ignore = "needs a cluster; BULWARK_E2E=1"]
async fn standby_volume_follows_incrementally_and_activates() {
    // Two "clusters": the second kubeconfig when given, else a second namespace of the same
    // cluster with its own operator processes, both on one store.
    let primary = Cluster::start(Options::default()).await;
    let second = std::env::var("BULWARK_E2E_KUBECONFIG_B").ok();
    // Its own default target is a directory: a second S3 server of the same bucket and path
    // would have the same target URL as the primary's, and a backup URL cannot say which
    // server it means (the `default` target wins).
    let standby_side = Cluster::start_with(
        second.as_deref().map(std::path::Path::new),
        Options {
            agents: 1,
            target: Target::File,
            csi: false,
        },
    )
    .await;
    let volumes: Api<Volume> = primary.api();
    volumes
        .create(&PostParams::default(), &volume("dr", "32Mi"))
        .await
        .expect("create");
    primary
        .wait_for(&volumes, "dr", "Ready", MINUTE, is_ready)
        .await;
    write(&primary, 0, "dr", 0, &pattern(4 << 20, 7));
    let first = backed_up(&primary, "backup-00000000000000d1", "dr", None).await;
    let url = first.status.and_then(|s| s.url).expect("url");
    // The standby side reaches the same store through a target of its own (never replacing a
    // `default` target that may be a real deployment's).
    let secret = primary.share_target_credentials(&standby_side).await;
    let targets: Api<BackupTarget> = standby_side.api();
    targets
        .create(
            &PostParams::default(),
            &objects::backup_target("e2e-primary", primary.target_url(), secret),
        )
        .await
        .expect("target on the standby side");
    let standby_volumes: Api<Volume> = standby_side.api();
    standby_volumes
        .create(
            &PostParams::default(),
            &objects::restored_volume("dr", "32Mi", &url, true),
        )
        .await
        .expect("create standby");
    standby_side
        .wait_for(
            &standby_volumes,
            "dr",
            "restored the first backup",
            3 * MINUTE,
            |v| {
                v.status
                    .as_ref()
                    .and_then(|s| s.last_restored_backup.as_deref())
                    == Some("backup-00000000000000d1")
            },
        )
        .await;
    write(&primary, 0, "dr", 8 << 20, &pattern(1 << 20, 8));
    backed_up(&primary, "backup-00000000000000d2", "dr", None).await;
    standby_side
        .wait_for(
            &standby_volumes,
            "dr",
            "followed the second backup",
            3 * MINUTE,
            |v| {
                v.status
                    .as_ref()
                    .and_then(|s| s.last_restored_backup.as_deref())
                    == Some("backup-00000000000000d2")
            },
        )
        .await;
    // Caught up: no lag and nothing left to restore, as soon as the restore is done (not at
    // the next poll of the store).
    standby_side
        .wait_for(
            &standby_volumes,
            "dr",
            "caught up (drLagSeconds 0, restoreRequired false)",
            MINUTE,
            |v| {
                v.status.as_ref().is_some_and(|s| {
                    s.dr_lag_seconds == Some(0) && s.restore_required == Some(false)
                })
            },
        )
        .await;
    let mut activate = standby_volumes.get("dr").await.expect("standby");
    activate.spec.standby = false;
    standby_volumes
        .replace("dr", &PostParams::default(), &activate)
        .await
        .expect("activate");
    standby_side
        .wait_for(
            &standby_volumes,
            "dr",
            "active and Ready",
            3 * MINUTE,
            |v| is_ready(v) && v.status.as_ref().and_then(|s| s.is_standby) != Some(true),
        )
        .await;
    assert!(
        read(&primary, 0, "dr") == read(&standby_side, 0, "dr"),
        "the activated standby differs from its source"
    );
}

#[tokio::test]
#[ignore = "needs a cluster with the external-snapshotter CRDs and snapshot-controller; BULWARK_E2E=1"]
async fn pre_provisioned_backup_and_on_demand_backing_image_contents() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let cluster = Cluster::start(Options::default()).await;
    let volumes: Api<Volume> = cluster.api();
    volumes
        .create(&PostParams::default(), &volume("vsc", "16Mi"))
        .await
        .expect("create");
    cluster
        .wait_for(&volumes, "vsc", "Ready", MINUTE, is_ready)
        .await;
    write(&cluster, 0, "vsc", 0, &pattern(1 << 20, 9));
    backed_up(&cluster, "backup-00000000000000c1", "vsc", None).await;
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent");
    let contents: Api<DynamicObject> =
        Api::all_with(cluster.client.clone(), &ApiResource::from_gvk(&gvk));
    let content = |name: &str, handle: &str| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": name},
            "spec": {
                "driver": "driver.bulwark.io", "deletionPolicy": "Retain",
                "source": {"snapshotHandle": handle},
                "volumeSnapshotRef": {"name": name, "namespace": cluster.namespace}
            }
        }))
        .expect("a content")
    };
    let ready = |c: &DynamicObject| c.data["status"]["readyToUse"] == true;
    let name = format!("{}-bak", cluster.namespace);
    contents
        .create(
            &PostParams::default(),
            &content(&name, "bak://vsc/backup-00000000000000c1"),
        )
        .await
        .expect("create the pre-provisioned content");
    let done = cluster
        .wait_for(&contents, &name, "ready", 2 * MINUTE, ready)
        .await;
    assert_eq!(
        done.data["status"]["snapshotHandle"],
        "bak://vsc/backup-00000000000000c1"
    );
    // A user's VolumeSnapshot of that content: the external snapshot-controller binds the two
    // (adding its finalizers) and copies readiness from our status.
    let snapshot_gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let volume_snapshots: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &ApiResource::from_gvk(&snapshot_gvk),
    );
    let volume_snapshot: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": name},
        "spec": {"source": {"volumeSnapshotContentName": name}}
    }))
    .expect("a VolumeSnapshot");
    volume_snapshots
        .create(&PostParams::default(), &volume_snapshot)
        .await
        .expect("create the VolumeSnapshot");
    let bound = cluster
        .wait_for(
            &volume_snapshots,
            &name,
            "ready to use (bound by the snapshot-controller, which must be running)",
            2 * MINUTE,
            ready,
        )
        .await;
    assert_eq!(bound.data["status"]["boundVolumeSnapshotContentName"], name);
    let image = format!("{}-img", cluster.namespace);
    let handle = format!(
        "bi://backing?backingImage={image}&backingImageDataSourceType=export-from-volume&export-type=raw&volume-name=vsc"
    );
    contents
        .create(&PostParams::default(), &content(&image, &handle))
        .await
        .expect("create the on-demand content");
    // Another controller's finalizer listed twice (the snapshot-controller appends its own
    // without looking) makes every server-side apply to the object fail: our status must be
    // published all the same.
    let doubled = serde_json::json!({"metadata": {"finalizers": [DUPLICATED, DUPLICATED]}});
    contents
        .patch(&image, &PatchParams::default(), &Patch::Merge(&doubled))
        .await
        .expect("list a foreign finalizer twice");
    cluster
        .wait_for(&contents, &image, "ready", 3 * MINUTE, ready)
        .await;
    let images: Api<crd_types::BackingImage> = cluster.api();
    assert!(
        images.get_opt(&image).await.expect("get").is_some(),
        "the image was created on demand"
    );
    let _ = volume_snapshots
        .delete(&name, &DeleteParams::default())
        .await;
    for name in [&name, &image] {
        let _ = contents.delete(name, &DeleteParams::default()).await;
    }
    // Nobody removes the scenario's own finalizer but the scenario (Retain: no data goes).
    let foreign_gone = serde_json::json!({"metadata": {"finalizers": null}});
    let _ = contents
        .patch(
            &image,
            &PatchParams::default(),
            &Patch::Merge(&foreign_gone),
        )
        .await;
}

/// A finalizer of nobody's, listed twice on a VolumeSnapshotContent by the scenario.
const DUPLICATED: &str = "e2e.bulwark.io/duplicated";

#[tokio::test]
#[ignore = "needs a cluster; BULWARK_E2E=1"]
async fn invalid_objects_are_rejected_at_apply_time() {
    let cluster = Cluster::start(Options {
        agents: 0,
        target: Target::File,
        csi: false,
    })
    .await;
    let volumes: Api<Volume> = cluster.api();
    let error = volumes
        .create(&PostParams::default(), &volume("bad", "ten gigs"))
        .await
        .expect_err("a bad size is refused");
    assert!(error.to_string().contains("spec.size"), "{error}");
    let targets: Api<BackupTarget> = cluster.api();
    let error = targets
        .create(
            &PostParams::default(),
            &objects::backup_target("bad", "ftp://host/x", None),
        )
        .await
        .expect_err("an unknown scheme is refused");
    assert!(error.to_string().contains("backupTargetURL"), "{error}");

    if e2e::harness::crds_preinstalled() {
        eprintln!(
            "skipping the immutability checks: BULWARK_CRDS=preinstalled (a Kubernetes 1.24 API \
             server cannot compile the CEL transition rules, so its CRDs are a copy without them)"
        );
        return;
    }
    let backups: Api<Backup> = cluster.api();
    backups
        .create(
            &PostParams::default(),
            &backup("backup-00000000000000e1", "nowhere", None),
        )
        .await
        .expect("create backup");
    let error = backups
        .patch(
            "backup-00000000000000e1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"volume": "elsewhere"}})),
        )
        .await
        .expect_err("a Backup's spec is immutable");
    assert!(
        error
            .to_string()
            .contains("the spec of a Backup is immutable"),
        "{error}"
    );
}

#[tokio::test]
#[ignore = "needs a cluster; BULWARK_E2E=1"]
async fn operator_and_agent_killed_mid_backup_and_mid_restore_lose_nothing() {
    let mut cluster = Cluster::start(Options::default()).await;
    let volumes: Api<Volume> = cluster.api();
    volumes
        .create(&PostParams::default(), &volume("big", "512Mi"))
        .await
        .expect("create");
    cluster
        .wait_for(&volumes, "big", "Ready", MINUTE, is_ready)
        .await;
    write(&cluster, 0, "big", 0, &pattern(256 << 20, 3));
    let backups: Api<Backup> = cluster.api();
    backups
        .create(
            &PostParams::default(),
            &backup("backup-00000000000000k1", "big", None),
        )
        .await
        .expect("create backup");
    cluster
        .wait_for(
            &backups,
            "backup-00000000000000k1",
            "in progress",
            MINUTE,
            |b| objects::backup_state(b) == Some(BackupState::InProgress),
        )
        .await;
    cluster.kill_agent(0);
    cluster.kill_controller();
    cluster.start_controller();
    cluster.start_agent(0);
    let done = cluster
        .wait_for(
            &backups,
            "backup-00000000000000k1",
            "finished",
            5 * MINUTE,
            is_finished,
        )
        .await;
    let url = match objects::backup_state(&done) {
        Some(BackupState::Completed) => done.status.and_then(|s| s.url).expect("url"),
        // Failing cleanly is allowed; then the next backup must succeed.
        _ => backed_up(&cluster, "backup-00000000000000k2", "big", None)
            .await
            .status
            .and_then(|s| s.url)
            .expect("url"),
    };
    volumes
        .create(
            &PostParams::default(),
            &objects::restored_volume("big-copy", "512Mi", &url, false),
        )
        .await
        .expect("restore");
    let restoring = cluster
        .wait_for(&volumes, "big-copy", "restoring", 5 * MINUTE, |v| {
            let state = v.status.as_ref().and_then(|s| s.state);
            state == Some(VolumeState::Restoring) || state == Some(VolumeState::Ready)
        })
        .await;
    if is_ready(&restoring) {
        eprintln!("the restore finished before it could be interrupted");
    } else {
        cluster.kill_agent(0);
        cluster.kill_controller();
        cluster.start_controller();
        cluster.start_agent(0);
    }
    cluster
        .wait_for(&volumes, "big-copy", "Ready", 5 * MINUTE, is_ready)
        .await;
    // The source volume is served again by the restarted agent, unchanged.
    assert!(
        read(&cluster, 0, "big") == read(&cluster, 0, "big-copy"),
        "restored bytes differ"
    );
}

#[test]
fn scenarios_refuse_to_run_without_the_opt_in() {
    use e2e::harness::refusal;
    assert!(refusal(None).is_some_and(|why| why.contains("BULWARK_E2E=1")));
    assert!(refusal(Some("true")).is_some());
    assert!(refusal(Some("0")).is_some());
    assert_eq!(refusal(Some("1")), None);
}

/// The PV the external-provisioner made for `pvc`, once it exists.
async fn provisioned(
    cluster: &Cluster,
    pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim,
) -> k8s_openapi::api::core::v1::PersistentVolume {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let uid = pvc.metadata.uid.clone().expect("a created PVC has a uid");
    let pvs: Api<PersistentVolume> = Api::all(cluster.client.clone());
    let deadline = std::time::Instant::now() + 2 * MINUTE;
    loop {
        cluster.assert_processes_alive();
        let found = pvs
            .list(&Default::default())
            .await
            .expect("list PVs")
            .items
            .into_iter()
            .find(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| c.uid.as_deref())
                    == Some(uid.as_str())
            });
        if let Some(pv) = found {
            return pv;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no PV for PVC {:?} after 2 minutes (is csi-provisioner running?)",
            pvc.metadata.name
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn volume_handle(pv: &k8s_openapi::api::core::v1::PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.volume_handle.clone())
        .expect("a CSI PV")
}

#[tokio::test]
#[ignore = "needs a cluster with the external-snapshotter CRDs and snapshot-controller, the CSI sidecars in BULWARK_E2E_CSI_SIDECARS, root; BULWARK_E2E=1"]
async fn pvc_written_backed_up_as_a_volume_snapshot_and_restored_to_a_new_pvc() {
    use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::StorageClass;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let cluster = Cluster::start(Options {
        csi: true,
        ..Options::default()
    })
    .await;
    let driver = cluster.csi_driver().to_owned();
    let namespace = cluster.namespace.clone();
    // Cluster-scoped classes named after the namespace (the harness deletes them).
    let classes: Api<StorageClass> = Api::all(cluster.client.clone());
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": namespace},
        "provisioner": driver,
        "allowVolumeExpansion": true,
        "parameters": {
            "recurringJobs": r#"[{"name":"e2e-snap","task":"snapshot","cron":"0 0 1 1 *","retain":2}]"#,
        },
    }))
    .expect("a StorageClass");
    classes
        .create(&PostParams::default(), &class)
        .await
        .expect("create the StorageClass");
    let class_gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotClass");
    let snapshot_classes: Api<DynamicObject> =
        Api::all_with(cluster.client.clone(), &ApiResource::from_gvk(&class_gvk));
    let backup_class = format!("{namespace}-bak");
    let snapshot_class: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": backup_class, "labels": {"bulwark.io/e2e-namespace": namespace}},
        "driver": driver, "deletionPolicy": "Delete",
        "parameters": {"type": "bak"},
    }))
    .expect("a VolumeSnapshotClass");
    snapshot_classes
        .create(&PostParams::default(), &snapshot_class)
        .await
        .expect("create the VolumeSnapshotClass");

    let pvcs: Api<PersistentVolumeClaim> = cluster.api();
    let pvc = |name: &str, mode: &str, source: Option<&str>| -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            // What kube-controller-manager adds for an external provisioner; a bare API
            // server has none.
            "metadata": {"name": name, "annotations": {"volume.kubernetes.io/storage-provisioner": driver}},
            "spec": {
                "storageClassName": namespace,
                "accessModes": [mode],
                "resources": {"requests": {"storage": "64Mi"}},
                "dataSource": source.map(|s| serde_json::json!({
                    "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": s,
                })),
            },
        }))
        .expect("a PVC")
    };
    let data = pvcs
        .create(&PostParams::default(), &pvc("data", "ReadWriteOnce", None))
        .await
        .expect("create the PVC");
    let volume_name = volume_handle(&provisioned(&cluster, &data).await);
    // The StorageClass's legacy job exists and binds the volume.
    let volumes: Api<Volume> = cluster.api();
    let volume = volumes.get(&volume_name).await.expect("the PVC's Volume");
    assert_eq!(
        volume
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("recurring-job.bulwark.io/e2e-snap")),
        Some(&"enabled".to_owned())
    );
    let jobs: Api<RecurringJob> = cluster.api();
    assert_eq!(jobs.get("e2e-snap").await.expect("the job").spec.retain, 2);

    let mut kubelet =
        e2e::csi::Kubelet::connect(&cluster.node_socket(0), cluster.work_dir("kubelet")).await;
    let mounted = kubelet.mount(&volume_name).await;
    let written = pattern(6 << 20, 42);
    {
        let file =
            std::fs::File::create(mounted.join("blob")).expect("create a file in the pod's volume");
        file.write_all_at(&written, 0).expect("write");
        file.sync_all().expect("fsync reaches the volume");
    }

    let snapshot_gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let volume_snapshots: Api<DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &namespace,
        &ApiResource::from_gvk(&snapshot_gvk),
    );
    let volume_snapshot: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "data-backup"},
        "spec": {"volumeSnapshotClassName": backup_class,
                 "source": {"persistentVolumeClaimName": "data"}},
    }))
    .expect("a VolumeSnapshot");
    volume_snapshots
        .create(&PostParams::default(), &volume_snapshot)
        .await
        .expect("create the VolumeSnapshot");
    let ready = cluster
        .wait_for(
            &volume_snapshots,
            "data-backup",
            "ready to use (through snapshot-controller and csi-snapshotter)",
            3 * MINUTE,
            |s| s.data["status"]["readyToUse"] == true,
        )
        .await;
    let contents_gvk =
        GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent");
    let contents: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource::from_gvk(&contents_gvk),
    );
    let content_name = ready.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .expect("bound")
        .to_owned();
    let content = contents.get(&content_name).await.expect("the content");
    let handle = content.data["status"]["snapshotHandle"]
        .as_str()
        .expect("a handle")
        .to_owned();
    let backup_name = match handle_codec::decode(&handle).expect("a handle of ours") {
        handle_codec::SnapshotHandle::Backup { volume, backup } => {
            assert_eq!(volume.as_str(), volume_name);
            backup.into_string()
        }
        other => panic!("a bak class made {other:?}"),
    };
    let backups: Api<Backup> = cluster.api();
    let backup = backups.get(&backup_name).await.expect("the Backup");
    assert_eq!(objects::backup_state(&backup), Some(BackupState::Completed));

    let restored = pvcs
        .create(
            &PostParams::default(),
            &pvc("restored", "ReadWriteOnce", Some("data-backup")),
        )
        .await
        .expect("create the restored PVC");
    let restored_name = volume_handle(&provisioned(&cluster, &restored).await);
    let seen = kubelet.mount(&restored_name).await;
    let read_back = std::fs::read(seen.join("blob")).expect("the file is in the restored PVC");
    assert!(read_back == written, "the restored PVC holds other bytes");
    kubelet.unmount(&restored_name).await;
    kubelet.unmount(&volume_name).await;

    // Growing the PVC grows its Volume (csi-resizer → ControllerExpandVolume) and the agent
    // grows the data.
    let grow = serde_json::json!({"spec": {"resources": {"requests": {"storage": "128Mi"}}}});
    pvcs.patch("restored", &PatchParams::default(), &Patch::Merge(&grow))
        .await
        .expect("grow the PVC");
    cluster
        .wait_for(
            &volumes,
            &restored_name,
            "grown to 128 MiB",
            2 * MINUTE,
            |v| v.spec.size_bytes() == Some(128 << 20),
        )
        .await;
    let file = cluster.volume_file(0, &restored_name);
    let deadline = std::time::Instant::now() + MINUTE;
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < 128 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never grew the data"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A PVC asking for what a Bulwark volume cannot be gets an Event saying so, and no volume.
    let before = volumes
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .len();
    pvcs.create(
        &PostParams::default(),
        &pvc("shared", "ReadWriteMany", None),
    )
    .await
    .expect("create the RWX PVC");
    let events: Api<Event> = cluster.api();
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let refused = events
            .list(&Default::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("shared")
                    && e.reason.as_deref() == Some("ProvisioningFailed")
            });
        if let Some(event) = refused {
            let message = event.message.unwrap_or_default();
            assert!(
                message.contains("access_mode MULTI_NODE_MULTI_WRITER is not supported"),
                "{message}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ProvisioningFailed Event for the RWX PVC"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        volumes
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len(),
        before,
        "nothing is created for a refused PVC"
    );
}
