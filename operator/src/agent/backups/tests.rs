//! Backups on real temp dirs with the real engine and backupstore: the data path alone, and
//! whole reconciles against the mock API server (file:// and S3 targets).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use backupstore::restore::RestoreOptions;
use backupstore::target::{Credentials, TargetUrl};
use backupstore::{Compression, FileSink, Store};
use engine::{Engine, VolumeSink};
use tokio_util::sync::CancellationToken;

use super::data::{self, Kind, Request};
use crate::stores::Stores;

const MIB: u64 = 1 << 20;
const VOLUME_SIZE: u64 = 64 * MIB;

/// Deterministic, incompressible-enough bytes (no all-zero blocks).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn request(volume: &str, backup: &str, snapshot: &str) -> Request {
    Request {
        volume: volume.to_owned(),
        backup: backup.to_owned(),
        snapshot: snapshot.to_owned(),
        full: false,
        block_size: 2 * MIB,
        compression: Compression::Lz4,
        labels: BTreeMap::from([("app".to_owned(), "test".to_owned())]),
        workers: 4,
        progress: None,
        cancel: CancellationToken::new(),
    }
}

fn snapshot_bytes(volume: &Arc<engine::Volume>, snapshot: &str) -> Vec<u8> {
    let reader = volume.snapshot_reader(snapshot).unwrap();
    let mut buf = vec![0; reader.size() as usize];
    reader.read_at(0, &mut buf).unwrap();
    buf
}

fn volume_bytes(volume: &engine::Volume) -> Vec<u8> {
    let mut buf = vec![0; volume.size() as usize];
    volume.read_at(0, &mut buf).unwrap();
    buf
}

async fn restore_to_file(store: &Store, volume: &str, backup: &str, path: &Path) -> Vec<u8> {
    let size = store.restore_size(volume, backup).await.unwrap();
    let sink = Arc::new(FileSink::create(path, size).unwrap());
    store
        .restore(volume, backup, sink, RestoreOptions::default())
        .await
        .unwrap();
    std::fs::read(path).unwrap()
}

pub(super) async fn file_store(dir: &Path) -> (Store, String) {
    let target = dir.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let url = format!("file://{}", target.display());
    let store = Stores::default()
        .open_with(
            "default",
            TargetUrl::parse(&url).unwrap(),
            Credentials::default(),
        )
        .await
        .unwrap();
    (store, url)
}

/// A volume full of data with snapshot `s1`.
pub(super) fn filled_volume(engine: &Engine, name: &str) -> Arc<engine::Volume> {
    let volume = engine.create_volume(name, VOLUME_SIZE, None).unwrap();
    volume
        .write_at(0, &pattern(VOLUME_SIZE as usize, 1))
        .unwrap();
    volume.snapshot("s1", BTreeMap::new()).unwrap();
    volume
}

