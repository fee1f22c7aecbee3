//! Tests of the agent's volume work: the pure decision and status builders (tables), and
//! reconciles against the mock API server with a real engine in a temp dir (exact requests and
//! status bodies). Test helpers here are shared with the snapshot and data-path tests.

use std::path::Path;
use std::sync::Mutex;

use backupstore::target::TargetUrl;
use backupstore::{BackupOptions, Store};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::controllers::testing::{ApiServer, json_response, not_found};
use crate::events::{Events, Published};
use crate::stores::Stores;

pub const NS: &str = "bulwark-system";
pub const NODE: &str = "n1";
pub const MIB: u64 = 1 << 20;

/// An agent context on a mock API server, with a real engine under `dir` and no frontend.
pub fn context(
    client: kube::Client,
    dir: &Path,
) -> (Arc<AgentContext>, Arc<Mutex<Vec<Published>>>) {
    context_with(client, dir, None)
}

/// [`context`] with a FUSE frontend.
pub fn context_with(
    client: kube::Client,
    dir: &Path,
    frontend: Option<engine::frontend::MountedVolumes>,
) -> (Arc<AgentContext>, Arc<Mutex<Vec<Published>>>) {
    let (events, published) = Events::memory();
    let config = config::AgentConfig {
        common: config::CommonConfig {
            cluster: config::ClusterConfig {
                kubeconfig: None,
                context: None,
            },
            namespace: NS.to_owned(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            log_format: config::LogFormat::Text,
            log_filter: "info".to_owned(),
        },
        node_name: NODE.to_owned(),
        data_dir: dir.to_path_buf(),
        mount_dir: dir.join("mnt"),
        max_concurrent_operations: 2,
        backup_workers: 2,
        csi_socket: None,
        csi_driver_name: "driver.bulwark.io".into(),
    };
    let ctx = AgentContext {
        client,
        namespace: NS.to_owned(),
        node: NODE.to_owned(),
        config: Arc::new(config),
        engine: Arc::new(engine::Engine::open(dir).expect("engine opens")),
        stores: Arc::new(Stores::default()),
        events,
        metrics: crate::metrics::Metrics::new().expect("metrics"),
        frontend,
        operations: Arc::new(tokio::sync::Semaphore::new(2)),
    };
    (Arc::new(ctx), published)
}

/// The JSON of a Volume `name` with `spec` and `status`.
pub fn volume_json(name: &str, spec: Value, status: Value, finalizer: bool) -> Value {
    let mut v = json!({
        "apiVersion": "bulwark.io/v1beta1",
        "kind": "Volume",
        "metadata": {"name": name, "namespace": NS, "generation": 1, "uid": format!("uid-{name}")},
        "spec": spec,
        "status": status,
    });
    if finalizer {
        v["metadata"]["finalizers"] = json!([finalizers::VOLUME]);
    }
    v
}

pub fn volume(name: &str, spec: Value, status: Value, finalizer: bool) -> Volume {
    serde_json::from_value(volume_json(name, spec, status, finalizer)).expect("a valid Volume")
}

/// A Volume placed on this node (finalizer set, state Pending).
pub fn placed(name: &str, spec: Value) -> Volume {
    volume(
        name,
        spec,
        json!({"ownerID": NODE, "state": "Pending"}),
        true,
    )
}

pub fn volume_path(name: &str) -> String {
    format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/volumes/{name}")
}

/// `v` with every time stamp replaced by "<time>" (they come from the clock).
pub fn timeless(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "lastTransitionTime" || k == "lastRestoredAt" {
                        *v = json!("<time>");
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(list) => list.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The next request must be a status apply of volume `name`; returns its body (timeless).
pub async fn expect_status(server: &mut ApiServer, name: &str) -> Value {
    let path = volume_path(name);
    let respond = volume_json(name, json!({"size": "2Mi"}), json!({}), true);
    let request = server
        .expect(Method::PATCH, &format!("{path}/status"))
        .await;
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        request.query.contains("fieldManager=bulwark-agent"),
        "{}",
        request.query
    );
    assert!(request.query.contains("force=true"), "{}", request.query);
    let body = timeless(request.json());
    request.respond(json_response(StatusCode::OK, respond));
    body
}

pub fn events(published: &Mutex<Vec<Published>>) -> Vec<(bool, String)> {
    published
        .lock()
        .unwrap()
        .iter()
        .map(|p| (p.warning, p.reason.clone()))
        .collect()
}

fn read_all(ctx: &AgentContext, name: &str) -> Vec<u8> {
    let v = ctx.engine.open_volume(name).unwrap();
    let mut buf = vec![0u8; v.size() as usize];
    v.read_at(0, &mut buf).unwrap();
    buf
}

/// A recognisable pattern of `len` bytes.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

// ---- decide ----

fn with(mut v: Volume, f: impl FnOnce(&mut Volume)) -> Volume {
    f(&mut v);
    v
}

#[test]
fn decide_table() {
    let base = placed("v1", json!({"size": "3Mi"}));
    let none = Local::default();
    let data = Local {
        has_data: true,
        incomplete: false,
        size: Some(4 * MIB),
    };
    let half = Local {
        has_data: true,
        incomplete: true,
        size: None,
    };
    let deleting = |v: &mut Volume| {
        v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ))
    };
    let empty = Plan::Create {
        source: Source::Empty,
        size: 4 * MIB,
        discard_partial: false,
    };
    let cases: Vec<(&str, Volume, Local, Plan)> = vec![
        ("other node", volume("v1", json!({"size": "3Mi"}), json!({"ownerID": "n2"}), true), data, Plan::Skip),
        ("not placed", volume("v1", json!({"size": "3Mi"}), json!({}), true), none, Plan::Skip),
        ("no finalizer", volume("v1", json!({"size": "3Mi"}), json!({"ownerID": NODE}), false), none, Plan::AddFinalizer),
        ("empty, rounded to 2 MiB", base.clone(), none, empty.clone()),
        ("data present", base.clone(), data, Plan::Serve { expand_to: None }),
        ("grown", with(base.clone(), |v| v.spec.size = "8Mi".into()), data, Plan::Serve { expand_to: Some(8 * MIB) }),
        ("smaller spec (restored larger) keeps data", with(base.clone(), |v| v.spec.size = "2Mi".into()), data, Plan::Serve { expand_to: None }),
        ("half written", base.clone(), half, Plan::Create { source: Source::Empty, size: 4 * MIB, discard_partial: true }),
        ("stale marker without data", base.clone(), Local { has_data: false, incomplete: true, size: None }, Plan::Create { source: Source::Empty, size: 4 * MIB, discard_partial: true }),
        ("deleting", with(base.clone(), deleting), data, Plan::Delete),
        ("deleting without data", with(base.clone(), deleting), none, Plan::Delete),
        ("deleting, finalizer gone", with(volume("v1", json!({"size": "3Mi"}), json!({"ownerID": NODE}), false), deleting), data, Plan::Skip),
        ("deleting on another node", with(volume("v1", json!({"size": "3Mi"}), json!({"ownerID": "n2"}), true), deleting), none, Plan::Skip),
        ("from snapshot", with(base.clone(), |v| v.spec.data_source = Some("snap://src/s1".into())), none,
            Plan::Create { source: Source::Snapshot { volume: "src".into(), snapshot: "s1".into() }, size: 4 * MIB, discard_partial: false }),
        ("from volume", with(base.clone(), |v| v.spec.data_source = Some("vol://src".into())), none,
            Plan::Create { source: Source::Volume { volume: "src".into() }, size: 4 * MIB, discard_partial: false }),
        ("from backup", with(base.clone(), |v| v.spec.from_backup = Some("file:///b?backup=b1&volume=src".into())), half,
            Plan::Create { source: Source::Backup { url: "file:///b?backup=b1&volume=src".into() }, size: 4 * MIB, discard_partial: true }),
        ("bad data source", with(base.clone(), |v| v.spec.data_source = Some("snap://src".into())), none,
            Plan::Refuse { state: VolumeState::Faulted, reason: "InvalidDataSource", message: "spec.dataSource \"snap://src\" must be snap://<volume>/<snapshot>, vol://<volume>, bak://<volume>/<backup> or bi://backing?...: snap:// handle \"snap://src\" has no '/<snapshot>' after the volume name: write snap://<volume>/<snapshot>".into() }),
        ("bad size", with(base.clone(), |v| v.spec.size = "1.5Gi".into()), none,
            Plan::Refuse { state: VolumeState::Faulted, reason: "InvalidSize", message: "spec.size \"1.5Gi\" is not a positive byte quantity such as 10Gi".into() }),
    ];
    for (what, volume, local, want) in cases {
        assert_eq!(decide(&volume, NODE, &local), want, "{what}");
    }
    let image = with(base.clone(), |v| {
        v.spec.backing_image = Some("ubuntu".into())
    });
    assert_eq!(
        decide(&image, NODE, &none),
        Plan::Create {
            source: Source::Image {
                image: "ubuntu".into()
            },
            size: 4 * MIB,
            discard_partial: false
        }
    );
    let restored_on_image = with(image.clone(), |v| {
        v.spec.from_backup = Some("file:///x?backup=b&volume=v".into())
    });
    match decide(&restored_on_image, NODE, &none) {
        Plan::Refuse {
            state,
            reason,
            message,
        } => {
            assert_eq!((state, reason), (VolumeState::Faulted, "InvalidSpec"));
            assert!(
                message.contains("spec.backingImage \"ubuntu\" combines only"),
                "{message}"
            );
        }
        other => panic!("backing image with a backup: {other:?}"),
    }
    // A backing-image volume whose data exists (an older agent made it) is still served.
    assert_eq!(decide(&image, NODE, &data), Plan::Serve { expand_to: None });
}

