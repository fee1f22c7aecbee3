//! Tests of the agent's snapshot work: the pure decision (table) and reconciles against the
//! mock API server with a real engine: create volume → write → snapshot → delete snapshot, and
//! the discovery of engine snapshots no object describes.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::agent::volumes::tests::{
    MIB, NODE, NS, context, events, pattern, timeless, volume, volume_json, volume_path,
};
use crate::controllers::testing::{ApiServer, json_response, not_found};

fn snapshot_path(name: &str) -> String {
    format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/snapshots/{name}")
}

fn snapshot_json(name: &str, volume: &str, finalizer: bool, deleting: bool) -> Value {
    let mut s = json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"volume": volume, "labels": {"app": "db"}},
    });
    if finalizer {
        s["metadata"]["finalizers"] = json!([finalizers::SNAPSHOT]);
    }
    if deleting {
        s["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    s
}

fn snapshot(name: &str, volume: &str, finalizer: bool, deleting: bool) -> Snapshot {
    serde_json::from_value(snapshot_json(name, volume, finalizer, deleting)).unwrap()
}

fn ready_volume() -> Value {
    volume_json(
        "v1",
        json!({"size": "4Mi"}),
        json!({"ownerID": NODE, "state": "Ready"}),
        true,
    )
}

fn info(name: &str) -> SnapshotInfo {
    SnapshotInfo {
        name: name.to_owned(),
        parent: None,
        children: vec![],
        head_is_child: true,
        created: jiff::Timestamp::UNIX_EPOCH,
        labels: Default::default(),
        size: 4096,
        volume_size: 4 * MIB,
    }
}

#[test]
fn decide_table() {
    let ready: Volume = serde_json::from_value(ready_volume()).unwrap();
    let elsewhere = volume(
        "v1",
        json!({"size": "4Mi"}),
        json!({"ownerID": "n2", "state": "Ready"}),
        true,
    );
    let unplaced = volume("v1", json!({"size": "4Mi"}), json!({}), true);
    let creating = volume(
        "v1",
        json!({"size": "4Mi"}),
        json!({"ownerID": NODE, "state": "Creating"}),
        true,
    );
    let standby = volume(
        "v1",
        json!({"size": "4Mi", "standby": true, "fromBackup": "file:///b?backup=b&volume=v"}),
        json!({"ownerID": NODE, "state": "Ready"}),
        true,
    );
    let data = Local {
        volume_has_data: true,
        snapshot: None,
        head_changed: 8192,
    };
    let taken = Local {
        volume_has_data: true,
        snapshot: Some(info("s1")),
        head_changed: 0,
    };
    let none = Local::default();
    let s = |finalizer, deleting| snapshot("s1", "v1", finalizer, deleting);
    let cases: Vec<(&str, Snapshot, Option<&Volume>, Local, Plan)> = vec![
        (
            "other node",
            s(true, false),
            Some(&elsewhere),
            data.clone(),
            Plan::Skip,
        ),
        (
            "volume missing",
            s(false, false),
            None,
            none.clone(),
            Plan::Skip,
        ),
        (
            "finalizer first",
            s(false, false),
            Some(&ready),
            data.clone(),
            Plan::AddFinalizer,
        ),
        (
            "take it",
            s(true, false),
            Some(&ready),
            data.clone(),
            Plan::Create,
        ),
        (
            "report it",
            s(true, false),
            Some(&ready),
            taken.clone(),
            Plan::Report,
        ),
        (
            "taken without finalizer",
            s(false, false),
            Some(&ready),
            taken.clone(),
            Plan::AddFinalizer,
        ),
        (
            "deleting",
            s(true, true),
            Some(&ready),
            taken.clone(),
            Plan::Delete,
        ),
        (
            "deleting, already merged",
            s(true, true),
            Some(&ready),
            data.clone(),
            Plan::ReleaseFinalizer,
        ),
        (
            "deleting, volume gone",
            s(true, true),
            None,
            none.clone(),
            Plan::ReleaseFinalizer,
        ),
        (
            "deleting, volume never placed",
            s(true, true),
            Some(&unplaced),
            none.clone(),
            Plan::ReleaseFinalizer,
        ),
        (
            "deleting on another node",
            s(true, true),
            Some(&elsewhere),
            none.clone(),
            Plan::Skip,
        ),
        (
            "deleting, finalizer gone",
            s(false, true),
            Some(&ready),
            taken.clone(),
            Plan::Skip,
        ),
    ];
    for (what, snap, volume, local, want) in cases {
        assert_eq!(decide(&snap, volume, NODE, &local), want, "{what}");
    }
    let refused = |v: &Volume, local: &Local| match decide(&s(true, false), Some(v), NODE, local) {
        Plan::Refuse { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(&creating, &data), "VolumeNotReady");
    assert_eq!(refused(&ready, &none), "VolumeNotReady");
    assert_eq!(refused(&standby, &data), "VolumeStandby");
    let mut doomed = ready.clone();
    doomed.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    assert_eq!(refused(&doomed, &data), "VolumeDeleting");

    // Skip-if-unchanged, asked by a recurring job: decided on the engine's facts, and final.
    let asking = |min: &str| {
        let mut snap = s(false, false);
        snap.metadata.annotations =
            Some([("bulwark.io/skip-if-unchanged".to_owned(), min.to_owned())].into());
        snap
    };
    let clean = Local {
        head_changed: 0,
        ..data.clone()
    };
    match decide(&asking("0"), Some(&ready), NODE, &clean) {
        Plan::Skipped { message } => assert!(message.starts_with("Unchanged:"), "{message}"),
        other => panic!("unchanged: {other:?}"),
    }
    match decide(&asking("16384"), Some(&ready), NODE, &data) {
        Plan::Skipped { message } => assert!(message.starts_with("BelowThreshold:"), "{message}"),
        other => panic!("below threshold: {other:?}"),
    }
    assert_eq!(
        decide(&asking("4096"), Some(&ready), NODE, &data),
        Plan::AddFinalizer
    );
    let mut skipped = asking("0");
    skipped.status = Some(
        serde_json::from_value(json!({"conditions": [{
            "type": "Ready", "status": "False", "reason": "Skipped", "message": "Unchanged: ...",
            "lastTransitionTime": "2026-11-27T10:00:00Z"
        }]}))
        .unwrap(),
    );
    assert_eq!(
        decide(&skipped, Some(&ready), NODE, &data),
        Plan::Skip,
        "a skip is final"
    );
}

#[test]
fn discovered_objects_say_they_were_not_user_created() {
    let v: Volume = serde_json::from_value(ready_volume()).unwrap();
    let mut i = info("backup-snap");
    i.labels.insert("k".into(), "v".into());
    let object = discovered_object(&v, &i);
    assert!(!user_created(&object));
    assert!(user_created(&snapshot("s1", "v1", false, false)));
    assert_eq!(
        serde_json::to_value(&object).unwrap(),
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
            "metadata": {
                "name": "backup-snap", "namespace": NS,
                "annotations": {USER_CREATED_ANNOTATION: "false"},
                "finalizers": [finalizers::SNAPSHOT],
                "ownerReferences": [{"apiVersion": "bulwark.io/v1beta1", "kind": "Volume", "name": "v1", "uid": "uid-v1"}]
            },
            "spec": {"volume": "v1", "labels": {"k": "v"}}
        })
    );
    assert!(is_object_name("backup-1.a"));
    assert!(!is_object_name("Upper"));
    assert!(!is_object_name("under_score"));
}