/// Full backup → restore equal; 1 % more written → incremental reads only the changed block →
/// restore equal; `full` mode rereads everything but uploads nothing new; after a revert the
/// last backup's snapshot is no ancestor: a full scan, still equal on restore.
async fn full_incremental_round_trip(store: &Store, dir: &Path) {
    let engine = Engine::open(dir.join("data")).unwrap();
    let volume = filled_volume(&engine, "vol-a");

    let first = data::back_up(&volume, store, request("vol-a", "backup-1", "s1"))
        .await
        .unwrap();
    assert_eq!(first.kind, Kind::Full);
    assert_eq!(first.base_snapshot, None);
    let c = first.outcome.counters;
    assert_eq!(c.bytes_read, VOLUME_SIZE);
    assert_eq!(c.bytes_changed, VOLUME_SIZE);
    assert!(c.bytes_uploaded > 0);
    assert_eq!(first.size, VOLUME_SIZE);
    assert_eq!(first.volume_size, VOLUME_SIZE);
    assert_eq!(first.compression, Compression::Lz4);
    let restored = restore_to_file(store, "vol-a", "backup-1", &dir.join("r1.img")).await;
    assert!(
        restored == snapshot_bytes(&volume, "s1"),
        "backup-1 restores s1"
    );

    // 1 % of the volume, inside one 2 MiB block.
    let changed = (VOLUME_SIZE / 100) as usize;
    volume
        .write_at(10 * MIB + 4096, &pattern(changed, 2))
        .unwrap();
    volume.snapshot("s2", BTreeMap::new()).unwrap();
    let second = data::back_up(&volume, store, request("vol-a", "backup-2", "s2"))
        .await
        .unwrap();
    assert_eq!(second.kind, Kind::Incremental);
    assert_eq!(second.base_snapshot.as_deref(), Some("s1"));
    let c = second.outcome.counters;
    assert_eq!(c.bytes_read, 2 * MIB, "only the changed block is read");
    assert_eq!(c.bytes_changed, 2 * MIB);
    assert!(c.bytes_uploaded <= 2 * MIB + 4096, "{c:?}");
    assert_eq!(second.size, VOLUME_SIZE, "the map still covers the volume");
    let into = engine.create_volume("vol-b", VOLUME_SIZE, None).unwrap();
    store
        .restore(
            "vol-a",
            "backup-2",
            Arc::new(VolumeSink::new(into.clone())),
            RestoreOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        volume_bytes(&into) == snapshot_bytes(&volume, "s2"),
        "backup-2 restores s2 into a new volume"
    );

    let mut forced = request("vol-a", "backup-3", "s2");
    forced.full = true;
    let third = data::back_up(&volume, store, forced).await.unwrap();
    assert_eq!(third.kind, Kind::Full);
    let c = third.outcome.counters;
    assert_eq!(c.bytes_read, VOLUME_SIZE);
    assert_eq!(c.blocks_new, 0, "the store already has every block");
    assert_eq!(c.bytes_uploaded, 0);

    volume.revert("s1").unwrap();
    volume.write_at(0, &pattern(4096, 3)).unwrap();
    volume.snapshot("s3", BTreeMap::new()).unwrap();
    let fourth = data::back_up(&volume, store, request("vol-a", "backup-4", "s3"))
        .await
        .unwrap();
    assert_eq!(fourth.kind, Kind::Full);
    assert!(
        fourth
            .fallback
            .as_deref()
            .is_some_and(|f| f.contains("\"s2\"")),
        "{:?}",
        fourth.fallback
    );
    assert_eq!(fourth.outcome.counters.bytes_read, VOLUME_SIZE);
    let restored = restore_to_file(store, "vol-a", "backup-4", &dir.join("r4.img")).await;
    assert!(
        restored == snapshot_bytes(&volume, "s3"),
        "backup-4 restores s3"
    );
}

#[tokio::test]
async fn data_path_on_a_file_target() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = file_store(dir.path()).await;
    full_incremental_round_trip(&store, dir.path()).await;
}

#[tokio::test]
async fn data_path_on_s3() {
    let s3 = backupstore::testing::SeaweedFs::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Stores::default()
        .open_with("s3", s3.target_url("data-path"), s3.credentials())
        .await
        .unwrap();
    full_incremental_round_trip(&store, dir.path()).await;
}

/// An agent killed mid-backup leaves an unfinished (placeholder) backup cfg in the store; the
/// re-run under the same name overwrites it and completes.
#[tokio::test]
async fn rerun_overwrites_an_unfinished_remote_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (store, url) = file_store(dir.path()).await;
    let engine = Engine::open(dir.path().join("data")).unwrap();
    let volume = filled_volume(&engine, "vol-a");
    data::back_up(&volume, &store, request("vol-a", "backup-1", "s1"))
        .await
        .unwrap();
    volume.write_at(0, &pattern(4096, 9)).unwrap();
    volume.snapshot("s2", BTreeMap::new()).unwrap();

    // What a crash after the store's start metadata leaves behind.
    let root = Path::new(url.strip_prefix("file://").unwrap());
    let cfg = root.join(backupstore::names::backup_cfg("vol-a", "backup-2"));
    let placeholder = backupstore::format::BackupConfig::placeholder("backup-2", "vol-a", "lz4");
    std::fs::write(&cfg, placeholder.to_json()).unwrap();
    assert!(matches!(
        store.restore_size("vol-a", "backup-2").await,
        Err(backupstore::Error::BackupInProgress { .. })
    ));

    let rerun = data::back_up(&volume, &store, request("vol-a", "backup-2", "s2"))
        .await
        .unwrap();
    assert_eq!(
        rerun.kind,
        Kind::Incremental,
        "the last completed backup is the base"
    );
    let restored = restore_to_file(&store, "vol-a", "backup-2", &dir.path().join("r.img")).await;
    assert!(restored == snapshot_bytes(&volume, "s2"));

    // A crash after the store completed but before the status said so: the re-run finds its
    // own backup as the last one (same snapshot, nothing to diff), scans in full and uploads
    // nothing new; the backup stays restorable.
    let again = data::back_up(&volume, &store, request("vol-a", "backup-2", "s2"))
        .await
        .unwrap();
    assert_eq!(again.kind, Kind::Full);
    assert!(again.fallback.is_some());
    assert_eq!(again.outcome.counters.bytes_uploaded, 0);
    assert_eq!(again.outcome.counters.bytes_changed, 0);
    let restored = restore_to_file(&store, "vol-a", "backup-2", &dir.path().join("r2.img")).await;
    assert!(restored == snapshot_bytes(&volume, "s2"));
}