#[test]
fn sizes_round_up_to_2_mib() {
    assert_eq!(restore::round_size(1), Some(2 * MIB));
    assert_eq!(restore::round_size(2 * MIB), Some(2 * MIB));
    assert_eq!(restore::round_size(2 * MIB + 1), Some(4 * MIB));
    assert_eq!(restore::round_size(0), None);
    assert_eq!(restore::round_size(u64::MAX), None);
}

fn target(name: &str, url: &str) -> BackupTarget {
    serde_json::from_value(json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"backupTargetURL": url, "pollInterval": "300s"}
    }))
    .unwrap()
}

#[test]
fn target_by_url_prefers_the_volumes_own() {
    let url = TargetUrl::parse("s3://bucket@us-east-1/path/").unwrap();
    let targets = vec![
        target("other", "file:///elsewhere"),
        target("a", "s3://bucket@us-east-1/path/"),
        target("mine", "s3://bucket@us-east-1/path/"),
    ];
    let pick = |preferred| pick_target(&targets, &url, preferred).map(|t| t.name_any());
    assert_eq!(pick("mine").as_deref(), Some("mine"));
    assert_eq!(pick("default").as_deref(), Some("a"));
    // A preferred target elsewhere does not win.
    assert_eq!(pick("other").as_deref(), Some("a"));
    let nowhere = TargetUrl::parse("s3://other@us-east-1/").unwrap();
    assert!(pick_target(&targets, &nowhere, "mine").is_none());
}

