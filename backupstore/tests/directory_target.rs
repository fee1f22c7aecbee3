//! The `file://` target as `target::connect` opens it: blocks are staged without a per-block
//! fsync and made durable (and visible) in one batch before any metadata is written.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use backupstore::target::deferred_sync::DeferredBlockSync;
use backupstore::target::local::open_directory;
use backupstore::{BackupOptions, FileSink, FileSource, RestoreOptions, Store};
use common::{MB, fast_locks, pseudo_random, sha256_file, write_image};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("prefix").display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn blocks_become_visible_only_once_metadata_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    let inner = LocalFileSystem::new_with_prefix(&root).expect("fs");
    let store = DeferredBlockSync::new(inner, root.clone());
    let block = ObjPath::from("v/blocks/ab/cd/abcd0123.blk");
    store
        .put(&block, PutPayload::from_static(b"block data"))
        .await
        .expect("put block");
    assert_eq!(store.pending_blocks(), 1);
    // Staged only: not listed, not readable under its name.
    let listed: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert!(listed.is_empty(), "{listed:?}");
    assert!(store.get(&block).await.is_err());
    let on_disk = files(&root);
    assert_eq!(on_disk.len(), 1);
    assert!(
        on_disk[0].starts_with("v/blocks/ab/cd/abcd0123.blk#"),
        "{on_disk:?}"
    );

    // Any other object first makes the staged block durable and visible.
    store
        .put(
            &ObjPath::from("v/backups/backup_b.cfg"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect("put cfg");
    assert_eq!(store.pending_blocks(), 0);
    assert_eq!(
        files(&root),
        ["v/backups/backup_b.cfg", "v/blocks/ab/cd/abcd0123.blk"]
    );
    let got = store
        .get(&block)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&got[..], b"block data");
}

#[tokio::test]
async fn dropping_the_handle_removes_unflushed_staging_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    let store = DeferredBlockSync::new(
        LocalFileSystem::new_with_prefix(&root).expect("fs"),
        root.clone(),
    );
    store
        .put(
            &ObjPath::from("v/blocks/00/11/0011.blk"),
            PutPayload::from_static(b"x"),
        )
        .await
        .expect("put");
    assert_eq!(files(&root).len(), 1);
    drop(store);
    assert!(files(&root).is_empty());
}

#[tokio::test]
async fn backup_and_restore_through_a_directory_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    fs::create_dir_all(&root).expect("mkdir");
    let store = Store::new(open_directory(&root).expect("open"), ObjPath::from(""))
        .with_lock_timings(fast_locks());
    let img = dir.path().join("x.img");
    write_image(
        &img,
        8 * MB,
        &[
            (0, pseudo_random(11, 2 * MB as usize)),
            (4 * MB, pseudo_random(12, 2 * MB as usize)),
        ],
    );
    let b = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "s1"),
        )
        .await
        .expect("backup");
    assert_eq!(b.counters.blocks_new, 2);
    let all = files(&root);
    assert!(
        all.iter().all(|f| !f.contains('#')),
        "staging left: {all:?}"
    );
    assert_eq!(all.iter().filter(|f| f.ends_with(".blk")).count(), 2);
    let out = dir.path().join("out");
    let sink = Arc::new(FileSink::create(&out, 8 * MB).expect("sink"));
    store
        .restore("vol", &b.name, sink, RestoreOptions::default())
        .await
        .expect("restore");
    assert_eq!(sha256_file(&out), sha256_file(&img));
    let report = store.verify("vol", None, 2).await.expect("verify");
    assert!(report.is_healthy(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_fsyncs_never_publish_blocks_early() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = fs::canonicalize(dir.path()).expect("canonical");
    let store = DeferredBlockSync::new(
        LocalFileSystem::new_with_prefix(&root).expect("fs"),
        root.clone(),
    );
    // More than one background-fsync batch's worth.
    let names: Vec<String> = (0..80u32).map(|i| format!("{i:064x}")).collect();
    for (i, name) in names.iter().enumerate() {
        let path = ObjPath::from(format!(
            "v/blocks/{}/{}/{name}.blk",
            &name[..2],
            &name[2..4]
        ));
        store
            .put(&path, PutPayload::from(vec![i as u8; 1000]))
            .await
            .expect("put");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let listed: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert!(
        listed.is_empty(),
        "published before metadata: {}",
        listed.len()
    );
    assert_eq!(store.pending_blocks(), 80);
    store
        .put(
            &ObjPath::from("v/volume.cfg"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect("put cfg");
    let listed: Vec<_> = store.list(None).try_collect().await.expect("list");
    assert_eq!(listed.len(), 81);
    for (i, name) in names.iter().enumerate() {
        let path = ObjPath::from(format!(
            "v/blocks/{}/{}/{name}.blk",
            &name[..2],
            &name[2..4]
        ));
        let got = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(&got[..], &vec![i as u8; 1000][..]);
    }
    assert!(files(&root).iter().all(|f| !f.contains('#')));
}

#[tokio::test]
async fn whole_block_reads_answer_as_the_plain_directory_store_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    fs::create_dir_all(&root).expect("mkdir");
    let store = open_directory(&root).expect("open");
    let plain = LocalFileSystem::new_with_prefix(&root).expect("plain");
    let block = ObjPath::from("backupstore/volumes/aa/bb/v/blocks/cc/dd/ccdd00.blk");
    let cfg = ObjPath::from("backupstore/volumes/aa/bb/v/volume.cfg");
    let data = pseudo_random(3, 2 * MB as usize + 123);
    store
        .put(&block, PutPayload::from(data.clone()))
        .await
        .expect("put block");
    // Metadata written after the block makes it durable and visible.
    store
        .put(&cfg, PutPayload::from_static(b"{}"))
        .await
        .expect("put cfg");

    let got = store.get(&block).await.expect("get block");
    let expected_meta = plain.head(&block).await.expect("head");
    assert_eq!(got.meta, expected_meta);
    assert_eq!(got.range, 0..data.len() as u64);
    assert!(got.bytes().await.expect("bytes")[..] == data[..]);

    // Preconditions still apply.
    let stale = object_store::GetOptions {
        if_match: Some("\"other\"".into()),
        ..Default::default()
    };
    assert!(matches!(
        store.get_opts(&block, stale).await,
        Err(object_store::Error::Precondition { .. })
    ));
    // A range goes through the directory store's own path.
    let ranged = store.get_range(&block, 5..10).await.expect("range");
    assert_eq!(&ranged[..], &data[5..10]);
    // A missing block is "not found", which restore and verify report as missing.
    let missing = ObjPath::from("backupstore/volumes/aa/bb/v/blocks/cc/dd/ccdd01.blk");
    assert!(matches!(
        store.get(&missing).await,
        Err(object_store::Error::NotFound { .. })
    ));
}