#[tokio::test]
async fn missing_snapshot_and_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = file_store(dir.path()).await;
    let engine = Engine::open(dir.path().join("data")).unwrap();
    let volume = filled_volume(&engine, "vol-a");
    let missing = data::back_up(&volume, &store, request("vol-a", "backup-1", "nope")).await;
    assert!(
        matches!(missing, Err(data::DataError::SnapshotMissing { .. })),
        "{missing:?}"
    );

    let cancelled = request("vol-a", "backup-1", "s1");
    cancelled.cancel.cancel();
    let result = data::back_up(&volume, &store, cancelled).await;
    assert!(
        matches!(result, Err(data::DataError::Cancelled)),
        "{result:?}"
    );
    // Nothing unfinished is left behind: the next backup is a clean full one.
    let next = data::back_up(&volume, &store, request("vol-a", "backup-1", "s1"))
        .await
        .unwrap();
    assert_eq!(next.kind, Kind::Full);
}

#[tokio::test]
async fn block_size_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = file_store(dir.path()).await;
    let engine = Engine::open(dir.path().join("data")).unwrap();
    let volume = filled_volume(&engine, "vol-a");
    data::back_up(&volume, &store, request("vol-a", "backup-1", "s1"))
        .await
        .unwrap();
    let mut big = request("vol-a", "backup-2", "s1");
    big.block_size = 16 * MIB;
    big.full = true;
    let result = data::back_up(&volume, &store, big).await;
    assert!(
        matches!(
            result,
            Err(data::DataError::Store(
                backupstore::Error::BlockSizeMismatch { .. }
            ))
        ),
        "{result:?}"
    );
}

// ---- whole reconciles against the mock API server ----

mod reconcile {
    use std::sync::Mutex;
    use std::time::Duration;

    use http::{Method, StatusCode};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::{Value, json};

    use super::*;
    use crate::agent::AgentContext;
    use crate::agent::backups::BackupAgent;
    use crate::controllers::testing::{ApiServer, Recorded, json_response, not_found, status};
    use crate::events::{Events, Published};
    use crate::metrics::Metrics;

    const NS: &str = "bulwark-system";
    const NODE: &str = "node-a";
    const API: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system";

    struct Harness {
        agent: Arc<BackupAgent>,
        events: Arc<Mutex<Vec<Published>>>,
        engine: Arc<Engine>,
        metrics: Metrics,
    }

    fn harness(client: kube::Client, dir: &Path) -> Harness {
        // No progress writes in scripted tests: every request is asserted.
        harness_with(client, dir, Duration::from_secs(3600), 4)
    }

