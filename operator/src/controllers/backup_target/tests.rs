//! Reconcile tests of the BackupTarget controller against the mock API server, with real
//! stores (a temp directory written with `backupstore`, and SeaweedFS for S3).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backupstore::target::{Credentials, TargetUrl};
use backupstore::{BackupOptions, FileSource};
use config::{ClusterConfig, CommonConfig, ControllerConfig, LeaseConfig, LogFormat};
use crd_types::backup::BackupState;
use crd_types::common::{CompressionMethod, Time};
use crd_types::{
    Backup, BackupStatus, BackupTarget, BackupTargetSpec, BackupTargetStatus, BackupVolume,
};
use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use serde_json::{Value, json};

use super::sync::{MIRRORED_FROM, REMOTE_GONE, VOLUME_LABEL, backup_object, volume_object};
use crate::caches::Caches;
use crate::controllers::Context;
use crate::controllers::testing::{ApiServer, Recorded, json_response, not_found};
use crate::events::{Events, Published};
use crate::metrics::Metrics;
use crate::stores::Stores;

pub const NS: &str = "bulwark-system";
pub const API: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system";

/// A Context for tests: empty caches, in-memory Events, fresh metrics and store handles.
pub fn context(client: kube::Client) -> (Context, Arc<Mutex<Vec<Published>>>) {
    let (events, published) = Events::memory();
    let config = ControllerConfig {
        common: CommonConfig {
            cluster: ClusterConfig {
                kubeconfig: None,
                context: None,
            },
            namespace: NS.into(),
            http_addr: ([127, 0, 0, 1], 0).into(),
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        },
        install_crds: false,
        lease: LeaseConfig {
            name: "bulwark-controller".into(),
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        },
        default_backup_target: None,
        poll_interval: Duration::from_secs(300),
        dr_poll_interval: Duration::from_secs(30),
        max_concurrent_operations: 4,
        default_compression: CompressionMethod::Lz4,
        default_block_size: 2 << 20,
        allow_recurring_job_while_volume_detached: false,
        csi_driver_name: "driver.bulwark.io".into(),
        csi_socket: None,
    };
    let caches = Caches {
        backup_targets: reflector::store().0,
        backup_volumes: reflector::store().0,
        backups: reflector::store().0,
        volumes: reflector::store().0,
        snapshots: reflector::store().0,
        backing_images: reflector::store().0,
        recurring_jobs: reflector::store().0,
    };
    let ctx = Context {
        client,
        config: Arc::new(config),
        metrics: Metrics::new().expect("metrics"),
        caches,
        events,
        stores: Arc::new(Stores::default()),
    };
    (ctx, published)
}

pub fn events(published: &Arc<Mutex<Vec<Published>>>) -> Vec<(String, bool, String)> {
    published
        .lock()
        .expect("events")
        .iter()
        .map(|e| (e.object.clone(), e.warning, e.reason.clone()))
        .collect()
}

pub fn notes(published: &Arc<Mutex<Vec<Published>>>) -> Vec<String> {
    published
        .lock()
        .expect("events")
        .iter()
        .map(|e| e.note.clone())
        .collect()
}

pub fn ok(object: impl serde::Serialize) -> http::Response<kube::client::Body> {
    json_response(StatusCode::OK, serde_json::to_value(object).expect("json"))
}

pub fn created(object: impl serde::Serialize) -> http::Response<kube::client::Body> {
    json_response(
        StatusCode::CREATED,
        serde_json::to_value(object).expect("json"),
    )
}

pub fn list(kind: &str, items: Vec<Value>) -> http::Response<kube::client::Body> {
    json_response(
        StatusCode::OK,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": "1"}, "items": items,
        }),
    )
}

pub fn target(name: &str, url: &str) -> BackupTarget {
    let mut t = BackupTarget::new(
        name,
        BackupTargetSpec {
            backup_target_url: url.into(),
            credential_secret: None,
            poll_interval: "300s".into(),
            sync_requested_at: None,
        },
    );
    t.metadata.namespace = Some(NS.into());
    t.metadata.generation = Some(3);
    t.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(1000).expect("time")));
    t
}