#[test]
fn status_carries_over_restore_fields_and_detects_no_change() {
    let restored = volume(
        "v1",
        json!({"size": "2Mi", "fromBackup": "file:///b?backup=b1&volume=src"}),
        json!({
            "ownerID": NODE, "state": "Ready", "actualSize": 4096, "observedGeneration": 1,
            "restoreProgress": 100, "lastRestoredBackup": "b1", "lastRestoredAt": "2026-01-01T00:00:00Z",
            "isStandby": false, "lastBackup": "bk", // owned by the backup work: never sent
            "conditions": [
                {"type": "Scheduled", "status": "True", "reason": "Placed", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Ready", "status": "True", "reason": "Ready", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
                {"type": "Restore", "status": "False", "reason": "RestoreCompleted", "message": "done", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
            ]
        }),
        true,
    );
    let same = agent_status(
        &restored,
        VolumeState::Ready,
        Cond::new(true, "Ready", "m"),
        Update::default(),
    );
    let body = serde_json::to_value(&same).unwrap();
    assert_eq!(
        body,
        json!({
            "state": "Ready", "actualSize": 4096, "observedGeneration": 1, "restoreProgress": 100,
            "lastRestoredBackup": "b1", "lastRestoredAt": "2026-01-01T00:00:00Z", "isStandby": false,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Ready", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
                {"type": "Restore", "status": "False", "reason": "RestoreCompleted", "message": "done", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
            ]
        })
    );
    assert!(unchanged(restored.status.as_ref(), &same));
    let grown = agent_status(
        &restored,
        VolumeState::Ready,
        Cond::new(true, "Ready", "m"),
        Update {
            actual_size: Some(8192),
            ..Update::default()
        },
    );
    assert!(!unchanged(restored.status.as_ref(), &grown));
    let message = agent_status(
        &restored,
        VolumeState::Ready,
        Cond::new(true, "Ready", "other"),
        Update::default(),
    );
    assert!(!unchanged(restored.status.as_ref(), &message));
}

#[test]
fn a_restore_whose_end_was_not_recorded_is_completed_from_the_spec() {
    let url = "file:///b?backup=b1&volume=src";
    let restoring = |status: &str| {
        volume(
            "v1",
            json!({"size": "2Mi", "fromBackup": url}),
            json!({"ownerID": NODE, "state": "Restoring", "conditions": [
                {"type": "Restore", "status": status, "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]}),
            true,
        )
    };
    let update = finished_restore(&restoring("True"));
    assert_eq!(
        update.restore,
        Some(Cond::new(
            false,
            "RestoreCompleted",
            "restored backup b1 of volume src"
        ))
    );
    assert_eq!(update.restore_progress, Some(100));
    assert_eq!(update.restored.map(|r| r.0).as_deref(), Some("b1"));
    let done = finished_restore(&restoring("False"));
    assert!(done.restore.is_none() && done.restored.is_none());
    assert!(
        finished_restore(&placed("v1", json!({"size": "2Mi"})))
            .restore
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn restore_progress_is_reported_at_most_every_two_seconds_and_only_when_it_moved() {
    let latest: Mutex<Option<RestoreProgress>> = Mutex::default();
    let set = |done| {
        *latest.lock().unwrap() = Some(RestoreProgress {
            blocks_total: 10,
            blocks_done: done,
            ..RestoreProgress::default()
        })
    };
    let start = tokio::time::Instant::now();
    let work = async {
        set(1);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        set(5);
        tokio::time::sleep(Duration::from_millis(2500)).await; // tick at 2 s: 50%
        set(9);
        tokio::time::sleep(Duration::from_millis(3000)).await; // ticks at 4 s (90%) and 6 s (same)
        "done"
    };
    let reports = Mutex::new(Vec::new());
    let report = |percent| {
        reports
            .lock()
            .unwrap()
            .push((start.elapsed().as_millis(), percent));
        async {}
    };
    let cancel = CancellationToken::new();
    let result = with_progress(work, &latest, PROGRESS_EVERY, report, || false, &cancel).await;
    assert_eq!(result, "done");
    assert_eq!(reports.into_inner().unwrap(), vec![(2000, 50), (4000, 90)]);
    assert!(!cancel.is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_restore_stops_at_the_next_tick_once_its_volume_is_being_deleted() {
    let latest: Mutex<Option<RestoreProgress>> = Mutex::default();
    let cancel = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let work = async {
        cancel.cancelled().await;
        start.elapsed().as_millis()
    };
    let stop = || start.elapsed() >= Duration::from_millis(4500);
    let stopped_at =
        with_progress(work, &latest, PROGRESS_EVERY, |_| async {}, stop, &cancel).await;
    assert_eq!(stopped_at, 6000);
}

#[test]
fn deletion_is_read_from_the_controllers_cache() {
    let (reader, mut writer) = kube::runtime::reflector::store::<Volume>();
    let mut doomed = placed("v1", json!({"size": "2Mi"}));
    doomed.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    writer.apply_watcher_event(&watcher::Event::Apply(doomed));
    writer.apply_watcher_event(&watcher::Event::Apply(placed("v2", json!({"size": "2Mi"}))));
    assert!(deleting_in(Some(&reader), "v1", NS));
    assert!(!deleting_in(Some(&reader), "v2", NS));
    assert!(!deleting_in(Some(&reader), "v3", NS));
    assert!(!deleting_in(None, "v1", NS));
}

// ---- reconciles against the mock API server ----

#[tokio::test]
async fn other_nodes_volumes_cause_no_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let v = volume("v1", json!({"size": "2Mi"}), json!({"ownerID": "n2"}), true);
    let action = reconcile(Arc::new(v), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(ctx.engine.list_volumes().unwrap().is_empty());
    assert!(events(&published).is_empty());
}

#[tokio::test]
async fn finalizer_is_added_before_any_data() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, _) = context(client, dir.path());
    let v = volume(
        "v1",
        json!({"size": "2Mi"}),
        json!({"ownerID": NODE}),
        false,
    );
    let task = tokio::spawn(reconcile(Arc::new(v.clone()), ctx.clone()));
    let request = server.expect(Method::PATCH, &volume_path("v1")).await;
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(
        request.json(),
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizers::VOLUME]}
        ])
    );
    request.respond(json_response(
        StatusCode::OK,
        serde_json::to_value(&v).unwrap(),
    ));
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(ctx.engine.list_volumes().unwrap().is_empty());
}

#[tokio::test]
async fn empty_volume_is_created_reported_then_left_alone_and_grown() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let v = placed("v1", json!({"size": "3Mi"}));
    let task = tokio::spawn(reconcile(Arc::new(v.clone()), ctx.clone()));
    let body = expect_status(&mut server, "v1").await;
    let ready = json!({
        "type": "Ready", "status": "True", "reason": "Ready",
        "message": "data ready on node n1; not served: the FUSE frontend is unavailable on this node (see the agent's log)",
        "lastTransitionTime": "<time>", "observedGeneration": 1
    });
    assert_eq!(
        body,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "status": {"state": "Ready", "actualSize": 0, "observedGeneration": 1, "conditions": [ready]}
        })
    );
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(60))
    );
    assert_eq!(ctx.engine.open_volume("v1").unwrap().size(), 4 * MIB);
    assert_eq!(events(&published), vec![(false, "Created".to_owned())]);

    // Written data shows in actualSize; a status that already says so is not applied again.
    ctx.engine
        .open_volume("v1")
        .unwrap()
        .write_at(0, &[7u8; 8192])
        .unwrap();
    let mut status = body["status"].clone();
    status["ownerID"] = json!(NODE);
    status["actualSize"] = json!(8192);
    status["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T00:00:00Z");
    let current = volume("v1", json!({"size": "3Mi"}), status.clone(), true);
    let action = reconcile(Arc::new(current), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));

    // spec.size grew: the engine volume grows, the status is unchanged (same allocation).
    let grown = volume("v1", json!({"size": "9Mi"}), status, true);
    let action = reconcile(Arc::new(grown), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(ctx.engine.open_volume("v1").unwrap().size(), 10 * MIB);
    assert_eq!(
        events(&published).last().unwrap(),
        &(false, "Expanded".to_owned())
    );
    assert_eq!(&read_all(&ctx, "v1")[..8192], &[7u8; 8192][..]);
}