    fn harness_with(
        client: kube::Client,
        dir: &Path,
        progress_every: Duration,
        workers: u32,
    ) -> Harness {
        let (events, published) = Events::memory();
        let engine = Arc::new(Engine::open(dir.join("data")).unwrap());
        let metrics = Metrics::new().unwrap();
        let config = config::AgentConfig {
            common: config::CommonConfig {
                cluster: config::ClusterConfig {
                    kubeconfig: None,
                    context: None,
                },
                namespace: NS.to_owned(),
                http_addr: "127.0.0.1:0".parse().unwrap(),
                log_format: config::LogFormat::Text,
                log_filter: "info".to_owned(),
            },
            node_name: NODE.to_owned(),
            data_dir: dir.join("data"),
            mount_dir: dir.join("mnt"),
            max_concurrent_operations: 2,
            backup_workers: workers,
            csi_socket: None,
            csi_driver_name: "driver.bulwark.io".into(),
        };
        let ctx = Arc::new(AgentContext {
            client,
            namespace: NS.to_owned(),
            node: NODE.to_owned(),
            config: Arc::new(config),
            engine: engine.clone(),
            stores: Arc::new(Stores::default()),
            events,
            metrics: metrics.clone(),
            frontend: None,
            operations: Arc::new(tokio::sync::Semaphore::new(2)),
        });
        let agent =
            BackupAgent::new(ctx, CancellationToken::new()).with_progress_every(progress_every);
        Harness {
            agent: Arc::new(agent),
            events: published,
            engine,
            metrics,
        }
    }