pub fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// A directory store holding real `backups`; the directory lives as long as the guard.
pub async fn file_store(backups: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = file_url(dir.path());
    write_backups(&url, Credentials::default(), backups).await;
    (dir, url)
}

/// Write real backups (`(volume, backup)`, in order) into the store at `url`.
pub async fn write_backups(url: &str, credentials: Credentials, backups: &[(&str, &str)]) {
    let images = tempfile::tempdir().expect("tempdir");
    let image = images.path().join("image");
    let mut data = vec![0u8; 4 << 20];
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let stores = Stores::default();
    let store = stores
        .open_with("writer", TargetUrl::parse(url).expect("url"), credentials)
        .await
        .expect("store opens");
    for (n, (volume, name)) in backups.iter().enumerate() {
        data[n] = data[n].wrapping_add(1);
        std::fs::write(&image, &data).expect("image");
        let source = FileSource::open(&image).expect("source");
        let mut options = BackupOptions::new(*volume, format!("snap-{n}"));
        options.backup_name = Some((*name).to_owned());
        options.labels = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
        store
            .backup(Arc::new(source), options)
            .await
            .expect("backup");
    }
    // Release the kept locks, so the code under test never waits for them.
    stores.close_all().await;
}

/// The two listings a sync starts with (objects before the store), answered with these items.
pub async fn expect_lists(server: &mut ApiServer, volumes: Vec<Value>, backups: Vec<Value>) {
    server
        .expect(Method::GET, &format!("{API}/backupvolumes"))
        .await
        .respond(list("BackupVolume", volumes));
    server
        .expect(Method::GET, &format!("{API}/backups"))
        .await
        .respond(list("Backup", backups));
}

/// `what`, failing the test instead of hanging when the code waits for an unscripted answer.
pub async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), what)
        .await
        .expect("finished in time (an unexpected request would hang)")
}

fn mirrored(target: &str, volume: &str, name: &str, state: BackupState) -> Backup {
    let mut b = backup_object(target, volume, name, &Default::default());
    b.metadata.namespace = Some(NS.into());
    b.status = Some(BackupStatus {
        state: Some(state),
        backup_target_name: Some(target.into()),
        ..BackupStatus::default()
    });
    b
}

fn backup_volume(target: &str, volume: &str) -> BackupVolume {
    let mut v = volume_object(target, volume);
    v.metadata.namespace = Some(NS.into());
    v
}

fn value(object: impl serde::Serialize) -> Value {
    serde_json::to_value(object).expect("json")
}

fn assert_apply(request: &Recorded, manager: &str) {
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert!(
        request.query.contains(&format!("fieldManager={manager}"))
            && request.query.contains("force=true"),
        "{}",
        request.query
    );
}

/// The condition of `type_` in a status patch body.
pub fn condition<'a>(body: &'a Value, type_: &str) -> &'a Value {
    body["status"]["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("condition {type_} in {body}"))
}

