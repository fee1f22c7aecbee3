//! Backup, restore, incremental restore, delete with GC and verify through the Store, against a
//! real S3 server (SeaweedFS started by the harness on 127.0.0.1) and real sparse files.

// A failed unwrap is the test failure report.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use backupstore::backup::{BackupMode, BackupOptions};
use backupstore::lock::LockTimings;
use backupstore::restore::RestoreOptions;
use backupstore::target::{self, ConnectOptions};
use backupstore::testing::SeaweedFs;
use backupstore::{FileSink, FileSource, Store};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use rand::{RngCore, SeedableRng};

const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 2 * MIB;
const VOLUME: &str = "pvc-s3-test";

/// Short lock waits: only this test's clients use the store.
fn quick_locks() -> LockTimings {
    LockTimings {
        check_wait: Duration::from_millis(50),
        ..LockTimings::default()
    }
}

async fn store_on(server: &SeaweedFs, prefix: &str) -> Store {
    let url = server.target_url(prefix);
    let (object_store, root) =
        target::connect(&url, &server.credentials(), &ConnectOptions::default())
            .await
            .unwrap();
    Store::new(object_store, root)
        .with_label(url.to_string())
        .with_lock_timings(quick_locks())
}

/// A 16 MiB sparse image: blocks 0-2 random, block 3 allocated zeros, blocks 4-5 a hole,
/// block 6 random, block 7 a hole.
fn write_image(path: &FsPath, seed: u64) {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(8 * BLOCK).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; (3 * BLOCK) as usize];
    rng.fill_bytes(&mut data);
    file.write_all_at(&data, 0).unwrap();
    file.write_all_at(&vec![0u8; BLOCK as usize], 3 * BLOCK)
        .unwrap();
    let mut data = vec![0u8; BLOCK as usize];
    rng.fill_bytes(&mut data);
    file.write_all_at(&data, 6 * BLOCK).unwrap();
}

fn options(name: &str) -> BackupOptions {
    let mut options = BackupOptions::new(VOLUME, format!("snap-{name}"));
    options.backup_name = Some(name.to_string());
    options.mode = BackupMode::Incremental;
    options
}

async fn restore_to(store: &Store, backup: &str, out: &FsPath) {
    let size = store.restore_size(VOLUME, backup).await.unwrap();
    let sink = FileSink::create(out, size).unwrap();
    store
        .restore(VOLUME, backup, Arc::new(sink), RestoreOptions::default())
        .await
        .unwrap();
}

async fn blocks_in_store(store: &Store) -> usize {
    store
        .object_store()
        .list(Some(store.root()))
        .try_filter(|meta| futures::future::ready(meta.location.as_ref().ends_with(".blk")))
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn backup_restore_incremental_delete_and_verify_on_s3() {
    let server = SeaweedFs::start().await.unwrap();
    let store = store_on(&server, "cluster-a/backups").await;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    write_image(&image, 1);
    let first = std::fs::read(&image).unwrap();

    // Full backup and a byte-exact restore.
    let outcome = store
        .backup(
            Arc::new(FileSource::open(&image).unwrap()),
            options("backup-one"),
        )
        .await
        .unwrap();
    // Blocks 0-3 and 6 hold data; the zero block is stored like any other.
    assert_eq!(outcome.blocks_in_map, 5);
    assert_eq!(outcome.counters.bytes_read, 5 * BLOCK);
    let restored = dir.path().join("restored.raw");
    restore_to(&store, "backup-one", &restored).await;
    assert!(
        std::fs::read(&restored).unwrap() == first,
        "restore differs from the image"
    );
    assert_eq!(blocks_in_store(&store).await, 5);

    // Change one block, punch another: the incremental backup uploads only the new block.
    let file = OpenOptions::new().write(true).open(&image).unwrap();
    let mut new_block = vec![0u8; BLOCK as usize];
    rand::rngs::StdRng::seed_from_u64(2).fill_bytes(&mut new_block);
    file.write_all_at(&new_block, BLOCK).unwrap();
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        6 * BLOCK,
        BLOCK,
    )
    .unwrap();
    drop(file);
    let second = std::fs::read(&image).unwrap();
    let outcome = store
        .backup(
            Arc::new(FileSource::open(&image).unwrap()),
            options("backup-two"),
        )
        .await
        .unwrap();
    assert!(outcome.is_incremental);
    assert_eq!(outcome.counters.blocks_new, 1);
    assert_eq!(outcome.blocks_in_map, 4);
    assert_eq!(blocks_in_store(&store).await, 6);

    // Incremental restore from one to two on top of the first restore.
    let size = store.restore_size(VOLUME, "backup-two").await.unwrap();
    let sink = FileSink::open(&restored, size).unwrap();
    let progress = store
        .restore_incremental(
            VOLUME,
            "backup-one",
            "backup-two",
            Arc::new(sink),
            RestoreOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(progress.blocks_fetched, 1);
    assert_eq!(progress.blocks_zeroed, 1);
    assert!(
        std::fs::read(&restored).unwrap() == second,
        "incremental restore differs"
    );

    // Verify reads every referenced block back.
    let report = store.verify(VOLUME, None, 4).await.unwrap();
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.blocks_checked, 6);

    // Deleting the first backup collects the two blocks only it used.
    let outcome = store.delete_backup(VOLUME, "backup-one").await.unwrap();
    assert_eq!(outcome.sweep_skipped, None);
    assert_eq!(outcome.blocks_deleted, 2);
    assert_eq!(blocks_in_store(&store).await, 4);
    let full = dir.path().join("full.raw");
    restore_to(&store, "backup-two", &full).await;
    assert!(
        std::fs::read(&full).unwrap() == second,
        "restore after GC differs"
    );

    // Another prefix of the same bucket is a different store.
    let other = store_on(&server, "cluster-b").await;
    assert!(other.list_volumes().await.unwrap().is_empty());
    assert_eq!(store.list_volumes().await.unwrap(), [VOLUME]);
}

#[tokio::test]
async fn a_deleted_block_is_reported_by_verify_and_restore() {
    let server = SeaweedFs::start().await.unwrap();
    let store = store_on(&server, "").await;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    write_image(&image, 3);
    store
        .backup(
            Arc::new(FileSource::open(&image).unwrap()),
            options("backup-x"),
        )
        .await
        .unwrap();
    let blocks: Vec<_> = store
        .object_store()
        .list(Some(store.root()))
        .try_filter(|meta| futures::future::ready(meta.location.as_ref().ends_with(".blk")))
        .try_collect()
        .await
        .unwrap();
    store
        .object_store()
        .delete(&blocks[0].location)
        .await
        .unwrap();

    let report = store.verify(VOLUME, None, 4).await.unwrap();
    assert!(!report.is_healthy());
    assert_eq!(report.damaged.len(), 1);
    assert!(report.broken_backups.contains("backup-x"));

    let size = store.restore_size(VOLUME, "backup-x").await.unwrap();
    let sink = FileSink::create(&dir.path().join("out.raw"), size).unwrap();
    let err = store
        .restore(
            VOLUME,
            "backup-x",
            Arc::new(sink),
            RestoreOptions::default(),
        )
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(".blk"),
        "error does not name the block: {message}"
    );
}