#[tokio::test]
async fn a_missing_backing_image_is_a_condition() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let v = placed("v1", json!({"size": "2Mi", "backingImage": "ubuntu"}));
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backingimages/ubuntu"),
        )
        .await
        .respond(not_found());
    let body = expect_status(&mut server, "v1").await;
    assert_eq!(body["status"]["state"], "Pending");
    assert_eq!(
        body["status"]["conditions"][0]["reason"],
        "BackingImageMissing"
    );
    assert!(task.await.unwrap().is_ok());
    assert!(ctx.engine.list_volumes().unwrap().is_empty());
    assert_eq!(
        events(&published),
        vec![(true, "BackingImageMissing".to_owned())]
    );
}

#[tokio::test]
async fn a_volume_on_a_ready_local_image_starts_with_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    // A finished local copy, as the backing-image agent leaves it.
    let copy = dir.path().join("backing-images/ubuntu");
    std::fs::create_dir_all(&copy).unwrap();
    let content = pattern(9, (MIB + 4096) as usize);
    std::fs::write(copy.join("image.raw"), &content).unwrap();
    std::fs::write(
        copy.join("copy.json"),
        serde_json::to_vec(&json!({"uid": "uid-img", "checksum": "0".repeat(128), "size": content.len(), "virtualSize": content.len(), "format": "raw"})).unwrap(),
    )
    .unwrap();
    let image = json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
        "metadata": {"name": "ubuntu", "namespace": NS, "uid": "uid-img"},
        "spec": {"sourceType": "download", "sourceParameters": {"url": "http://127.0.0.1:1/x"}},
        "status": {"state": "ready", "ownerID": NODE}
    });
    let v = placed("v1", json!({"size": "4Mi", "backingImage": "ubuntu"}));
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backingimages/ubuntu"),
        )
        .await
        .respond(json_response(StatusCode::OK, image));
    let body = expect_status(&mut server, "v1").await;
    assert_eq!(body["status"]["state"], "Ready");
    assert!(task.await.unwrap().is_ok());
    let data = read_all(&ctx, "v1");
    assert_eq!(data.len(), 4 * MIB as usize);
    assert!(
        data[..content.len()] == content[..],
        "the image is the bottom layer"
    );
    assert!(data[content.len()..].iter().all(|b| *b == 0));
    assert_eq!(events(&published), vec![(false, "Created".to_owned())]);
}

