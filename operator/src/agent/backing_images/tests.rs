//! Agent tests: a real engine on temp dirs, a local HTTP server serving images made with
//! `qemu-img`, and the mock API server asserting every status write.

use std::path::Path;
use std::sync::Mutex as StdMutex;

use super::*;
use crate::controllers::testing::{ApiServer, json_response};
use crate::events::Published;
use http::{Method, StatusCode};

const IMAGES: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/backingimages";
const MIB: u64 = 1 << 20;

fn agent_context(
    node: &str,
    dir: &Path,
) -> (AgentContext, ApiServer, Arc<StdMutex<Vec<Published>>>) {
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        common: config::CommonArgs,
        #[command(flatten)]
        agent: config::AgentArgs,
    }
    let data_dir = dir.to_str().expect("utf-8 temp dir");
    let args = <Args as clap::Parser>::parse_from([
        "bulwark",
        "--node-name",
        node,
        "--data-dir",
        data_dir,
    ]);
    let config = config::AgentConfig::from_args(&args.common, &args.agent).expect("valid config");
    let (client, server) = ApiServer::start();
    let (events, published) = crate::events::Events::memory();
    let ctx = AgentContext {
        client,
        namespace: "bulwark-system".into(),
        node: node.into(),
        config: Arc::new(config),
        engine: Arc::new(engine::Engine::open(dir).expect("engine")),
        stores: Arc::new(crate::stores::Stores::default()),
        events,
        metrics: crate::metrics::Metrics::new().expect("metrics"),
        frontend: None,
        operations: Arc::new(tokio::sync::Semaphore::new(2)),
    };
    (ctx, server, published)
}

/// Serve `files` (URL path → bytes) on 127.0.0.1; returns the base URL.
async fn serve(files: Vec<(&'static str, Vec<u8>)>) -> String {
    // `/busy` always answers 503, as an overloaded server would.
    let mut router = axum::Router::new().route(
        "/busy",
        axum::routing::get(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
    );
    for (path, bytes) in files {
        let bytes = axum::body::Bytes::from(bytes);
        router = router.route(
            path,
            axum::routing::get(move || async move { bytes.clone() }),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Data with holes and a partial last block (so padding and sparseness both matter).
fn content(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for (i, b) in data.iter_mut().enumerate().take(300_000) {
        *b = (i % 251) as u8 + 1;
    }
    let tail = len - 5000;
    for (i, b) in data[tail..].iter_mut().enumerate() {
        *b = (i % 13) as u8 + 7;
    }
    data
}

fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn image(name: &str, spec: serde_json::Value, status: serde_json::Value) -> BackingImage {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
        "metadata": {"name": name, "namespace": "bulwark-system", "generation": 1,
                     "uid": format!("uid-{name}")},
        "spec": spec,
        "status": status,
    }))
    .expect("a valid BackingImage")
}

fn ok(object: &BackingImage) -> http::Response<kube::client::Body> {
    json_response(StatusCode::OK, serde_json::to_value(object).expect("json"))
}

fn manager(query: &str) -> String {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("fieldManager="))
        .unwrap_or_default()
        .to_owned()
}

fn without_times(mut status: serde_json::Value) -> serde_json::Value {
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
    }
    if let Some(s) = status.as_object_mut() {
        s.remove("readyAt");
    }
    status
}

/// Answer the next status apply; returns (field manager, status body without times).
async fn next_status(
    server: &mut ApiServer,
    name: &str,
    answer: &BackingImage,
) -> (String, serde_json::Value) {
    let request = server
        .expect(Method::PATCH, &format!("{IMAGES}/{name}/status"))
        .await;
    let body = request.json();
    assert_eq!(body["kind"], "BackingImage");
    let manager = manager(&request.query);
    assert!(request.query.contains("force=true"), "{}", request.query);
    request.respond(ok(answer));
    (manager, without_times(body["status"].clone()))
}

fn in_progress(message: &str) -> serde_json::Value {
    serde_json::json!({
        "state": "in-progress", "progress": 0, "message": message,
        "conditions": [{"type": "Ready", "status": "False", "reason": "InProgress",
                        "message": message, "observedGeneration": 1}]
    })
}