#[tokio::test]
async fn an_available_target_is_mirrored_into_objects() {
    let (_dir, url) = file_store(&[("vol-a", "backup-1"), ("vol-a", "backup-2")]).await;
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client);
    let t = target("main", &url);
    let expected_url = TargetUrl::parse(&url)
        .expect("url")
        .backup_url("backup-1", "vol-a")
        .expect("backup url")
        .to_string();
    let script = tokio::spawn(async move {
        expect_lists(&mut server, vec![], vec![]).await;
        let create = server
            .expect(Method::POST, &format!("{API}/backupvolumes"))
            .await;
        assert!(create.query.contains("fieldManager=bulwark-backup-target"));
        let body = create.json();
        assert_eq!(body["metadata"]["name"], "vol-a");
        assert_eq!(
            body["spec"],
            json!({"backupTargetName": "main", "volumeName": "vol-a"})
        );
        create.respond(created(body));
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backupvolumes/vol-a/status"))
            .await;
        assert_apply(&patch, "bulwark-backup-target");
        let status = patch.json()["status"].clone();
        assert_eq!(status["size"], 4 << 20);
        assert_eq!(status["backupCount"], 2);
        assert_eq!(status["lastBackupName"], "backup-2");
        assert_eq!(status["compressionMethod"], "lz4");
        assert_eq!(status["blockSize"], 2 << 20);
        // Three distinct blocks: backup-2 changed the first of backup-1's two.
        assert_eq!(status["dataStored"], 3 * (2 << 20));
        assert!(status["lastBackupAt"].is_string() && status["lastSyncedAt"].is_string());
        patch.respond(ok(backup_volume("main", "vol-a")));
        for (n, name) in ["backup-1", "backup-2"].into_iter().enumerate() {
            let create = server.expect(Method::POST, &format!("{API}/backups")).await;
            let body = create.json();
            assert_eq!(body["metadata"]["name"], name);
            assert_eq!(body["metadata"]["labels"][VOLUME_LABEL], "vol-a");
            assert_eq!(body["metadata"]["annotations"][MIRRORED_FROM], "main");
            assert_eq!(
                body["metadata"]["finalizers"],
                json!(["bulwark.io/remote-backup"])
            );
            assert_eq!(body["spec"]["volume"], "vol-a");
            assert_eq!(body["spec"]["snapshotName"], format!("snap-{n}"));
            assert_eq!(body["spec"]["labels"], json!({"app": "db"}));
            create.respond(created(body));
            let patch = server
                .expect(Method::PATCH, &format!("{API}/backups/{name}/status"))
                .await;
            assert_apply(&patch, "bulwark-backup-target");
            let status = patch.json()["status"].clone();
            assert_eq!(status["state"], "Completed");
            assert_eq!(status["progress"], 100);
            assert_eq!(status["snapshotName"], format!("snap-{n}"));
            assert_eq!(status["size"], 4 << 20);
            assert_eq!(status["volumeSize"], 4 << 20);
            assert_eq!(status["compressionMethod"], "lz4");
            assert_eq!(status["blockSize"], 2 << 20);
            assert_eq!(status["backupTargetName"], "main");
            assert!(status["backupCreatedAt"].is_string());
            assert!(status["snapshotCreatedAt"].is_string());
            if n == 0 {
                assert_eq!(status["url"], expected_url.as_str());
            }
            patch.respond(ok(mirrored("main", "vol-a", name, BackupState::Completed)));
        }
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backuptargets/main/status"))
            .await;
        assert_apply(&patch, "bulwark-backup-target");
        let body = patch.json();
        assert_eq!(body["status"]["available"], true);
        assert_eq!(body["status"]["observedGeneration"], 3);
        assert!(body["status"]["lastSyncedAt"].is_string());
        let unavailable = condition(&body, "Unavailable");
        assert_eq!(unavailable["status"], "False");
        let synced = condition(&body, "Synced");
        assert_eq!(synced["status"], "True");
        assert_eq!(synced["reason"], "Synced");
        assert_eq!(
            synced["message"],
            "1 volumes and 2 backups in the store; created 1 BackupVolumes and 2 Backups, removed 0 BackupVolumes and 0 Backups whose remote data vanished"
        );
        patch.respond(ok(target("main", "file:///x")));
    });
    let action = within(super::reconcile(&ctx, &t, &[]))
        .await
        .expect("reconciled");
    within(script).await.expect("script");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        events(&published),
        [
            (
                "BackupTarget/main".to_owned(),
                false,
                "Available".to_owned()
            ),
            ("BackupTarget/main".to_owned(), false, "Synced".to_owned()),
        ]
    );
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("bulwark_backup_target_available{target=\"main\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("bulwark_reconcile_total{controller=\"backup-target\",result=\"success\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn vanished_remote_data_is_marked_remote_gone_before_objects_are_deleted() {
    let (_dir, url) = file_store(&[("vol-a", "backup-1")]).await;
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client);
    let mut t = target("main", &url);
    t.status = Some(BackupTargetStatus {
        available: Some(true),
        ..BackupTargetStatus::default()
    });
    let mut agents = mirrored("main", "vol-a", "backup-agent", BackupState::Completed);
    agents.metadata.annotations = None;
    agents.status.as_mut().expect("status").owner_id = Some("node-1".into());
    let mut running = agents.clone();
    running.metadata.name = Some("backup-running".into());
    running.status.as_mut().expect("status").state = Some(BackupState::InProgress);
    let backups = vec![
        value(mirrored(
            "main",
            "vol-a",
            "backup-1",
            BackupState::Completed,
        )),
        value(mirrored(
            "main",
            "vol-a",
            "backup-0",
            BackupState::Completed,
        )),
        value(agents),
        value(running),
        value(mirrored(
            "other",
            "vol-a",
            "backup-elsewhere",
            BackupState::Completed,
        )),
    ];
    let script = tokio::spawn(async move {
        expect_lists(
            &mut server,
            vec![
                value(backup_volume("main", "vol-a")),
                value(backup_volume("main", "vol-old")),
            ],
            backups,
        )
        .await;
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backupvolumes/vol-a/status"))
            .await;
        assert_eq!(patch.json()["status"]["backupCount"], 1);
        patch.respond(ok(backup_volume("main", "vol-a")));
        for name in ["backup-0", "backup-agent"] {
            let mark = server
                .expect(Method::PATCH, &format!("{API}/backups/{name}"))
                .await;
            assert_eq!(
                mark.content_type.as_deref(),
                Some("application/merge-patch+json")
            );
            assert_eq!(
                mark.json(),
                json!({"metadata": {"annotations": {REMOTE_GONE: "true"}}})
            );
            mark.respond(ok(mirrored("main", "vol-a", name, BackupState::Completed)));
            server
                .expect(Method::DELETE, &format!("{API}/backups/{name}"))
                .await
                .respond(ok(mirrored("main", "vol-a", name, BackupState::Completed)));
        }
        let mark = server
            .expect(Method::PATCH, &format!("{API}/backupvolumes/vol-old"))
            .await;
        assert_eq!(
            mark.json(),
            json!({"metadata": {"annotations": {REMOTE_GONE: "true"}}})
        );
        mark.respond(ok(backup_volume("main", "vol-old")));
        server
            .expect(Method::DELETE, &format!("{API}/backupvolumes/vol-old"))
            .await
            .respond(ok(backup_volume("main", "vol-old")));
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backuptargets/main/status"))
            .await;
        let body = patch.json();
        assert_eq!(
            condition(&body, "Synced")["message"],
            "1 volumes and 1 backups in the store; created 0 BackupVolumes and 0 Backups, removed 1 BackupVolumes and 2 Backups whose remote data vanished"
        );
        patch.respond(ok(target("main", "file:///x")));
    });
    within(super::reconcile(&ctx, &t, &[]))
        .await
        .expect("reconciled");
    within(script).await.expect("script");
    assert_eq!(
        events(&published),
        [
            ("Backup/backup-0".to_owned(), false, "RemoteGone".to_owned()),
            (
                "Backup/backup-agent".to_owned(),
                false,
                "RemoteGone".to_owned()
            ),
            ("BackupTarget/main".to_owned(), false, "Synced".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_empty_store_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client);
    let mut t = target("main", &file_url(dir.path()));
    t.spec.poll_interval = "0".into();
    let script = tokio::spawn(async move {
        expect_lists(
            &mut server,
            vec![value(backup_volume("main", "vol-a"))],
            vec![value(mirrored(
                "main",
                "vol-a",
                "backup-1",
                BackupState::Completed,
            ))],
        )
        .await;
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backuptargets/main/status"))
            .await;
        let body = patch.json();
        assert_eq!(body["status"]["available"], true);
        assert!(
            condition(&body, "Synced")["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("0 volumes and 0 backups")),
            "{body}"
        );
        patch.respond(ok(target("main", "file:///x")));
    });
    let action = within(super::reconcile(&ctx, &t, &[]))
        .await
        .expect("reconciled");
    within(script).await.expect("script");
    // pollInterval 0: only changes trigger the next sync.
    assert_eq!(action, Action::await_change());
    assert_eq!(
        events(&published),
        [(
            "BackupTarget/main".to_owned(),
            false,
            "Available".to_owned()
        )]
    );
}

/// Reconcile a target that must end unavailable; returns the status patch body.
async fn unavailable(
    t: BackupTarget,
    others: Vec<Arc<BackupTarget>>,
    secret: Option<(&'static str, Option<Secret>)>,
) -> (Value, Vec<(String, bool, String)>, Metrics) {
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client);
    let name = t.metadata.name.clone().expect("name");
    let script = tokio::spawn(async move {
        if let Some((secret_name, answer)) = secret {
            let get = server
                .expect(
                    Method::GET,
                    &format!("/api/v1/namespaces/{NS}/secrets/{secret_name}"),
                )
                .await;
            match answer {
                Some(secret) => get.respond(ok(secret)),
                None => get.respond(not_found()),
            }
        }
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backuptargets/{name}/status"))
            .await;
        assert_apply(&patch, "bulwark-backup-target");
        let body = patch.json();
        patch.respond(ok(target(&name, "file:///x")));
        body
    });
    let action = within(super::reconcile(&ctx, &t, &others))
        .await
        .expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let body = within(script).await.expect("script");
    assert_eq!(body["status"]["available"], false);
    assert_eq!(condition(&body, "Unavailable")["status"], "True");
    assert_eq!(condition(&body, "Synced")["status"], "False");
    assert_eq!(condition(&body, "Synced")["reason"], "Unavailable");
    let metrics = ctx.metrics.clone();
    (body, events(&published), metrics)
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

#[tokio::test]
async fn a_missing_directory_makes_the_target_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-there");
    let mut t = target("main", &file_url(&missing));
    let synced_before = Time(jiff::Timestamp::from_second(5000).expect("time"));
    t.status = Some(BackupTargetStatus {
        available: Some(true),
        last_synced_at: Some(synced_before.clone()),
        ..BackupTargetStatus::default()
    });
    let (body, events, metrics) = unavailable(t, vec![], None).await;
    let cond = condition(&body, "Unavailable");
    assert_eq!(cond["reason"], "StoreUnreachable");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist") && m.contains("not-there")),
        "{cond}"
    );
    // The last successful sync stays recorded.
    assert_eq!(body["status"]["lastSyncedAt"], value(&synced_before));
    assert_eq!(
        events,
        [(
            "BackupTarget/main".to_owned(),
            true,
            "Unavailable".to_owned()
        )]
    );
    let text = metrics.render();
    assert!(
        text.contains("bulwark_backup_target_available{target=\"main\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "bulwark_reconcile_errors_total{category=\"store\",controller=\"backup-target\"} 1"
        ),
        "{text}"
    );
}

const S3_URL: &str = "s3://bucket@us-east-1/backups/";

#[tokio::test]
async fn a_missing_secret_makes_the_target_unavailable() {
    let mut t = target("s3", S3_URL);
    t.spec.credential_secret = Some("creds".into());
    let (body, events, _) = unavailable(t, vec![], Some(("creds", None))).await;
    let cond = condition(&body, "Unavailable");
    assert_eq!(cond["reason"], "CredentialSecretMissing");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"creds\" does not exist in namespace bulwark-system")),
        "{cond}"
    );
    assert_eq!(
        events,
        [("BackupTarget/s3".to_owned(), true, "Unavailable".to_owned())]
    );
}

