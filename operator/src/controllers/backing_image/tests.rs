use super::*;
use crate::controllers::testing::{self, json_response};
use http::{Method, StatusCode};
use kube::runtime::reflector;

const IMAGES: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/backingimages";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases";

fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

fn image(patch: serde_json::Value) -> BackingImage {
    let mut base = serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
        "metadata": {"name": "img", "namespace": "bulwark-system", "generation": 1, "uid": "u-1"},
        "spec": {"sourceType": "download", "sourceParameters": {"url": "https://example.com/disk.qcow2"}}
    });
    merge(&mut base, patch);
    serde_json::from_value(base).expect("a valid BackingImage")
}

fn volume(name: &str, patch: serde_json::Value) -> Volume {
    let mut base = serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name, "namespace": "bulwark-system"},
        "spec": {"size": "1Gi"}
    });
    merge(&mut base, patch);
    serde_json::from_value(base).expect("a valid Volume")
}

fn leases(nodes: &[&str]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| {
            let mut lease =
                serde_json::to_value(presence::build_lease(node, jiff::Timestamp::now()))
                    .expect("json");
            lease["metadata"]["namespace"] = "bulwark-system".into();
            lease
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "LeaseList", "metadata": {}, "items": items})
}

fn ok(object: &BackingImage) -> http::Response<kube::client::Body> {
    json_response(StatusCode::OK, serde_json::to_value(object).expect("json"))
}

fn with_volumes(ctx: &mut Context, volumes: Vec<Volume>) {
    let (reader, mut writer) = reflector::store();
    for v in volumes {
        writer.apply_watcher_event(&watcher::Event::Apply(v));
    }
    ctx.caches.volumes = reader;
}

fn with_images(ctx: &mut Context, images: Vec<BackingImage>) {
    let (reader, mut writer) = reflector::store();
    for i in images {
        writer.apply_watcher_event(&watcher::Event::Apply(i));
    }
    ctx.caches.backing_images = reader;
}

/// Strips `lastTransitionTime` (set from the clock) so bodies compare exactly.
fn without_times(mut body: serde_json::Value) -> serde_json::Value {
    if let Some(conditions) = body["status"]["conditions"].as_array_mut() {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                assert!(c.remove("lastTransitionTime").is_some(), "{c:?}");
            }
        }
    }
    body
}

#[test]
fn downloads_go_to_the_least_loaded_live_node() {
    let img = image(serde_json::json!({}));
    let busy = Arc::new(image(serde_json::json!({
        "metadata": {"name": "other"}, "status": {"ownerID": "node-a"}
    })));
    let live = vec!["node-a".to_owned(), "node-b".to_owned()];
    assert_eq!(assign(&img, &live, &[], &[busy]), Ok("node-b".into()));
    assert_eq!(assign(&img, &live, &[], &[]), Ok("node-a".into()));
    assert_eq!(assign(&img, &[], &[], &[]), Err(AssignError::NoAgents));
}

#[test]
fn exports_go_to_their_volumes_node() {
    let img = image(serde_json::json!({"spec": {
        "sourceType": "export-from-volume",
        "sourceParameters": {"volume-name": "vol-1", "export-type": "qcow2"}
    }}));
    let live = vec!["node-a".to_owned(), "node-b".to_owned()];
    let placed = Arc::new(volume(
        "vol-1",
        serde_json::json!({"status": {"ownerID": "node-b", "state": "Ready"}}),
    ));
    assert_eq!(assign(&img, &live, &[placed], &[]), Ok("node-b".into()));
    let creating = Arc::new(volume(
        "vol-1",
        serde_json::json!({"status": {"ownerID": "node-b", "state": "Creating"}}),
    ));
    assert_eq!(
        assign(&img, &live, &[creating], &[]),
        Err(AssignError::VolumeNotReady {
            volume: "vol-1".into(),
            state: "Creating".into()
        })
    );
    let unplaced = Arc::new(volume("vol-1", serde_json::json!({})));
    assert_eq!(
        assign(&img, &live, &[unplaced], &[]),
        Err(AssignError::VolumeNotPlaced {
            volume: "vol-1".into()
        })
    );
    let missing = assign(&img, &live, &[], &[]).expect_err("no volume");
    assert!(
        missing
            .to_string()
            .contains("volume-name names volume \"vol-1\""),
        "{missing}"
    );
    let down = Arc::new(volume(
        "vol-1",
        serde_json::json!({"status": {"ownerID": "node-x", "state": "Ready"}}),
    ));
    assert_eq!(
        assign(&img, &live, &[down], &[]),
        Err(AssignError::VolumeNodeDown {
            volume: "vol-1".into(),
            node: "node-x".into()
        })
    );
}