#[tokio::test]
async fn restore_without_a_matching_target_tells_the_user_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let url = "s3://bucket@us-east-1/x/?backup=b1&volume=src";
    let v = placed("v1", json!({"size": "2Mi", "fromBackup": url}));
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    let list = server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backuptargets"),
        )
        .await;
    list.respond(json_response(
        StatusCode::OK,
        json!({"apiVersion": "bulwark.io/v1beta1", "kind": "BackupTargetList", "metadata": {},
               "items": [serde_json::to_value(target("default", "file:///elsewhere")).unwrap()]}),
    ));
    let body = expect_status(&mut server, "v1").await;
    let message = "no BackupTarget in namespace bulwark-system has spec.backupTargetURL s3://bucket@us-east-1/x/: create one with that URL (and its credential Secret) to restore spec.fromBackup";
    let condition = |type_: &str| {
        json!({"type": type_, "status": "False", "reason": "NoBackupTarget", "message": message,
               "lastTransitionTime": "<time>", "observedGeneration": 1})
    };
    assert_eq!(
        body["status"],
        json!({"state": "Pending", "observedGeneration": 1, "isStandby": false,
               "conditions": [condition("Ready"), condition("Restore")]})
    );
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
    assert_eq!(
        events(&published),
        vec![(true, "NoBackupTarget".to_owned())]
    );
}

#[tokio::test]
async fn clone_of_a_volume_on_another_node_fails_with_a_condition() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let v = placed("v1", json!({"size": "2Mi", "dataSource": "snap://src/s1"}));
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    let creating = expect_status(&mut server, "v1").await;
    assert_eq!(creating["status"]["state"], "Creating");
    assert_eq!(creating["status"]["conditions"][0]["reason"], "Cloning");
    let get = server.expect(Method::GET, &volume_path("src")).await;
    get.respond(json_response(
        StatusCode::OK,
        volume_json(
            "src",
            json!({"size": "2Mi"}),
            json!({"ownerID": "n2", "state": "Ready"}),
            true,
        ),
    ));
    let body = expect_status(&mut server, "v1").await;
    assert_eq!(body["status"]["state"], "Pending");
    let ready = &body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "SourceOnAnotherNode");
    assert_eq!(
        ready["message"],
        "spec.dataSource: source volume \"src\" lives on node \"n2\", not on \"n1\"; clones must be placed on their source's node (set spec.nodeID to \"n2\")"
    );
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
    assert!(ctx.engine.list_volumes().unwrap().is_empty());
    assert_eq!(
        events(&published),
        vec![(true, "SourceOnAnotherNode".to_owned())]
    );
}

#[tokio::test]
async fn clone_from_a_missing_source_says_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, _) = context(client, dir.path());
    let v = placed("v1", json!({"size": "2Mi", "dataSource": "vol://src"}));
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    expect_status(&mut server, "v1").await;
    server
        .expect(Method::GET, &volume_path("src"))
        .await
        .respond(not_found());
    let body = expect_status(&mut server, "v1").await;
    assert_eq!(body["status"]["conditions"][0]["reason"], "SourceNotFound");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn clone_from_a_local_snapshot_through_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let src = ctx.engine.create_volume("src", 4 * MIB, None).unwrap();
    let data = pattern(3, (3 * MIB) as usize);
    src.write_at(4096, &data).unwrap();
    src.snapshot("s1", Default::default()).unwrap();
    src.write_at(0, &[9u8; 4096]).unwrap(); // after the snapshot: not in the clone
    let v = placed("v1", json!({"size": "2Mi", "dataSource": "snap://src/s1"}));
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    expect_status(&mut server, "v1").await;
    let body = expect_status(&mut server, "v1").await;
    assert_eq!(body["status"]["state"], "Ready");
    task.await.unwrap().unwrap();
    let clone = read_all(&ctx, "v1");
    assert_eq!(
        clone.len() as u64,
        4 * MIB,
        "the source's size wins over a smaller spec"
    );
    assert_eq!(&clone[..4096], &[0u8; 4096][..]);
    assert_eq!(&clone[4096..4096 + data.len()], &data[..]);
    assert_eq!(
        body["status"]["actualSize"],
        json!(data.len()),
        "the clone stays sparse"
    );
    assert_eq!(events(&published), vec![(false, "Created".to_owned())]);
    assert!(!Markers::new(dir.path()).is_set("v1"));
}

#[tokio::test]
async fn deletion_removes_data_then_the_finalizer() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    ctx.engine.create_volume("v1", 2 * MIB, None).unwrap();
    let mut v = placed("v1", json!({"size": "2Mi"}));
    v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::UNIX_EPOCH,
    ));
    let task = tokio::spawn(reconcile(Arc::new(v.clone()), ctx.clone()));
    let request = server.expect(Method::PATCH, &volume_path("v1")).await;
    assert_eq!(
        request.json(),
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": [finalizers::VOLUME]},
            {"op": "replace", "path": "/metadata/finalizers", "value": []}
        ])
    );
    assert!(
        ctx.engine.list_volumes().unwrap().is_empty(),
        "data goes before the finalizer"
    );
    request.respond(json_response(
        StatusCode::OK,
        serde_json::to_value(&v).unwrap(),
    ));
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(events(&published), vec![(false, "Deleted".to_owned())]);
}

#[tokio::test]
async fn deletion_waits_while_the_data_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (client, _server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let held = ctx.engine.create_volume("v1", 2 * MIB, None).unwrap();
    let mut v = placed("v1", json!({"size": "2Mi"}));
    v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::UNIX_EPOCH,
    ));
    let error = reconcile(Arc::new(v), ctx.clone()).await.unwrap_err();
    assert!(
        error.to_string().contains("is open in this process"),
        "{error}"
    );
    assert_eq!(events(&published), vec![(true, "DeleteFailed".to_owned())]);
    drop(held);
}