async fn run_reconcile(
    ctx: &Arc<Snapshots>,
    s: Snapshot,
) -> tokio::task::JoinHandle<Result<Action, Error>> {
    tokio::spawn(reconcile(Arc::new(s), ctx.clone()))
}

#[tokio::test]
async fn create_volume_write_snapshot_then_delete_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (agent, published) = context(client, dir.path());
    let ctx = Snapshots::new(agent.clone());
    let data = agent.engine.create_volume("v1", 4 * MIB, None).unwrap();
    let first = pattern(1, 8192);
    data.write_at(0, &first).unwrap();

    let task = run_reconcile(&ctx, snapshot("s1", "v1", true, false)).await;
    server
        .expect(Method::GET, &volume_path("v1"))
        .await
        .respond(json_response(StatusCode::OK, ready_volume()));
    let request = server
        .expect(Method::PATCH, &format!("{}/status", snapshot_path("s1")))
        .await;
    assert!(request.query.contains("fieldManager=bulwark-agent"));
    let mut body = timeless(request.json());
    let created = body["status"]["creationTime"].take();
    assert!(created.is_string());
    assert_eq!(
        body,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
            "status": {
                "creationTime": null, "size": 8192, "children": [], "readyToUse": true,
                "restoreSize": 4 * MIB, "userCreated": true, "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "snapshot taken",
                                "lastTransitionTime": "<time>", "observedGeneration": 1}]
            }
        })
    );
    request.respond(json_response(
        StatusCode::OK,
        snapshot_json("s1", "v1", true, false),
    ));
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(120))
    );
    let snaps = data.list_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].name, "s1");
    assert_eq!(snaps[0].labels.get("app").map(String::as_str), Some("db"));

    // A write after the snapshot, then the snapshot's deletion merges its layer away.
    let second = pattern(2, 4096);
    data.write_at(4096, &second).unwrap();
    let task = run_reconcile(&ctx, snapshot("s1", "v1", true, true)).await;
    server
        .expect(Method::GET, &volume_path("v1"))
        .await
        .respond(json_response(StatusCode::OK, ready_volume()));
    let request = server.expect(Method::PATCH, &snapshot_path("s1")).await;
    assert_eq!(
        request.json(),
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": [finalizers::SNAPSHOT]},
            {"op": "replace", "path": "/metadata/finalizers", "value": []}
        ])
    );
    assert!(
        data.list_snapshots().unwrap().is_empty(),
        "merged before the finalizer goes"
    );
    request.respond(json_response(
        StatusCode::OK,
        snapshot_json("s1", "v1", false, true),
    ));
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    let mut now = vec![0u8; 8192];
    data.read_at(0, &mut now).unwrap();
    assert_eq!(&now[..4096], &first[..4096]);
    assert_eq!(&now[4096..], &second[..]);
    assert_eq!(
        events(&published),
        vec![(false, "Created".to_owned()), (false, "Deleted".to_owned())]
    );
}