fn node_entry(node: &str, state: &str, message: &str) -> serde_json::Value {
    let progress = if state == "ready" { 100 } else { 0 };
    serde_json::json!({"nodes": {node: {"state": state, "progress": progress, "message": message}}})
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("readable")
}

#[tokio::test]
async fn the_owner_downloads_a_qcow2_verifies_it_and_imports_it_raw() {
    let tmp = tempfile::tempdir().expect("tmp");
    let raw = content(3 * MIB as usize);
    let raw_path = tmp.path().join("src.raw");
    std::fs::write(&raw_path, &raw).expect("write");
    let qcow = tmp.path().join("src.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        path_str(&raw_path),
        path_str(&qcow),
    ]);
    let sum = engine::image::sha512_file(&qcow).expect("sha512");
    let base = serve(vec![("/disk.qcow2", read_file(&qcow))]).await;
    let url = format!("{base}/disk.qcow2");

    let data = tmp.path().join("node-a");
    let (ctx, mut server, events) = agent_context("node-a", &data);
    let img = image(
        "img",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": url}, "checksum": sum}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let answer = img.clone();
    let (url2, sum2) = (url.clone(), sum.clone());
    let script = tokio::spawn(async move {
        let what = format!("downloading {url2}");
        let (m, body) = next_status(&mut server, "img", &answer).await;
        assert_eq!((m.as_str(), body), (MANAGER, in_progress(&what)));
        let (m, body) = next_status(&mut server, "img", &answer).await;
        assert_eq!(m, "bulwark-agent-backing-image-node-a");
        assert_eq!(body, node_entry("node-a", "in-progress", &what));
        let (m, body) = next_status(&mut server, "img", &answer).await;
        assert_eq!(m, MANAGER);
        assert_eq!(
            body,
            serde_json::json!({
                "state": "ready", "progress": 100, "message": "ready on node node-a",
                "checksum": sum2, "size": 3 * MIB,
                "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                                "message": "ready on node node-a", "observedGeneration": 1}]
            })
        );
        let (m, body) = next_status(&mut server, "img", &answer).await;
        assert_eq!(m, "bulwark-agent-backing-image-node-a");
        assert_eq!(body, node_entry("node-a", "ready", "ready on node node-a"));
        server
    });
    let action = reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    let mut server = script.await.expect("server script");
    assert_eq!(action, Action::await_change());

    let layout = Layout::new(&data, "img");
    assert_eq!(
        read_file(&layout.raw()),
        raw,
        "the raw layer is the image's content"
    );
    let meta = layout.ready("uid-img").expect("copy complete");
    assert_eq!(
        (meta.format.as_str(), meta.checksum.as_str()),
        ("qcow2", sum.as_str())
    );
    assert!(!layout.dir().join("download").exists());
    let reasons: Vec<String> = events
        .lock()
        .expect("events")
        .iter()
        .map(|e| e.reason.clone())
        .collect();
    assert_eq!(reasons, ["Started", "Ready"]);

    // A crash after the copy was complete but before the status said so: published, not redone.
    let crashed = image(
        "img",
        serde_json::to_value(&img.spec).expect("json"),
        serde_json::json!({"ownerID": "node-a", "state": "in-progress"}),
    );
    let answer = crashed.clone();
    let script = tokio::spawn(async move {
        let (m, body) = next_status(&mut server, "img", &answer).await;
        assert_eq!(
            (m.as_str(), &body["state"]),
            (MANAGER, &serde_json::json!("ready"))
        );
        let (m, _) = next_status(&mut server, "img", &answer).await;
        assert_eq!(m, "bulwark-agent-backing-image-node-a");
    });
    reconcile(&crashed, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    script.await.expect("server script");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn a_raw_download_is_padded_to_whole_sectors_byte_exact() {
    let tmp = tempfile::tempdir().expect("tmp");
    let raw = content(MIB as usize + 100);
    let base = serve(vec![("/disk.img", raw.clone())]).await;
    let data = tmp.path().join("node-a");
    let (ctx, mut server, _events) = agent_context("node-a", &data);
    let img = image(
        "plain",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": format!("{base}/disk.img")}}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let answer = img.clone();
    let script = tokio::spawn(async move {
        for _ in 0..2 {
            next_status(&mut server, "plain", &answer).await;
        }
        let (_, body) = next_status(&mut server, "plain", &answer).await;
        next_status(&mut server, "plain", &answer).await;
        body
    });
    reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    let ready = script.await.expect("server script");
    let padded = MIB + 4096;
    assert_eq!(ready["state"], "ready");
    assert_eq!(ready["size"], padded);
    let expected_sum = {
        let file = tmp.path().join("expected");
        std::fs::write(&file, &raw).expect("write");
        engine::image::sha512_file(&file).expect("sha")
    };
    assert_eq!(ready["checksum"], expected_sum);
    let layer = read_file(&Layout::new(&data, "plain").raw());
    assert_eq!(layer.len() as u64, padded);
    assert_eq!(&layer[..raw.len()], &raw[..]);
    assert!(layer[raw.len()..].iter().all(|b| *b == 0));
}

#[tokio::test]
async fn a_checksum_mismatch_fails_with_both_checksums() {
    let tmp = tempfile::tempdir().expect("tmp");
    let raw = content(MIB as usize);
    let base = serve(vec![("/disk.img", raw.clone())]).await;
    let data = tmp.path().join("node-a");
    let (ctx, mut server, events) = agent_context("node-a", &data);
    let wrong = "a".repeat(128);
    let img = image(
        "bad",
        serde_json::json!({"sourceType": "download", "checksum": wrong,
                           "sourceParameters": {"url": format!("{base}/disk.img")}}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let actual = {
        let file = tmp.path().join("actual");
        std::fs::write(&file, &raw).expect("write");
        engine::image::sha512_file(&file).expect("sha")
    };
    let message = format!(
        "checksum mismatch: expected SHA-512 {wrong} (spec.checksum), got {actual}: fix spec.checksum or the image at the source"
    );
    let answer = img.clone();
    let expected_message = message.clone();
    let script = tokio::spawn(async move {
        next_status(&mut server, "bad", &answer).await;
        next_status(&mut server, "bad", &answer).await;
        let (m, body) = next_status(&mut server, "bad", &answer).await;
        assert_eq!(m, MANAGER);
        assert_eq!(
            body,
            serde_json::json!({
                "state": "failed", "progress": 0, "message": expected_message,
                "conditions": [{"type": "Ready", "status": "False", "reason": "Failed",
                                "message": expected_message, "observedGeneration": 1}]
            })
        );
        let (_, body) = next_status(&mut server, "bad", &answer).await;
        assert_eq!(body, node_entry("node-a", "failed", &expected_message));
    });
    let action = reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    script.await.expect("server script");
    assert_eq!(action, Action::await_change(), "a mismatch is not retried");
    assert!(Layout::new(&data, "bad").ready("uid-bad").is_none());
    let events = events.lock().expect("events").clone();
    let failed = events.last().expect("an event");
    assert_eq!((failed.reason.as_str(), failed.warning), ("Failed", true));
    assert_eq!(failed.note, message);

    // A failed image stays failed: no request at all.
    let (ctx, server, _events) = agent_context("node-a", &data);
    drop(server);
    let failed = image(
        "bad",
        serde_json::to_value(&img.spec).expect("json"),
        serde_json::json!({"ownerID": "node-a", "state": "failed",
            "conditions": [{"type": "Ready", "status": "False", "reason": "Failed", "message": "x",
                            "lastTransitionTime": "2026-11-27T10:00:00Z"}]}),
    );
    assert_eq!(
        reconcile(&failed, &ctx, &CancellationToken::new())
            .await
            .expect("reconciled"),
        Action::await_change()
    );
}

#[tokio::test]
async fn a_missing_file_fails_for_good_and_a_busy_server_is_retried() {
    let tmp = tempfile::tempdir().expect("tmp");
    let base = serve(vec![]).await;
    let data = tmp.path().join("node-a");
    let (ctx, mut server, _events) = agent_context("node-a", &data);
    let url = format!("{base}/nothing.img");
    let img = image(
        "gone",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": url}}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let answer = img.clone();
    let script = tokio::spawn(async move {
        next_status(&mut server, "gone", &answer).await;
        next_status(&mut server, "gone", &answer).await;
        let (_, body) = next_status(&mut server, "gone", &answer).await;
        next_status(&mut server, "gone", &answer).await;
        body
    });
    let action = reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    let body = script.await.expect("server script");
    assert_eq!(body["state"], "failed");
    assert_eq!(
        body["message"],
        format!("downloading {url} failed: the server answered 404")
    );
    assert_eq!(body["conditions"][0]["reason"], "Failed");
    assert_eq!(action, Action::await_change());

    let (ctx, mut server, events) = agent_context("node-a", &data);
    let url = format!("{base}/busy");
    let img = image(
        "busy",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": url}}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let answer = img.clone();
    let script = tokio::spawn(async move {
        next_status(&mut server, "busy", &answer).await;
        next_status(&mut server, "busy", &answer).await;
        let (_, body) = next_status(&mut server, "busy", &answer).await;
        next_status(&mut server, "busy", &answer).await;
        body
    });
    let action = reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    let body = script.await.expect("server script");
    assert_eq!(
        body["message"],
        format!("downloading {url} failed: the server answered 503 (retrying in 30s)")
    );
    assert_eq!(body["conditions"][0]["reason"], "Retrying");
    assert_eq!(action, Action::requeue(RETRY_AFTER));
    assert_eq!(events.lock().expect("events")[1].reason, "Retrying");

    // Reconciled again before the retry is due (its own status write): it only waits.
    let (ctx, server, _events) = agent_context("node-a", &data);
    drop(server);
    let mut failed = img.clone();
    failed.status = Some(
        serde_json::from_value(serde_json::json!({
            "ownerID": "node-a", "state": "failed",
            "conditions": [{"type": "Ready", "status": "False", "reason": "Retrying",
                            "message": "m", "lastTransitionTime": "2026-11-27T10:00:00Z"}]
        }))
        .expect("status"),
    );
    let waited = reconcile(&failed, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    assert_ne!(waited, Action::await_change(), "requeued for the retry");
}

#[tokio::test]
async fn export_then_download_elsewhere_round_trips_byte_exact() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Node A: a volume with data, exported as qcow2.
    let data_a = tmp.path().join("node-a");
    let (ctx_a, mut server_a, _events) = agent_context("node-a", &data_a);
    let size = 4 * MIB;
    let vol = ctx_a
        .engine
        .create_volume("vol-1", size, None)
        .expect("volume");
    let written = content(2 * MIB as usize);
    vol.write_at(MIB, &written).expect("write");
    vol.write_at(0, b"boot sector").expect("write");
    let mut expected = vec![0u8; size as usize];
    vol.read_at(0, &mut expected).expect("read");
    let img = image(
        "exported",
        serde_json::json!({"sourceType": "export-from-volume",
                           "sourceParameters": {"volume-name": "vol-1", "export-type": "qcow2"}}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let answer = img.clone();
    let script = tokio::spawn(async move {
        let (_, body) = next_status(&mut server_a, "exported", &answer).await;
        assert_eq!(body, in_progress("exporting volume vol-1 as qcow2"));
        next_status(&mut server_a, "exported", &answer).await;
        let (_, ready) = next_status(&mut server_a, "exported", &answer).await;
        next_status(&mut server_a, "exported", &answer).await;
        ready
    });
    reconcile(&img, &ctx_a, &CancellationToken::new())
        .await
        .expect("reconciled");
    let ready = script.await.expect("server script");
    let layout_a = Layout::new(&data_a, "exported");
    let qcow = layout_a.dir().join("image.qcow2");
    let checksum = engine::image::sha512_file(&qcow).expect("sha");
    assert_eq!(ready["state"], "ready");
    assert_eq!(
        ready["checksum"], checksum,
        "the checksum of the exported file"
    );
    assert_eq!(ready["size"], size);
    assert!(
        vol.list_snapshots().expect("snapshots").is_empty(),
        "the temporary snapshot is removed"
    );
    // Writes after the export do not change it.
    vol.write_at(0, b"later").expect("write");
    assert_eq!(read_file(&layout_a.raw()), expected);

    // Node B: the exported file served over HTTP as a download image; the volume agent's copy.
    let base = serve(vec![("/exported.qcow2", read_file(&qcow))]).await;
    let data_b = tmp.path().join("node-b");
    let (ctx_b, mut server_b, events_b) = agent_context("node-b", &data_b);
    let url = format!("{base}/exported.qcow2");
    let copy = image(
        "imported",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": url}}),
        serde_json::json!({"ownerID": "node-z", "state": "ready", "checksum": checksum}),
    );
    let answer = copy.clone();
    let script = tokio::spawn(async move {
        let (m, body) = next_status(&mut server_b, "imported", &answer).await;
        assert_eq!(m, "bulwark-agent-backing-image-node-b");
        assert_eq!(
            body,
            node_entry("node-b", "in-progress", &format!("downloading {url}"))
        );
        let (_, body) = next_status(&mut server_b, "imported", &answer).await;
        assert_eq!(body, node_entry("node-b", "ready", "copied to node node-b"));
    });
    let raw = ensure_local_copy(&ctx_b, &copy)
        .await
        .expect("a local copy");
    script.await.expect("server script");
    assert_eq!(events_b.lock().expect("events")[0].reason, "Copied");
    let layer = engine::BackingLayer {
        name: "imported".into(),
        raw_path: raw.clone(),
    };
    let restored = ctx_b
        .engine
        .create_volume("vol-2", size, Some(layer))
        .expect("volume on the image");
    let mut got = vec![0u8; size as usize];
    restored.read_at(0, &mut got).expect("read");
    assert!(
        got == expected,
        "the new volume reads exactly the exported volume"
    );

    // The copy is reused without any request (the mock server is gone).
    assert_eq!(ensure_local_copy(&ctx_b, &copy).await.expect("copy"), raw);
}

#[tokio::test]
async fn copies_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (ctx, server, _events) = agent_context("node-b", tmp.path());
    drop(server);
    let exported = image(
        "exp",
        serde_json::json!({"sourceType": "export-from-volume", "sourceParameters": {"volume-name": "v"}}),
        serde_json::json!({"ownerID": "node-a", "state": "ready"}),
    );
    let refused = ensure_local_copy(&ctx, &exported)
        .await
        .expect_err("only on node-a");
    assert!(matches!(refused, CopyError::OnlyOnOwner { ref owner, .. } if owner == "node-a"));
    assert!(refused.to_string().contains("node \"node-a\""), "{refused}");
    assert!(!refused.retryable());

    let pending = image(
        "dl",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": "http://127.0.0.1:1/x"}}),
        serde_json::json!({"ownerID": "node-a", "state": "in-progress"}),
    );
    let waiting = ensure_local_copy(&ctx, &pending)
        .await
        .expect_err("not ready");
    assert!(waiting.retryable());
    assert!(
        waiting.to_string().contains("state in-progress"),
        "{waiting}"
    );

    let mut deleting = pending.clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    assert!(matches!(
        ensure_local_copy(&ctx, &deleting).await,
        Err(CopyError::BeingDeleted { .. })
    ));
}

#[tokio::test]
async fn copies_are_removed_only_once_no_volume_uses_the_image() {
    let tmp = tempfile::tempdir().expect("tmp");
    let layout = Layout::new(tmp.path(), "img");
    layout.reset().expect("dir");
    std::fs::write(layout.raw(), b"data").expect("write");
    let in_use = |status: &str| {
        image(
            "img",
            serde_json::json!({"sourceType": "download", "sourceParameters": {"url": "http://h/x"}}),
            serde_json::json!({
                "ownerID": "node-a", "state": "ready", "nodes": {"node-a": {"state": "ready"}},
                "conditions": [{"type": "InUse", "status": status, "reason": "r", "message": "m",
                                "lastTransitionTime": "2026-11-27T10:00:00Z"}]
            }),
        )
    };
    let deleting = |mut img: BackingImage| {
        img.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        img.metadata.finalizers = Some(vec!["bulwark.io/backing-image-data".into()]);
        img
    };

    let (ctx, server, _events) = agent_context("node-a", tmp.path());
    drop(server);
    reconcile(&deleting(in_use("True")), &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    assert!(layout.raw().exists(), "kept while a volume uses the image");

    let (ctx, mut server, events) = agent_context("node-a", tmp.path());
    let img = deleting(in_use("False"));
    let answer = img.clone();
    let script = tokio::spawn(async move {
        let (m, body) = next_status(&mut server, "img", &answer).await;
        assert_eq!(m, "bulwark-agent-backing-image-node-a");
        assert_eq!(body, serde_json::json!({}), "the node's entry is dropped");
    });
    reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    script.await.expect("server script");
    assert!(!layout.dir().exists());
    assert_eq!(events.lock().expect("events")[0].reason, "CopyRemoved");
}

/// Serve `parts` as one file at `/slow.img`, `pause` between parts, with its Content-Length.
async fn serve_slowly(parts: Vec<Vec<u8>>, pause: Duration) -> String {
    let total: usize = parts.iter().map(Vec::len).sum();
    let handler = move || {
        let parts = parts.clone();
        async move {
            let stream = futures::stream::iter(parts.into_iter().enumerate()).then(
                move |(i, part)| async move {
                    if i > 0 {
                        tokio::time::sleep(pause).await;
                    }
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(part))
                },
            );
            (
                [(http::header::CONTENT_LENGTH, total.to_string())],
                axum::body::Body::from_stream(stream),
            )
        }
    };
    let router = axum::Router::new().route("/slow.img", axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}/slow.img")
}

#[tokio::test]
async fn a_long_download_reports_its_progress() {
    let tmp = tempfile::tempdir().expect("tmp");
    let raw = content(3 * MIB as usize);
    let parts: Vec<Vec<u8>> = raw.chunks(MIB as usize).map(<[u8]>::to_vec).collect();
    // Parts at 0 s, 1.5 s and 3 s: the report after 2 s sees two thirds.
    let url = serve_slowly(parts, Duration::from_millis(1500)).await;
    let data = tmp.path().join("node-a");
    let (ctx, mut server, _events) = agent_context("node-a", &data);
    let img = image(
        "slow",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": url}}),
        serde_json::json!({"ownerID": "node-a", "state": "pending"}),
    );
    let answer = img.clone();
    let script = tokio::spawn(async move {
        next_status(&mut server, "slow", &answer).await;
        next_status(&mut server, "slow", &answer).await;
        let (m, progress) = next_status(&mut server, "slow", &answer).await;
        assert_eq!(m, MANAGER);
        let (_, ready) = next_status(&mut server, "slow", &answer).await;
        next_status(&mut server, "slow", &answer).await;
        (progress, ready)
    });
    reconcile(&img, &ctx, &CancellationToken::new())
        .await
        .expect("reconciled");
    let (progress, ready) = script.await.expect("server script");
    assert_eq!(progress["state"], "in-progress");
    let percent = progress["progress"].as_i64().unwrap_or_default();
    assert!((1..100).contains(&percent), "{progress}");
    assert_eq!(ready["state"], "ready");
    assert_eq!(read_file(&Layout::new(&data, "slow").raw()), raw);
}

#[tokio::test]
async fn copies_of_images_that_no_longer_exist_are_removed_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    for name in ["kept", "orphan"] {
        Layout::new(tmp.path(), name).reset().expect("dir");
    }
    let (ctx, mut server, _events) = agent_context("node-a", tmp.path());
    let kept = image(
        "kept",
        serde_json::json!({"sourceType": "download", "sourceParameters": {"url": "http://h/x"}}),
        serde_json::json!({}),
    );
    let script =
        tokio::spawn(async move {
            server.expect(Method::GET, IMAGES).await.respond(json_response(
            StatusCode::OK,
            serde_json::json!({"apiVersion": "bulwark.io/v1beta1", "kind": "BackingImageList",
                               "metadata": {}, "items": [kept]}),
        ));
        });
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    remove_orphans(&ctx, &api).await;
    script.await.expect("server script");
    assert!(Layout::new(tmp.path(), "kept").dir().exists());
    assert!(!Layout::new(tmp.path(), "orphan").dir().exists());

    // A failed listing removes nothing.
    let (ctx, server, _events) = agent_context("node-a", tmp.path());
    drop(server);
    let api: Api<BackingImage> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    remove_orphans(&ctx, &api).await;
    assert!(Layout::new(tmp.path(), "kept").dir().exists());
}