/// A full backup of `data` (at offset 1 MiB of a 6 MiB image) as volume `store_volume`.
pub async fn backup_of(store: &Store, dir: &Path, store_volume: &str, backup: &str, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let image = dir.join(format!("{store_volume}-{backup}.img"));
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(6 * MIB).unwrap();
    file.write_all_at(data, MIB).unwrap();
    let source = backupstore::FileSource::open(&image).unwrap();
    let mut options = BackupOptions::new(store_volume, "s1");
    options.backup_name = Some(backup.to_owned());
    options.mode = backupstore::BackupMode::Full;
    store.backup(Arc::new(source), options).await.unwrap();
}

/// Drive one restore reconcile of `v1` from `url` whose target is `target`; `secret` answers
/// the credential Secret read, if any. Returns the final status body.
async fn restore_through_reconcile(
    ctx: Arc<AgentContext>,
    server: &mut ApiServer,
    target: Value,
    secret: Option<Value>,
    url: &str,
    standby: bool,
) -> Value {
    let v = placed(
        "v1",
        json!({"size": "2Mi", "fromBackup": url, "standby": standby}),
    );
    let task = tokio::spawn(reconcile(Arc::new(v), ctx));
    server
        .expect(Method::GET, &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backuptargets"))
        .await
        .respond(json_response(
            StatusCode::OK,
            json!({"apiVersion": "bulwark.io/v1beta1", "kind": "BackupTargetList", "metadata": {}, "items": [target]}),
        ));
    if let Some(secret) = secret {
        server
            .expect(
                Method::GET,
                &format!("/api/v1/namespaces/{NS}/secrets/s3-creds"),
            )
            .await
            .respond(json_response(StatusCode::OK, secret));
    }
    let started = expect_status(server, "v1").await;
    let in_progress = |type_: &str, reason: &str, ok: &str| {
        json!({"type": type_, "status": ok, "reason": reason, "message": "restoring backup b1 of volume src",
               "lastTransitionTime": "<time>", "observedGeneration": 1})
    };
    assert_eq!(
        started["status"],
        json!({"state": "Restoring", "observedGeneration": 1, "restoreProgress": 0, "isStandby": standby,
               "conditions": [in_progress("Ready", "Restoring", "False"), in_progress("Restore", "RestoreInProgress", "True")]})
    );
    // Progress patches (every 2 s) may come before the final one on a slow machine.
    let mut done = expect_status(server, "v1").await;
    while done["status"]["state"] == "Restoring" {
        done = expect_status(server, "v1").await;
    }
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(60))
    );
    done
}

#[tokio::test]
async fn restore_from_a_file_target_redoes_an_interrupted_restore_and_equals_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let target_url = format!("file://{}", store_dir.display());
    let stores = Stores::default();
    let store = stores
        .open_with(
            "direct",
            TargetUrl::parse(&target_url).unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let data = pattern(5, (3 * MIB) as usize);
    backup_of(&store, dir.path(), "src", "b1", &data).await;
    stores.close_all().await;

    let data_dir = dir.path().join("agent");
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, &data_dir);
    // What a crash in the middle of a restore leaves: garbage data and the marker.
    let garbage = ctx.engine.create_volume("v1", 2 * MIB, None).unwrap();
    garbage.write_at(0, &[0xEE; 4096]).unwrap();
    drop(garbage);
    Markers::new(&data_dir)
        .set("v1", "restore (interrupted)")
        .unwrap();

    let url = format!("{target_url}?backup=b1&volume=src");
    let target = serde_json::to_value(target("t", &target_url)).unwrap();
    let done = restore_through_reconcile(ctx.clone(), &mut server, target, None, &url, false).await;
    let status = &done["status"];
    assert_eq!(status["state"], "Ready");
    assert_eq!(status["restoreProgress"], 100);
    assert_eq!(status["lastRestoredBackup"], "b1");
    assert_eq!(status["lastRestoredAt"], "<time>");
    assert_eq!(status["isStandby"], false);
    assert_eq!(status["conditions"][1]["reason"], "RestoreCompleted");
    let restored = read_all(&ctx, "v1");
    assert_eq!(restored.len() as u64, 6 * MIB);
    assert_eq!(
        &restored[..MIB as usize],
        &vec![0u8; MIB as usize][..],
        "the garbage is gone"
    );
    assert_eq!(
        &restored[MIB as usize..MIB as usize + data.len()],
        &data[..]
    );
    assert!(!Markers::new(&data_dir).is_set("v1"));
    assert_eq!(
        events(&published),
        vec![
            (false, "RestoreStarted".to_owned()),
            (false, "Restored".to_owned())
        ]
    );
}