#[tokio::test]
async fn the_finalizer_comes_before_the_engine_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (agent, _) = context(client, dir.path());
    let ctx = Snapshots::new(agent.clone());
    let data = agent.engine.create_volume("v1", 4 * MIB, None).unwrap();
    let task = run_reconcile(&ctx, snapshot("s1", "v1", false, false)).await;
    server
        .expect(Method::GET, &volume_path("v1"))
        .await
        .respond(json_response(StatusCode::OK, ready_volume()));
    let request = server.expect(Method::PATCH, &snapshot_path("s1")).await;
    assert_eq!(
        request.json(),
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizers::SNAPSHOT]}
        ])
    );
    request.respond(json_response(
        StatusCode::OK,
        snapshot_json("s1", "v1", true, false),
    ));
    task.await.unwrap().unwrap();
    assert!(data.list_snapshots().unwrap().is_empty());
}

#[tokio::test]
async fn snapshot_of_a_volume_that_is_not_ready_reports_why() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (agent, published) = context(client, dir.path());
    let ctx = Snapshots::new(agent.clone());
    let task = run_reconcile(&ctx, snapshot("s1", "v1", false, false)).await;
    server
        .expect(Method::GET, &volume_path("v1"))
        .await
        .respond(json_response(
            StatusCode::OK,
            volume_json(
                "v1",
                json!({"size": "4Mi"}),
                json!({"ownerID": NODE, "state": "Restoring"}),
                true,
            ),
        ));
    let request = server
        .expect(Method::PATCH, &format!("{}/status", snapshot_path("s1")))
        .await;
    let message =
        "volume \"v1\" is not Ready (state Restoring): snapshot \"s1\" is taken once it is";
    assert_eq!(
        timeless(request.json())["status"],
        json!({
            "readyToUse": false, "userCreated": true, "error": message, "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "VolumeNotReady", "message": message,
                            "lastTransitionTime": "<time>", "observedGeneration": 1}]
        })
    );
    request.respond(json_response(
        StatusCode::OK,
        snapshot_json("s1", "v1", false, false),
    ));
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(15))
    );
    assert_eq!(
        events(&published),
        vec![(true, "VolumeNotReady".to_owned())]
    );
}