#[tokio::test]
async fn secret_values_with_whitespace_are_refused() {
    let mut t = target("s3", S3_URL);
    t.spec.credential_secret = Some("creds".into());
    let with_newline = secret(
        "creds",
        &[
            ("AWS_ACCESS_KEY_ID", "key\n"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    let (body, _, _) = unavailable(t, vec![], Some(("creds", Some(with_newline)))).await;
    let cond = condition(&body, "Unavailable");
    assert_eq!(cond["reason"], "InvalidCredentials");
    let message = cond["message"].as_str().expect("message");
    assert!(
        message.contains("AWS_ACCESS_KEY_ID") && message.contains("trailing newline"),
        "{message}"
    );
    // Never the value itself.
    assert!(!message.contains("key\n"), "{message}");
}

#[tokio::test]
async fn s3_targets_need_both_keys() {
    let mut t = target("s3", S3_URL);
    t.spec.credential_secret = Some("creds".into());
    let half = secret("creds", &[("AWS_ACCESS_KEY_ID", "key")]);
    let (body, _, _) = unavailable(t, vec![], Some(("creds", Some(half)))).await;
    let cond = condition(&body, "Unavailable");
    assert_eq!(cond["reason"], "InvalidCredentials");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("AWS_SECRET_ACCESS_KEY is required for s3://")),
        "{cond}"
    );
    // No Secret named at all.
    let (body, _, _) = unavailable(target("s3", S3_URL), vec![], None).await;
    assert_eq!(
        condition(&body, "Unavailable")["reason"],
        "InvalidCredentials"
    );
}

#[tokio::test]
async fn a_second_target_at_the_same_place_is_refused() {
    let first = Arc::new(target("first", "file:///backups/shared"));
    let mut second = target("second", "file:///backups/shared/");
    second.metadata.creation_timestamp =
        Some(Time(jiff::Timestamp::from_second(2000).expect("time")));
    let (body, events, metrics) = unavailable(second, vec![first], None).await;
    let cond = condition(&body, "Unavailable");
    assert_eq!(cond["reason"], "DuplicateURL");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("BackupTarget \"first\"")),
        "{cond}"
    );
    assert_eq!(
        events,
        [(
            "BackupTarget/second".to_owned(),
            true,
            "Unavailable".to_owned()
        )]
    );
    assert!(metrics.render().contains(
        "bulwark_reconcile_errors_total{category=\"invalid\",controller=\"backup-target\"} 1"
    ));
}