#[tokio::test]
async fn standby_restore_from_seaweedfs_with_a_credential_secret() {
    let weed = backupstore::testing::SeaweedFs::start()
        .await
        .expect("SeaweedFS starts");
    let dir = tempfile::tempdir().unwrap();
    let url = weed.target_url("agent");
    let stores = Stores::default();
    let store = stores
        .open_with("direct", url.clone(), weed.credentials())
        .await
        .unwrap();
    let data = pattern(9, (2 * MIB + 12288) as usize);
    backup_of(&store, dir.path(), "src", "b1", &data).await;
    stores.close_all().await;

    let (client, mut server) = ApiServer::start();
    let (ctx, _) = context(client, &dir.path().join("agent"));
    let mut target = serde_json::to_value(target("s3", url.as_str())).unwrap();
    target["spec"]["credentialSecret"] = json!("s3-creds");
    let bytes = |s: &str| k8s_openapi::ByteString(s.as_bytes().to_vec());
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3-creds".into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            [
                (
                    "AWS_ACCESS_KEY_ID".to_owned(),
                    bytes(backupstore::testing::ACCESS_KEY_ID),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_owned(),
                    bytes(backupstore::testing::SECRET_ACCESS_KEY),
                ),
                ("AWS_ENDPOINTS".to_owned(), bytes(&weed.endpoint())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    let mut secret = serde_json::to_value(secret).unwrap();
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    let backup_url = format!("{url}?backup=b1&volume=src");
    let done = restore_through_reconcile(
        ctx.clone(),
        &mut server,
        target,
        Some(secret),
        &backup_url,
        true,
    )
    .await;
    assert_eq!(done["status"]["state"], "Ready");
    assert_eq!(done["status"]["isStandby"], true);
    assert_eq!(
        done["status"]["conditions"][0]["message"],
        "standby volume: its data follows the backups and is served once activated (spec.standby: false)"
    );
    let restored = read_all(&ctx, "v1");
    assert_eq!(
        &restored[MIB as usize..MIB as usize + data.len()],
        &data[..]
    );
    ctx.stores.close_all().await;
}

/// Whether FUSE tests can run here; panics (unless `BULWARK_SKIP_FUSE_TESTS` is set) when not.
pub(crate) fn fuse_available() -> bool {
    let missing = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse does not exist")
    } else if !tempfile::tempfile()
        .and_then(|f| f.metadata())
        .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
    {
        Some("FUSE tests must run as root")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("BULWARK_SKIP_FUSE_TESTS").is_some() => {
            eprintln!("skipping FUSE test: {reason} (BULWARK_SKIP_FUSE_TESTS is set)");
            false
        }
        Some(reason) => panic!("{reason}; set BULWARK_SKIP_FUSE_TESTS=1 to skip FUSE tests"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_through_fuse_and_unserved_on_deletion() {
    use std::os::unix::fs::FileExt;
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mounted = engine::frontend::MountedVolumes::mount(
        &mount_point,
        &engine::frontend::FuseOptions::default(),
    )
    .unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, _) = context_with(client, &dir.path().join("data"), Some(mounted));
    let v = placed("v1", json!({"size": "2Mi"}));
    let task = tokio::spawn(reconcile(Arc::new(v.clone()), ctx.clone()));
    let body = expect_status(&mut server, "v1").await;
    let file = mount_point.join("v1");
    assert_eq!(
        body["status"]["conditions"][0]["message"],
        format!("served at {}", file.display())
    );
    task.await.unwrap().unwrap();
    let data = pattern(4, 3 * 4096);
    let written = data.clone();
    let path = file.clone();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&written, 4096).unwrap();
        f.sync_all().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(&read_all(&ctx, "v1")[4096..4096 + data.len()], &data[..]);

    let mut deleting = v;
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    // The kernel releases a closed FUSE file asynchronously; until then the agent refuses to
    // stop serving it (and says so), so the deletion may take retries.
    let mut attempts = 0;
    let path = volume_path("v1");
    loop {
        attempts += 1;
        let mut task = tokio::spawn(reconcile(Arc::new(deleting.clone()), ctx.clone()));
        tokio::select! {
            request = server.expect(Method::PATCH, &path) => {
                request.respond(json_response(StatusCode::OK, serde_json::to_value(&deleting).unwrap()));
                task.await.unwrap().unwrap();
                break;
            }
            blocked = &mut task => {
                // Refused while open (requeue), or the data still in use by a FUSE request
                // in flight (an error, retried).
                match blocked.unwrap() {
                    Ok(action) => assert_eq!(action, Action::requeue(Duration::from_secs(30))),
                    Err(error) => assert!(error.to_string().contains("open in this process"), "{error}"),
                }
                assert!(attempts < 50, "the file stays open");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(ctx.frontend.as_ref().unwrap().names().is_empty());
    assert!(ctx.engine.list_volumes().unwrap().is_empty());
    assert!(!file.exists());
}

#[test]
fn standby_volumes_follow_newer_backups_and_activation_asks_the_store() {
    let url = "file:///store?backup=backup-1&volume=src";
    let standby = |status: Value, standby: bool| {
        volume(
            "dr",
            json!({"size": "4Mi", "fromBackup": url, "standby": standby}),
            status,
            true,
        )
    };
    let data = Local {
        has_data: true,
        incomplete: false,
        size: Some(4 * MIB),
    };
    let restored = json!({"ownerID": NODE, "state": "Ready", "isStandby": true, "lastRestoredBackup": "backup-1"});
    // Caught up: just serve (not exposed while standby).
    assert_eq!(follow_target(&standby(restored.clone(), true)), None);
    assert_eq!(
        decide(&standby(restored.clone(), true), NODE, &data),
        Plan::Serve { expand_to: None }
    );
    // The DR tracker saw a newer backup.
    let mut newer = restored.clone();
    newer["lastBackup"] = json!("backup-2");
    assert_eq!(
        decide(&standby(newer.clone(), true), NODE, &data),
        Plan::Follow {
            to: Some("backup-2".into())
        }
    );
    // Activation: whatever the tracker last saw, the store's newest decides.
    assert_eq!(
        decide(&standby(newer, false), NODE, &data),
        Plan::Follow { to: None }
    );
    // Activated (isStandby false): an ordinary volume.
    let mut active = restored.clone();
    active["isStandby"] = json!(false);
    assert_eq!(follow_target(&standby(active, false)), None);
    // Not restored yet: the first (full) restore comes first.
    assert_eq!(
        follow_target(&standby(
            json!({"ownerID": NODE, "lastBackup": "backup-2"}),
            true
        )),
        None
    );
}

#[tokio::test]
async fn a_backup_handle_waits_for_its_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, dir.path());
    let v = placed(
        "v1",
        json!({"size": "2Mi", "dataSource": "bak://src/backup-1"}),
    );
    assert_eq!(
        source_of(&v),
        Ok(Source::BackupHandle {
            backup: "backup-1".into()
        })
    );
    let task = tokio::spawn(reconcile(Arc::new(v), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backups/backup-1"),
        )
        .await
        .respond(not_found());
    let body = expect_status(&mut server, "v1").await;
    assert_eq!(body["status"]["state"], "Pending");
    let condition = &body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "BackupNotReady");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("Backup \"backup-1\" does not exist")
    );
    assert!(task.await.unwrap().is_ok());
    assert_eq!(
        events(&published),
        vec![(true, "BackupNotReady".to_owned())]
    );
    // A legacy bs:// handle and a bi:// handle seed volumes too.
    let bs = placed(
        "v2",
        json!({"size": "2Mi", "dataSource": "bs://src/backup-1"}),
    );
    assert_eq!(
        source_of(&bs),
        Ok(Source::BackupHandle {
            backup: "backup-1".into()
        })
    );
    let bi = placed(
        "v3",
        json!({"size": "2Mi", "dataSource": "bi://backing?backingImage=golden&backingImageDataSourceType=download&url=https%3A%2F%2Fexample.com%2Fa.qcow2"}),
    );
    assert_eq!(
        source_of(&bi),
        Ok(Source::Image {
            image: "golden".into()
        })
    );
}

/// The agent's DR path through reconcile: a standby volume restored from b1 sees `lastBackup:
/// b2` (the DR tracker's field), restores only the difference into a staged layer, records
/// `lastRestoredBackup: b2` and stays unserved; activation then finds nothing newer in the store
/// and turns the volume into an ordinary one (`isStandby: false`).
#[tokio::test]
async fn a_standby_volume_follows_a_newer_backup_then_activates() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let target_url = format!("file://{}", store_dir.display());
    let stores = Stores::default();
    let store = stores
        .open_with(
            "direct",
            TargetUrl::parse(&target_url).unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let first = pattern(5, (3 * MIB) as usize);
    backup_of(&store, dir.path(), "src", "b1", &first).await;
    let mut second = first.clone();
    second[..8192].copy_from_slice(&[0x42; 8192]);
    backup_of(&store, dir.path(), "src", "b2", &second).await;

    let data_dir = dir.path().join("agent");
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client, &data_dir);
    let b1 = BackupUrl::parse(&format!("{target_url}?backup=b1&volume=src")).unwrap();
    restore::restore(
        ctx.engine.clone(),
        Markers::new(&data_dir),
        &store,
        &b1,
        "dr",
        6 * MIB,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    stores.close_all().await;
    let target = serde_json::to_value(target("t", &target_url)).unwrap();
    let targets = json!({"apiVersion": "bulwark.io/v1beta1", "kind": "BackupTargetList", "metadata": {}, "items": [target]});
    let standby = |spec_standby: bool, last_restored: &str| {
        volume(
            "dr",
            json!({"size": "6Mi", "fromBackup": b1.to_string(), "standby": spec_standby}),
            json!({"ownerID": NODE, "state": "Ready", "isStandby": true,
                   "lastRestoredBackup": last_restored, "lastBackup": "b2"}),
            true,
        )
    };

    let task = tokio::spawn(reconcile(Arc::new(standby(true, "b1")), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backuptargets"),
        )
        .await
        .respond(json_response(StatusCode::OK, targets.clone()));
    let running = expect_status(&mut server, "dr").await;
    assert_eq!(running["status"]["state"], "Restoring");
    let mut done = expect_status(&mut server, "dr").await;
    while done["status"]["state"] == "Restoring" {
        done = expect_status(&mut server, "dr").await;
    }
    assert!(task.await.unwrap().is_ok());
    assert_eq!(done["status"]["state"], "Ready");
    assert_eq!(done["status"]["lastRestoredBackup"], "b2");
    assert_eq!(done["status"]["isStandby"], true);
    let ready = &done["status"]["conditions"][0];
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("standby volume"),
        "{ready}"
    );
    let data = read_all(&ctx, "dr");
    assert!(
        data[MIB as usize..MIB as usize + second.len()] == second[..],
        "the standby holds b2"
    );
    let restored = events(&published);
    assert_eq!(restored.last().unwrap(), &(false, "Restored".to_owned()));
    let note = published.lock().unwrap().last().unwrap().note.clone();
    assert!(note.contains("incrementally: 1 blocks fetched"), "{note}");

    // Activation: the store's newest is b2, already restored: no restore, just go live.
    let task = tokio::spawn(reconcile(Arc::new(standby(false, "b2")), ctx.clone()));
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/backuptargets"),
        )
        .await
        .respond(json_response(StatusCode::OK, targets));
    let active = expect_status(&mut server, "dr").await;
    assert!(task.await.unwrap().is_ok());
    assert_eq!(active["status"]["state"], "Ready");
    assert_eq!(active["status"]["isStandby"], false);
}