#[test]
fn volumes_on_exported_images_must_go_to_the_images_node() {
    let exported = image(serde_json::json!({
        "spec": {"sourceType": "export-from-volume", "sourceParameters": {"volume-name": "v"}},
        "status": {"ownerID": "node-b"}
    }));
    assert_eq!(required_node(&exported), Some("node-b"));
    let downloaded = image(serde_json::json!({"status": {"ownerID": "node-b"}}));
    assert_eq!(required_node(&downloaded), None);
}

#[tokio::test]
async fn a_new_download_image_is_assigned_with_its_finalizer() {
    let (ctx, mut server, events) = testing::context();
    let img = image(serde_json::json!({}));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        let finalizer = server.expect(Method::PATCH, &format!("{IMAGES}/img")).await;
        assert_eq!(
            finalizer.json(),
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["bulwark.io/backing-image-data"]},
            ])
        );
        finalizer.respond(ok(&answer));
        server
            .expect(Method::GET, LEASES)
            .await
            .respond(json_response(StatusCode::OK, leases(&["node-b", "node-a"])));
        let placed = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        assert!(
            placed
                .query
                .split('&')
                .any(|p| p == "fieldManager=bulwark-backing-image"),
            "{}",
            placed.query
        );
        assert!(placed.query.contains("force=true"), "{}", placed.query);
        assert_eq!(
            without_times(placed.json()),
            serde_json::json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
                "status": {
                    "ownerID": "node-a",
                    "state": "pending",
                    "message": "assigned to node node-a",
                    "conditions": [{
                        "type": "Scheduled", "status": "True", "reason": "Assigned",
                        "message": "assigned to node node-a", "observedGeneration": 1
                    }]
                }
            })
        );
        placed.respond(ok(&answer));
    });
    let action = reconcile(&img, &ctx).await.expect("reconciled");
    script.await.expect("server script");
    assert_eq!(action, Action::await_change());
    let events = events.lock().expect("events").clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0].reason.as_str(),
            events[0].note.as_str(),
            events[0].warning
        ),
        ("Scheduled", "assigned to node node-a", false)
    );
}

#[tokio::test]
async fn an_export_is_assigned_to_the_volumes_node() {
    let (mut ctx, mut server, _events) = testing::context();
    with_volumes(
        &mut ctx,
        vec![volume(
            "vol-1",
            serde_json::json!({"status": {"ownerID": "node-b", "state": "Ready"}}),
        )],
    );
    with_images(&mut ctx, vec![]);
    let img = image(serde_json::json!({
        "metadata": {"finalizers": ["bulwark.io/backing-image-data"]},
        "spec": {"sourceType": "export-from-volume", "sourceParameters": {"volume-name": "vol-1"}}
    }));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        server
            .expect(Method::GET, LEASES)
            .await
            .respond(json_response(StatusCode::OK, leases(&["node-a", "node-b"])));
        let placed = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        let body = placed.json();
        assert_eq!(body["status"]["ownerID"], "node-b");
        assert_eq!(body["status"]["state"], "pending");
        placed.respond(ok(&answer));
    });
    reconcile(&img, &ctx).await.expect("reconciled");
    script.await.expect("server script");
}