#[tokio::test]
async fn invalid_urls_are_refused_without_io() {
    let (body, _, _) = unavailable(target("bad", "file:///backups/a$b"), vec![], None).await;
    let cond = condition(&body, "Unavailable");
    assert_eq!(cond["reason"], "InvalidURL");
    assert!(
        cond["message"]
            .as_str()
            .is_some_and(|m| m.contains("'$' or ','")),
        "{cond}"
    );
    let (body, _, _) = unavailable(target("none", ""), vec![], None).await;
    assert_eq!(condition(&body, "Unavailable")["reason"], "NoURL");
}

#[tokio::test]
async fn an_unchanged_unavailable_target_publishes_no_new_event() {
    let mut t = target("s3", S3_URL);
    t.spec.credential_secret = Some("creds".into());
    let (first, _, _) = unavailable(t.clone(), vec![], Some(("creds", None))).await;
    t.status = Some(serde_json::from_value(first["status"].clone()).expect("status"));
    let (again, events, _) = unavailable(t, vec![], Some(("creds", None))).await;
    assert!(events.is_empty(), "{events:?}");
    // The transition time is carried over.
    assert_eq!(
        condition(&again, "Unavailable")["lastTransitionTime"],
        condition(&first, "Unavailable")["lastTransitionTime"]
    );
}