    fn backup_json(name: &str, spec: Value, status: Value, finalizers: &[&str]) -> Value {
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
            "metadata": {"name": name, "namespace": NS, "uid": "u-1", "generation": 1,
                         "finalizers": finalizers},
            "spec": spec,
            "status": status,
        })
    }

    fn volume_json(status: Value) -> Value {
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "vol-a", "namespace": NS},
            "spec": {"size": "64Mi", "backupTargetName": "default"},
            "status": status,
        })
    }

    fn ready_volume() -> Value {
        volume_json(json!({"ownerID": NODE, "state": "Ready"}))
    }

    fn target_json(url: &str, secret: Option<&str>) -> Value {
        let mut spec = json!({"backupTargetURL": url, "pollInterval": "300s"});
        if let Some(s) = secret {
            spec["credentialSecret"] = json!(s);
        }
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
            "metadata": {"name": "default", "namespace": NS},
            "spec": spec,
            "status": {"available": true},
        })
    }

    fn ok(r: Recorded, body: Value) {
        r.respond(json_response(StatusCode::OK, body));
    }

    /// Answer a status apply with the object carrying the applied status.
    fn echo_status(r: Recorded, mut object: Value) -> Value {
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert!(
            r.query.contains("fieldManager=bulwark-agent-backup") && r.query.contains("force=true"),
            "{}",
            r.query
        );
        let status = r.json()["status"].clone();
        object["status"] = status.clone();
        ok(r, object);
        status
    }

    fn published(h: &Harness) -> Vec<(String, bool)> {
        h.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.reason.clone(), e.warning))
            .collect()
    }

    fn counter(h: &Harness, kind: &str, name: &str) -> u64 {
        h.metrics
            .backup_bytes
            .with_label_values(&[kind, name])
            .get()
    }

    #[tokio::test]
    async fn claims_backs_up_and_records_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness(client, dir.path());
        let (store, url) = file_store(dir.path()).await;
        let volume = filled_volume(&h.engine, "vol-a");
        let agent = h.agent.clone();
        let task = tokio::spawn(async move { agent.reconcile("backup-1").await });

        let spec = json!({"volume": "vol-a", "snapshotName": "s1", "labels": {"app": "db"}});
        let object = backup_json("backup-1", spec.clone(), json!(null), &[]);
        let path = format!("{API}/backups/backup-1");
        ok(api.expect(Method::GET, &path).await, object.clone());
        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        ok(
            api.expect(Method::GET, &format!("{API}/backuptargets/default"))
                .await,
            target_json(&url, None),
        );

        // Claim: the finalizer first, then the status, before any data work.
        let finalizer = api.expect(Method::PATCH, &path).await;
        assert_eq!(
            finalizer.json(),
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["bulwark.io/remote-backup"]},
            ])
        );
        let with_finalizer = backup_json(
            "backup-1",
            spec.clone(),
            json!(null),
            &["bulwark.io/remote-backup"],
        );
        ok(finalizer, with_finalizer.clone());
        let claim = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            with_finalizer.clone(),
        );
        assert_eq!(claim["state"], "InProgress");
        assert_eq!(claim["ownerID"], NODE);
        assert_eq!(claim["progress"], 0);
        assert_eq!(claim["snapshotName"], "s1");
        assert_eq!(claim["backupTargetName"], "default");
        assert_eq!(claim["conditions"][0]["type"], "Completed");
        assert_eq!(claim["conditions"][0]["status"], "False");
        assert_eq!(claim["conditions"][0]["reason"], "InProgress");
        assert_eq!(
            claim.as_object().unwrap().len(),
            6,
            "only the agent's fields: {claim}"
        );

        let done = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            with_finalizer,
        );
        assert_eq!(done["state"], "Completed");
        assert_eq!(done["progress"], 100);
        assert_eq!(done["url"], format!("{url}?backup=backup-1&volume=vol-a"));
        assert_eq!(done["size"], VOLUME_SIZE);
        assert_eq!(done["volumeSize"], VOLUME_SIZE);
        assert_eq!(done["bytesRead"], VOLUME_SIZE);
        assert_eq!(done["bytesChanged"], VOLUME_SIZE);
        assert_eq!(done["bytesDeduplicated"], 0);
        assert_eq!(done["compressionMethod"], "lz4");
        assert_eq!(done["blockSize"], 2 * MIB);
        assert_eq!(done["reUploadedDataSize"], 0);
        assert!(done["newlyUploadedDataSize"].as_u64().unwrap() > 0);
        assert_eq!(done["bytesUploaded"], done["newlyUploadedDataSize"]);
        assert!(done["snapshotCreatedAt"].is_string() && done["backupCreatedAt"].is_string());
        assert_eq!(done["conditions"][0]["status"], "True");
        assert_eq!(done["conditions"][0]["reason"], "Completed");

        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        let last = api
            .expect(Method::PATCH, &format!("{API}/volumes/vol-a/status"))
            .await;
        assert!(last.query.contains("fieldManager=bulwark-agent-backup"));
        let body = last.json();
        assert_eq!(body["kind"], "Volume");
        assert_eq!(body["status"]["lastBackup"], "backup-1");
        assert_eq!(body["status"]["lastBackupAt"], done["snapshotCreatedAt"]);
        assert_eq!(body["status"].as_object().unwrap().len(), 2);
        ok(last, ready_volume());

        task.await.unwrap().unwrap();
        assert_eq!(
            published(&h),
            vec![
                ("BackupStarted".into(), false),
                ("BackupCompleted".into(), false)
            ]
        );
        assert_eq!(counter(&h, "full", "read"), VOLUME_SIZE);
        let restored =
            restore_to_file(&store, "vol-a", "backup-1", &dir.path().join("r.img")).await;
        assert!(restored == snapshot_bytes(&volume, "s1"));
        let info = store.inspect_backup("vol-a", "backup-1").await.unwrap();
        assert_eq!(
            info.labels.unwrap().get("app").map(String::as_str),
            Some("db")
        );
    }

    /// A Backup this node claimed before the agent restarted, naming no snapshot, to an S3
    /// target whose credentials come from a Secret: re-run from the start, the Snapshot object
    /// created by the earlier attempt is reused and its engine snapshot taken here.
    #[tokio::test]
    async fn restarted_backup_with_a_new_snapshot_to_s3() {
        let s3 = backupstore::testing::SeaweedFs::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness(client, dir.path());
        let volume = filled_volume(&h.engine, "vol-a");
        volume.write_at(0, &pattern(4096, 5)).unwrap();
        let agent = h.agent.clone();
        let task = tokio::spawn(async move { agent.reconcile("backup-s3").await });

        let spec = json!({"volume": "vol-a"});
        let before = json!({"state": "InProgress", "ownerID": NODE, "progress": 40,
                            "snapshotName": "backup-s3", "backupTargetName": "default"});
        let object = backup_json("backup-s3", spec, before, &["bulwark.io/remote-backup"]);
        let path = format!("{API}/backups/backup-s3");
        ok(api.expect(Method::GET, &path).await, object.clone());
        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        let url = s3.target_url("cluster").to_string();
        ok(
            api.expect(Method::GET, &format!("{API}/backuptargets/default"))
                .await,
            target_json(&url, Some("s3-creds")),
        );
        // The finalizer is there already: the claim is the status apply alone.
        let claim = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object.clone(),
        );
        assert_eq!(claim["progress"], 0, "re-run from the start");
        assert_eq!(claim["conditions"][0]["reason"], "Restarted");
        assert!(
            claim["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("restarted after agent restart"),
            "{claim}"
        );

        let create = api.expect(Method::POST, &format!("{API}/snapshots")).await;
        let snapshot = create.json();
        assert_eq!(snapshot["metadata"]["name"], "backup-s3");
        assert_eq!(
            snapshot["metadata"]["labels"]["bulwark.io/backup"],
            "backup-s3"
        );
        assert_eq!(snapshot["spec"]["volume"], "vol-a");
        create.respond(status(409, "AlreadyExists"));
        let existing = json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
            "metadata": {"name": "backup-s3", "namespace": NS},
            "spec": {"volume": "vol-a"},
        });
        ok(
            api.expect(Method::GET, &format!("{API}/snapshots/backup-s3"))
                .await,
            existing.clone(),
        );
        let finalizer = api
            .expect(Method::PATCH, &format!("{API}/snapshots/backup-s3"))
            .await;
        assert_eq!(
            finalizer.json()[1]["value"],
            json!(["bulwark.io/snapshot-data"])
        );
        ok(finalizer, existing);

        let creds = s3.credentials();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("s3-creds".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (
                    "AWS_ACCESS_KEY_ID".to_owned(),
                    ByteString(creds.access_key_id.clone().unwrap().into_bytes()),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_owned(),
                    ByteString(creds.secret_access_key.clone().unwrap().into_bytes()),
                ),
                (
                    "AWS_ENDPOINTS".to_owned(),
                    ByteString(creds.endpoint.clone().unwrap().into_bytes()),
                ),
            ])),
            ..Default::default()
        };
        ok(
            api.expect(
                Method::GET,
                &format!("/api/v1/namespaces/{NS}/secrets/s3-creds"),
            )
            .await,
            serde_json::to_value(&secret).unwrap(),
        );

        let done = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object,
        );
        assert_eq!(done["state"], "Completed", "{done}");
        assert_eq!(done["snapshotName"], "backup-s3");
        assert_eq!(done["url"], format!("{url}?backup=backup-s3&volume=vol-a"));
        assert_eq!(done["bytesRead"], VOLUME_SIZE);
        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        let last = api
            .expect(Method::PATCH, &format!("{API}/volumes/vol-a/status"))
            .await;
        assert_eq!(last.json()["status"]["lastBackup"], "backup-s3");
        ok(last, ready_volume());
        task.await.unwrap().unwrap();

        let snapshots = volume.list_snapshots().unwrap();
        assert!(
            snapshots.iter().any(|s| s.name == "backup-s3"),
            "engine snapshot taken"
        );
        let store = Stores::default()
            .open_with("s3", s3.target_url("cluster"), s3.credentials())
            .await
            .unwrap();
        let restored =
            restore_to_file(&store, "vol-a", "backup-s3", &dir.path().join("r.img")).await;
        assert!(restored == snapshot_bytes(&volume, "backup-s3"));
        assert_eq!(
            published(&h),
            vec![
                ("BackupStarted".into(), false),
                ("BackupCompleted".into(), false)
            ]
        );
    }

    /// Scripted failure: the reads the agent makes (`reads`, answered in order), then the
    /// Error status it applies, whose condition has `reason` and whose message names `field`.
    async fn fails_with(name: &str, reads: Vec<(&str, Option<Value>)>, reason: &str, field: &str) {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness(client, dir.path());
        let agent = h.agent.clone();
        let owned = name.to_owned();
        let task = tokio::spawn(async move { agent.reconcile(&owned).await });
        let object = backup_json(name, json!({"volume": "vol-a"}), json!(null), &[]);
        let path = format!("{API}/backups/{name}");
        ok(api.expect(Method::GET, &path).await, object.clone());
        for (read, answer) in reads {
            let r = api.expect(Method::GET, &format!("{API}/{read}")).await;
            match answer {
                Some(body) => ok(r, body),
                None => r.respond(not_found()),
            }
        }
        let failed = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object,
        );
        assert_eq!(failed["state"], "Error");
        assert_eq!(failed["ownerID"], NODE);
        assert_eq!(failed["conditions"][0]["type"], "Completed");
        assert_eq!(failed["conditions"][0]["status"], "False");
        assert_eq!(failed["conditions"][0]["reason"], reason);
        let message = failed["error"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
        assert_eq!(failed["conditions"][0]["message"], message);
        task.await.unwrap().unwrap();
        let events = h.events.lock().unwrap().clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "BackupFailed");
        assert!(events[0].warning);
        assert_eq!(events[0].note, message);
    }

    #[tokio::test]
    async fn missing_volume_fails_cleanly() {
        fails_with(
            "backup-1",
            vec![("volumes/vol-a", None)],
            "VolumeNotFound",
            "spec.volume",
        )
        .await;
    }

    #[tokio::test]
    async fn invalid_backup_name_fails_cleanly() {
        let target = target_json("file:///backups", None);
        fails_with(
            "b",
            vec![
                ("volumes/vol-a", Some(ready_volume())),
                ("backuptargets/default", Some(target)),
            ],
            "InvalidName",
            "metadata.name",
        )
        .await;
    }

    #[tokio::test]
    async fn missing_target_fails_cleanly() {
        fails_with(
            "backup-1",
            vec![
                ("volumes/vol-a", Some(ready_volume())),
                ("backuptargets/default", None),
            ],
            "TargetNotFound",
            "spec.backupTargetName",
        )
        .await;
    }

    #[tokio::test]
    async fn a_recurring_backup_of_an_unchanged_volume_is_skipped_before_any_claim() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness(client, dir.path());
        let (store, url) = file_store(dir.path()).await;
        let volume = filled_volume(&h.engine, "vol-a");
        // s1 (the snapshot the head sits on) is backed up, and nothing was written since.
        let source = volume.backup_source(None, "s1").unwrap();
        store
            .backup(
                Arc::new(source),
                backupstore::BackupOptions::new("vol-a", "s1"),
            )
            .await
            .unwrap();
        let agent = h.agent.clone();
        let task = tokio::spawn(async move { agent.reconcile("backup-2").await });
        let mut object = backup_json("backup-2", json!({"volume": "vol-a"}), json!(null), &[]);
        object["metadata"]["annotations"] = json!({"bulwark.io/skip-if-unchanged": "0"});
        let path = format!("{API}/backups/backup-2");
        ok(api.expect(Method::GET, &path).await, object.clone());
        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        ok(
            api.expect(Method::GET, &format!("{API}/backuptargets/default"))
                .await,
            target_json(&url, None),
        );
        let status = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object,
        );
        assert_eq!(
            task.await.unwrap().unwrap(),
            kube::runtime::controller::Action::await_change()
        );
        let condition = &status["conditions"][0];
        assert_eq!(condition["type"], "Completed");
        assert_eq!(condition["reason"], "Skipped");
        assert!(
            condition["message"]
                .as_str()
                .unwrap()
                .starts_with("Unchanged:"),
            "{condition}"
        );
        assert!(
            status.get("state").is_none(),
            "a skipped backup is never claimed: {status}"
        );
        assert_eq!(published(&h), vec![("Skipped".to_owned(), false)]);
        assert_eq!(
            store.list_backup_names("vol-a").await.unwrap().len(),
            1,
            "nothing was uploaded"
        );
    }

    #[tokio::test]
    async fn a_backup_deleted_while_its_agent_was_down_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness(client, dir.path());
        let agent = h.agent.clone();
        let task = tokio::spawn(async move { agent.reconcile("backup-1").await });
        let mut object = backup_json(
            "backup-1",
            json!({"volume": "vol-a"}),
            json!({"state": "InProgress", "ownerID": NODE}),
            &["bulwark.io/remote-backup"],
        );
        object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let path = format!("{API}/backups/backup-1");
        ok(api.expect(Method::GET, &path).await, object.clone());
        let status = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object,
        );
        task.await.unwrap().unwrap();
        assert_eq!(status["state"], "Error");
        assert_eq!(status["conditions"][0]["reason"], "Deleted");
        assert_eq!(published(&h), vec![("BackupFailed".into(), true)]);
    }

    #[tokio::test]
    async fn finished_and_foreign_backups_cost_one_read() {
        for status in [
            json!({"state": "Completed"}),
            json!({"state": "Error", "ownerID": NODE}),
            json!({"state": "InProgress", "ownerID": "node-b"}),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (client, mut api) = ApiServer::start();
            let h = harness(client, dir.path());
            let agent = h.agent.clone();
            let task = tokio::spawn(async move { agent.reconcile("backup-1").await });
            let object = backup_json("backup-1", json!({"volume": "vol-a"}), status, &[]);
            ok(
                api.expect(Method::GET, &format!("{API}/backups/backup-1"))
                    .await,
                object,
            );
            task.await.unwrap().unwrap();
            assert!(published(&h).is_empty());
        }
    }

    #[tokio::test]
    async fn missing_snapshot_fails_after_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness(client, dir.path());
        let (_, url) = file_store(dir.path()).await;
        filled_volume(&h.engine, "vol-a");
        let agent = h.agent.clone();
        let task = tokio::spawn(async move { agent.reconcile("backup-1").await });
        let spec = json!({"volume": "vol-a", "snapshotName": "gone"});
        let object = backup_json("backup-1", spec, json!(null), &["bulwark.io/remote-backup"]);
        let path = format!("{API}/backups/backup-1");
        ok(api.expect(Method::GET, &path).await, object.clone());
        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        ok(
            api.expect(Method::GET, &format!("{API}/backuptargets/default"))
                .await,
            target_json(&url, None),
        );
        let claim = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object.clone(),
        );
        assert_eq!(claim["state"], "InProgress");
        api.expect(Method::GET, &format!("{API}/snapshots/gone"))
            .await
            .respond(not_found());
        let failed = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object,
        );
        assert_eq!(failed["state"], "Error");
        assert_eq!(failed["snapshotName"], "gone");
        assert_eq!(failed["conditions"][0]["reason"], "SnapshotNotFound");
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("spec.snapshotName")
        );
        task.await.unwrap().unwrap();
        assert_eq!(
            published(&h),
            vec![
                ("BackupStarted".into(), false),
                ("BackupFailed".into(), true)
            ]
        );
    }

    /// Progress is written while the backup runs (rising, below 100); a progress write that
    /// shows the Backup being deleted stops the upload and leaves nothing in the store.
    #[tokio::test]
    async fn progress_is_reported_and_deletion_stops_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        let (client, mut api) = ApiServer::start();
        let h = harness_with(client, dir.path(), Duration::from_millis(1), 1);
        let (store, url) = file_store(dir.path()).await;
        filled_volume(&h.engine, "vol-a");
        let agent = h.agent.clone();
        let task = tokio::spawn(async move { agent.reconcile("backup-1").await });
        let spec = json!({"volume": "vol-a", "snapshotName": "s1"});
        let object = backup_json("backup-1", spec, json!(null), &["bulwark.io/remote-backup"]);
        let path = format!("{API}/backups/backup-1");
        ok(api.expect(Method::GET, &path).await, object.clone());
        ok(
            api.expect(Method::GET, &format!("{API}/volumes/vol-a"))
                .await,
            ready_volume(),
        );
        ok(
            api.expect(Method::GET, &format!("{API}/backuptargets/default"))
                .await,
            target_json(&url, None),
        );
        let claim = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object.clone(),
        );
        assert_eq!(claim["progress"], 0);

        let first = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            object.clone(),
        );
        assert_eq!(
            first["state"], "InProgress",
            "the backup is still running: {first}"
        );
        let p1 = first["progress"].as_i64().unwrap();
        assert!((1..100).contains(&p1), "{p1}");
        let mut deleting = object;
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let second = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            deleting.clone(),
        );
        assert!(second["progress"].as_i64().unwrap() > p1);
        // No InProgress is left behind: the controller's deletion waits for running backups.
        // A progress tick may still land before the cancellation does (a loaded machine).
        let mut stopped = echo_status(
            api.expect(Method::PATCH, &format!("{path}/status")).await,
            deleting.clone(),
        );
        while stopped["state"] == "InProgress" {
            stopped = echo_status(
                api.expect(Method::PATCH, &format!("{path}/status")).await,
                deleting.clone(),
            );
        }
        assert_eq!(stopped["state"], "Error");
        assert_eq!(stopped["conditions"][0]["reason"], "Deleted");
        task.await.unwrap().unwrap();
        assert!(matches!(
            store.inspect_backup("vol-a", "backup-1").await,
            Err(backupstore::Error::BackupNotFound { .. }
                | backupstore::Error::VolumeNotFound { .. })
        ));
        assert_eq!(
            published(&h),
            vec![
                ("BackupStarted".into(), false),
                ("BackupFailed".into(), true)
            ]
        );
    }
}