#[tokio::test]
async fn an_export_of_an_unplaced_volume_waits_with_a_message() {
    let (mut ctx, mut server, events) = testing::context();
    with_volumes(&mut ctx, vec![volume("vol-1", serde_json::json!({}))]);
    let img = image(serde_json::json!({
        "metadata": {"finalizers": ["bulwark.io/backing-image-data"]},
        "spec": {"sourceType": "export-from-volume", "sourceParameters": {"volume-name": "vol-1"}}
    }));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        server
            .expect(Method::GET, LEASES)
            .await
            .respond(json_response(StatusCode::OK, leases(&["node-a"])));
        let status = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        let message = "volume \"vol-1\" is not placed on a node yet; the export starts on its node once it is";
        assert_eq!(
            without_times(status.json())["status"],
            serde_json::json!({
                "state": "pending",
                "message": message,
                "conditions": [{
                    "type": "Scheduled", "status": "False", "reason": "Unschedulable",
                    "message": message, "observedGeneration": 1
                }]
            })
        );
        status.respond(ok(&answer));
    });
    let action = reconcile(&img, &ctx).await.expect("reconciled");
    script.await.expect("server script");
    assert_eq!(action, Action::requeue(RETRY));
    assert!(events.lock().expect("events")[0].warning);
}

#[tokio::test]
async fn an_invalid_spec_fails_without_assignment() {
    let (ctx, mut server, events) = testing::context();
    let img = image(serde_json::json!({
        "spec": {"sourceParameters": {"url": "ftp://example.com/x"}, "checksum": "ABC"}
    }));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        let status = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        let body = status.json();
        assert_eq!(body["status"]["state"], "failed");
        assert!(body["status"].get("ownerID").is_none(), "{body}");
        let message = body["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("spec.checksum must be a SHA-512"),
            "{message}"
        );
        assert!(
            message.contains("spec.sourceParameters.url is required"),
            "{message}"
        );
        assert_eq!(body["status"]["conditions"][0]["reason"], "Invalid");
        status.respond(ok(&answer));
    });
    assert_eq!(
        reconcile(&img, &ctx).await.expect("reconciled"),
        Action::await_change()
    );
    script.await.expect("server script");
    let events = events.lock().expect("events").clone();
    assert_eq!(
        (events[0].reason.as_str(), events[0].warning),
        ("Invalid", true)
    );
}

#[tokio::test]
async fn unsupported_source_types_fail_with_a_message() {
    let (ctx, mut server, _events) = testing::context();
    let img = image(serde_json::json!({
        "spec": {"sourceType": "upload", "sourceParameters": {}}
    }));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        let status = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        let body = status.json();
        assert_eq!(body["status"]["state"], "failed");
        assert_eq!(
            body["status"]["message"],
            "spec.sourceType upload is not supported yet: use download or export-from-volume"
        );
        status.respond(ok(&answer));
    });
    reconcile(&img, &ctx).await.expect("reconciled");
    script.await.expect("server script");
}