#[tokio::test]
async fn an_s3_target_is_mirrored_with_its_credential_secret() {
    let server = backupstore::testing::SeaweedFs::start()
        .await
        .expect("SeaweedFS starts (scripts/install-test-deps installs it)");
    let url = server.target_url("team/backups").to_string();
    write_backups(&url, server.credentials(), &[("vol-s3", "backup-s3")]).await;
    let creds = secret(
        "s3-creds",
        &[
            ("AWS_ACCESS_KEY_ID", backupstore::testing::ACCESS_KEY_ID),
            (
                "AWS_SECRET_ACCESS_KEY",
                backupstore::testing::SECRET_ACCESS_KEY,
            ),
            ("AWS_ENDPOINTS", &server.endpoint()),
        ],
    );
    let (client, mut api) = ApiServer::start();
    let (ctx, published) = context(client);
    let mut t = target("s3", &url);
    t.spec.credential_secret = Some("s3-creds".into());
    let expected_url = format!("{url}?backup=backup-s3&volume=vol-s3");
    let script = tokio::spawn(async move {
        api.expect(
            Method::GET,
            &format!("/api/v1/namespaces/{NS}/secrets/s3-creds"),
        )
        .await
        .respond(ok(creds));
        expect_lists(&mut api, vec![], vec![]).await;
        let create = api
            .expect(Method::POST, &format!("{API}/backupvolumes"))
            .await;
        let body = create.json();
        assert_eq!(body["spec"]["backupTargetName"], "s3");
        create.respond(created(body));
        let patch = api
            .expect(Method::PATCH, &format!("{API}/backupvolumes/vol-s3/status"))
            .await;
        assert_eq!(patch.json()["status"]["backupCount"], 1);
        patch.respond(ok(backup_volume("s3", "vol-s3")));
        let create = api.expect(Method::POST, &format!("{API}/backups")).await;
        let body = create.json();
        assert_eq!(body["metadata"]["name"], "backup-s3");
        create.respond(created(body));
        let patch = api
            .expect(Method::PATCH, &format!("{API}/backups/backup-s3/status"))
            .await;
        let status = patch.json()["status"].clone();
        assert_eq!(status["state"], "Completed");
        assert_eq!(status["url"], expected_url.as_str());
        patch.respond(ok(mirrored(
            "s3",
            "vol-s3",
            "backup-s3",
            BackupState::Completed,
        )));
        let patch = api
            .expect(Method::PATCH, &format!("{API}/backuptargets/s3/status"))
            .await;
        let body = patch.json();
        assert_eq!(body["status"]["available"], true);
        patch.respond(ok(target("s3", "file:///x")));
    });
    within(super::reconcile(&ctx, &t, &[]))
        .await
        .expect("reconciled");
    within(script).await.expect("script");
    assert_eq!(
        events(&published),
        [
            ("BackupTarget/s3".to_owned(), false, "Available".to_owned()),
            ("BackupTarget/s3".to_owned(), false, "Synced".to_owned()),
        ]
    );
    ctx.stores.close_all().await;
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_for_a_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, mut server) = ApiServer::start();
    let (ctx, _published) = context(client);
    let t = target("main", &file_url(dir.path()));
    let script = tokio::spawn(async move {
        server
            .expect(Method::GET, &format!("{API}/backupvolumes"))
            .await
            .respond(crate::controllers::testing::status(500, "InternalError"));
    });
    let result = within(super::reconcile(&ctx, &t, &[])).await;
    within(script).await.expect("script");
    assert!(matches!(result, Err(super::Error::Kube(_))));
    assert!(ctx.metrics.render().contains(
        "bulwark_reconcile_errors_total{category=\"kubernetes\",controller=\"backup-target\"} 1"
    ));
}

#[tokio::test]
async fn store_names_that_cannot_be_objects_are_skipped_with_a_warning() {
    let (_dir, url) = file_store(&[("Vol_A", "backup-1")]).await;
    let (client, mut server) = ApiServer::start();
    let (ctx, published) = context(client);
    let t = target("main", &url);
    let script = tokio::spawn(async move {
        expect_lists(&mut server, vec![], vec![]).await;
        let patch = server
            .expect(Method::PATCH, &format!("{API}/backuptargets/main/status"))
            .await;
        let body = patch.json();
        let synced = condition(&body, "Synced");
        assert_eq!(synced["status"], "True");
        assert_eq!(synced["reason"], "SyncedWithProblems");
        assert!(
            synced["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"Vol_A\" is not a valid object name")),
            "{synced}"
        );
        patch.respond(ok(target("main", "file:///x")));
    });
    within(super::reconcile(&ctx, &t, &[]))
        .await
        .expect("reconciled");
    within(script).await.expect("script");
    assert_eq!(
        events(&published),
        [
            (
                "BackupTarget/main".to_owned(),
                false,
                "Available".to_owned()
            ),
            (
                "BackupTarget/main".to_owned(),
                true,
                "SyncIncomplete".to_owned()
            ),
        ]
    );
}