#[tokio::test]
async fn deleting_a_snapshot_of_a_deleted_volume_only_releases_the_finalizer() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (agent, _) = context(client, dir.path());
    let ctx = Snapshots::new(agent.clone());
    let task = run_reconcile(&ctx, snapshot("s1", "gone", true, true)).await;
    server
        .expect(Method::GET, &volume_path("gone"))
        .await
        .respond(not_found());
    let request = server.expect(Method::PATCH, &snapshot_path("s1")).await;
    assert_eq!(
        request.json()[1],
        json!({"op": "replace", "path": "/metadata/finalizers", "value": []})
    );
    request.respond(json_response(
        StatusCode::OK,
        snapshot_json("s1", "gone", false, true),
    ));
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn engine_snapshots_without_objects_get_objects() {
    let dir = tempfile::tempdir().unwrap();
    let (client, mut server) = ApiServer::start();
    let (agent, published) = context(client, dir.path());
    let ctx = Snapshots::new(agent.clone());
    let data = agent.engine.create_volume("v1", 4 * MIB, None).unwrap();
    data.snapshot("described", Default::default()).unwrap();
    data.snapshot("for-backup", [("k".to_owned(), "v".to_owned())].into())
        .unwrap();
    data.snapshot(
        "clone-for-x",
        [(TEMPORARY_LABEL.to_owned(), "true".to_owned())].into(),
    )
    .unwrap();
    data.snapshot(
        "bi-export-0123456789ab",
        [(
            crate::agent::backing_images::local::EXPORT_LABEL.to_owned(),
            "img".to_owned(),
        )]
        .into(),
    )
    .unwrap();
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move { discover(&ctx).await }
    });
    let list = |kind: &str, items: Vec<Value>| json!({"apiVersion": "bulwark.io/v1beta1", "kind": kind, "metadata": {}, "items": items});
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/volumes"),
        )
        .await
        .respond(json_response(
            StatusCode::OK,
            list(
                "VolumeList",
                vec![
                    ready_volume(),
                    volume_json("v2", json!({"size": "4Mi"}), json!({"ownerID": "n2"}), true),
                ],
            ),
        ));
    server
        .expect(
            Method::GET,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/snapshots"),
        )
        .await
        .respond(json_response(
            StatusCode::OK,
            list(
                "SnapshotList",
                vec![snapshot_json("described", "v1", true, false)],
            ),
        ));
    let create = server
        .expect(
            Method::POST,
            &format!("/apis/bulwark.io/v1beta1/namespaces/{NS}/snapshots"),
        )
        .await;
    let body = create.json();
    assert_eq!(body["metadata"]["name"], "for-backup");
    assert_eq!(
        body["metadata"]["annotations"][USER_CREATED_ANNOTATION],
        "false"
    );
    assert_eq!(body["metadata"]["ownerReferences"][0]["name"], "v1");
    assert_eq!(body["spec"], json!({"volume": "v1", "labels": {"k": "v"}}));
    create.respond(json_response(StatusCode::CREATED, body));
    assert_eq!(task.await.unwrap().unwrap(), vec!["for-backup".to_owned()]);
    assert_eq!(events(&published), vec![(false, "Discovered".to_owned())]);
}