#[tokio::test]
async fn deletion_is_refused_while_a_volume_uses_the_image() {
    let (mut ctx, mut server, events) = testing::context();
    with_volumes(
        &mut ctx,
        vec![
            volume(
                "vol-2",
                serde_json::json!({"spec": {"backingImage": "img"}}),
            ),
            volume(
                "vol-1",
                serde_json::json!({"spec": {"backingImage": "img"}}),
            ),
            volume(
                "vol-3",
                serde_json::json!({"spec": {"backingImage": "other"}}),
            ),
        ],
    );
    let img = image(serde_json::json!({
        "metadata": {"finalizers": ["bulwark.io/backing-image-data"], "deletionTimestamp": "2026-11-27T10:00:00Z"},
        "status": {"ownerID": "node-a", "state": "ready", "nodes": {"node-a": {"state": "ready"}}}
    }));
    let answer = img.clone();
    let message = "deletion refused: used by volume vol-1, vol-2; delete the volume first (the image is removed once no volume uses it)";
    let script = tokio::spawn(async move {
        let status = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        assert!(
            status
                .query
                .contains("fieldManager=bulwark-backing-image-deletion"),
            "{}",
            status.query
        );
        assert_eq!(
            without_times(status.json())["status"],
            serde_json::json!({"conditions": [{
                "type": "InUse", "status": "True", "reason": "InUse",
                "message": message, "observedGeneration": 1
            }]})
        );
        status.respond(ok(&answer));
        // Nothing else: the finalizer stays.
        server
    });
    let action = reconcile(&img, &ctx).await.expect("reconciled");
    let server = script.await.expect("server script");
    drop(server);
    assert_eq!(action, Action::requeue(RETRY));
    let events = events.lock().expect("events").clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0].reason.as_str(),
            events[0].note.as_str(),
            events[0].warning
        ),
        ("DeletionRefused", message, true)
    );

    // Again with the condition already said: no request, no second Event.
    let (mut ctx, server, events) = testing::context();
    with_volumes(
        &mut ctx,
        vec![
            volume(
                "vol-1",
                serde_json::json!({"spec": {"backingImage": "img"}}),
            ),
            volume(
                "vol-2",
                serde_json::json!({"spec": {"backingImage": "img"}}),
            ),
        ],
    );
    drop(server);
    let mut said = img.clone();
    if let Some(status) = said.status.as_mut() {
        status.conditions = Some(vec![status::condition(
            None,
            IN_USE,
            true,
            "InUse",
            message,
            Some(1),
        )]);
    }
    assert_eq!(
        reconcile(&said, &ctx).await.expect("reconciled"),
        Action::requeue(RETRY)
    );
    assert!(events.lock().expect("events").is_empty());
}

#[tokio::test]
async fn an_unused_image_lets_the_nodes_remove_their_copies_first() {
    let (ctx, mut server, events) = testing::context();
    let img = image(serde_json::json!({
        "metadata": {"finalizers": ["bulwark.io/backing-image-data"], "deletionTimestamp": "2026-11-27T10:00:00Z"},
        "status": {"ownerID": "node-a", "state": "ready", "nodes": {"node-a": {"state": "ready"}}}
    }));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        let status = server
            .expect(Method::PATCH, &format!("{IMAGES}/img/status"))
            .await;
        assert_eq!(
            without_times(status.json())["status"],
            serde_json::json!({"conditions": [{
                "type": "InUse", "status": "False", "reason": "Unused",
                "message": "no volume uses the image: the nodes remove their copies",
                "observedGeneration": 1
            }]})
        );
        status.respond(ok(&answer));
        server
            .expect(Method::GET, LEASES)
            .await
            .respond(json_response(StatusCode::OK, leases(&["node-a"])));
    });
    let action = reconcile(&img, &ctx).await.expect("reconciled");
    script.await.expect("server script");
    assert_eq!(action, Action::requeue(RETRY));
    assert!(events.lock().expect("events").is_empty());
}

#[tokio::test]
async fn the_finalizer_goes_once_no_live_node_holds_a_copy() {
    let (ctx, mut server, events) = testing::context();
    let unused = status::condition(None, IN_USE, false, "Unused", "no volume", Some(1));
    let img = image(serde_json::json!({
        "metadata": {"finalizers": ["bulwark.io/backing-image-data"], "deletionTimestamp": "2026-11-27T10:00:00Z"},
        "status": {"ownerID": "node-a", "state": "ready", "nodes": {"node-gone": {"state": "ready"}},
                   "conditions": [unused]}
    }));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        server
            .expect(Method::GET, LEASES)
            .await
            .respond(json_response(StatusCode::OK, leases(&["node-a"])));
        let patch = server.expect(Method::PATCH, &format!("{IMAGES}/img")).await;
        assert_eq!(
            patch.json(),
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["bulwark.io/backing-image-data"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": []},
            ])
        );
        patch.respond(ok(&answer));
    });
    assert_eq!(
        reconcile(&img, &ctx).await.expect("reconciled"),
        Action::await_change()
    );
    script.await.expect("server script");
    let events = events.lock().expect("events").clone();
    assert_eq!(events[0].reason, "Deleted");
    assert!(events[0].note.contains("node-gone"), "{:?}", events[0]);
}
