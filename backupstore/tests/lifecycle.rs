//! Backup, restore, delete with GC, verify and their failure modes on real directories and
//! real sparse files.

mod common;

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use backupstore::format::{BackupConfig, VolumeConfig};
use backupstore::names::{backup_cfg, block_path, blocks_dir, volume_cfg};
use backupstore::{
    BackupMode, BackupOptions, BlockProblem, Compression, Error, FileSink, FileSource,
    RestoreOptions, Store, SweepSkipped,
};
use common::*;

fn count_blocks(dir: &std::path::Path, volume: &str) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        match fs::read_dir(p) {
            Err(_) => 0,
            Ok(rd) => rd
                .map(|e| {
                    let p = e.expect("entry").path();
                    if p.is_dir() {
                        walk(&p)
                    } else {
                        usize::from(p.to_string_lossy().ends_with(".blk"))
                    }
                })
                .sum(),
        }
    }
    walk(&dir.join(blocks_dir(volume)))
}

async fn backup_file(
    store: &Store,
    volume: &str,
    image: &std::path::Path,
    compression: Compression,
) -> backupstore::BackupOutcome {
    let mut opts = BackupOptions::new(volume, image.file_name().expect("name").to_string_lossy());
    opts.compression = compression;
    opts.workers = 3;
    store
        .backup(Arc::new(FileSource::open(image).expect("source")), opts)
        .await
        .expect("backup")
}

async fn restore_file(store: &Store, volume: &str, backup: &str, out: &std::path::Path) {
    let size = store.restore_size(volume, backup).await.expect("size");
    let sink = Arc::new(FileSink::create(out, size).expect("sink"));
    store
        .restore(volume, backup, sink, RestoreOptions::default())
        .await
        .expect("restore");
}

#[tokio::test]
async fn full_then_incremental_backup_dedups_and_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_store(&dir.path().join("store"));
    let img1 = dir.path().join("one.img");
    let same = pseudo_random(7, 2 * MB as usize);
    write_image(
        &img1,
        10 * MB + 4096, // not a multiple of the block size: the last block is partial
        &[
            (0, pseudo_random(1, 2 * MB as usize)),
            (2 * MB, same.clone()),
            (6 * MB, same.clone()), // same content twice: stored once
            (10 * MB, vec![5u8; 4096]),
        ],
    );
    let progress_calls = Arc::new(AtomicU64::new(0));
    let mut opts = BackupOptions::new("vol-a", "one");
    opts.compression = Compression::Lz4;
    let calls = progress_calls.clone();
    opts.progress = Some(Arc::new(move |_p| {
        calls.fetch_add(1, Ordering::SeqCst);
    }));
    let first = store
        .backup(Arc::new(FileSource::open(&img1).expect("src")), opts)
        .await
        .expect("backup");
    assert!(!first.is_incremental);
    assert_eq!(first.blocks_in_map, 4);
    assert_eq!(first.counters.blocks_new, 3);
    assert_eq!(first.counters.blocks_deduplicated, 1);
    assert_eq!(first.counters.bytes_read, 3 * 2 * MB + 4096);
    assert_eq!(
        progress_calls.load(Ordering::SeqCst),
        5,
        "one before, one per block"
    );
    assert!(first.name.starts_with("backup-") && first.name.len() == 23);
    assert_eq!(count_blocks(&dir.path().join("store"), "vol-a"), 3);
    let cfg = store
        .inspect_backup("vol-a", &first.name)
        .await
        .expect("cfg");
    assert!(
        cfg.processing_blocks,
        "full backups carry ProcessingBlocks {{}}"
    );
    let vol = store.inspect_volume("vol-a").await.expect("vol");
    assert_eq!((vol.size, vol.block_count), ((10 * MB + 4096) as i64, 3));
    assert_eq!(vol.last_backup_name, first.name);

    // Change one block, add one, drop one.
    let img2 = dir.path().join("two.img");
    write_image(
        &img2,
        10 * MB + 4096,
        &[
            (0, pseudo_random(1, 2 * MB as usize)),
            (2 * MB, pseudo_random(9, 2 * MB as usize)),
            (4 * MB, same.clone()),
            (10 * MB, vec![5u8; 4096]),
        ],
    );
    let second = backup_file(&store, "vol-a", &img2, Compression::Lz4).await;
    assert!(second.is_incremental);
    assert_eq!(second.blocks_in_map, 4);
    let c = second.counters;
    assert_eq!((c.blocks_new, c.blocks_deduplicated), (1, 1));
    assert_eq!(c.bytes_changed, 2 * 2 * MB, "offsets 2 and 4 MiB changed");
    assert_eq!(c.bytes_deduplicated, 2 * MB);

    for (backup, image) in [(&first.name, &img1), (&second.name, &img2)] {
        let out = dir.path().join(format!("{backup}.out"));
        restore_file(&store, "vol-a", backup, &out).await;
        assert_eq!(sha256_file(&out), sha256_file(image));
        assert!(allocated(&out) <= 3 * 2 * MB + 4096 + 4096 * 4);
    }

    // Incremental restore from the first to the second fetches 2 blocks, zeroes 1.
    let out = dir.path().join("dr.out");
    restore_file(&store, "vol-a", &first.name, &out).await;
    let sink = Arc::new(FileSink::open(&out, 10 * MB + 4096).expect("sink"));
    let p = store
        .restore_incremental(
            "vol-a",
            &first.name,
            &second.name,
            sink,
            RestoreOptions::default(),
        )
        .await
        .expect("incremental");
    assert_eq!((p.blocks_fetched, p.blocks_zeroed), (2, 1));
    assert_eq!(sha256_file(&out), sha256_file(&img2));
}

#[tokio::test]
async fn every_compression_round_trips_and_missing_method_means_gzip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(MB, pseudo_random(3, 3 * MB as usize))]);
    for (volume, c) in [
        ("v-none", Compression::None),
        ("v-gzip", Compression::Gzip),
        ("v-lz4", Compression::Lz4),
    ] {
        let b = backup_file(&store, volume, &img, c).await;
        let vol = store.inspect_volume(volume).await.expect("vol");
        assert_eq!(vol.compression_method, c.as_str());
        let out = dir.path().join(format!("{volume}.out"));
        restore_file(&store, volume, &b.name, &out).await;
        assert_eq!(sha256_file(&out), sha256_file(&img), "{volume}");
        if c == Compression::Gzip {
            // Strip CompressionMethod from the cfg (old Longhorn wrote none): gzip is assumed.
            let path = root.join(backup_cfg(volume, &b.name));
            let raw = fs::read_to_string(&path).expect("cfg");
            let stripped = raw.replace(r#""CompressionMethod":"gzip","#, "");
            assert_ne!(raw, stripped);
            fs::write(&path, stripped).expect("write");
            let out2 = dir.path().join("nomethod.out");
            restore_file(&store, volume, &b.name, &out2).await;
            assert_eq!(sha256_file(&out2), sha256_file(&img));
        }
    }
}

#[tokio::test]
async fn in_progress_backups_are_refused_and_block_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(0, pseudo_random(4, 4 * MB as usize))]);
    let b1 = backup_file(&store, "vol", &img, Compression::Lz4).await;
    write_image(&img, 4 * MB, &[(0, pseudo_random(5, 4 * MB as usize))]);
    let b2 = backup_file(&store, "vol", &img, Compression::Lz4).await;
    // A hand-written placeholder, as an interrupted backup leaves it.
    let placeholder = BackupConfig::placeholder("backup-interrupted", "vol", "lz4");
    fs::write(
        root.join(backup_cfg("vol", "backup-interrupted")),
        placeholder.to_json(),
    )
    .expect("write");
    let sink = Arc::new(FileSink::create(&dir.path().join("o"), 4 * MB).expect("sink"));
    let err = store
        .restore("vol", "backup-interrupted", sink, RestoreOptions::default())
        .await
        .expect_err("in progress");
    assert!(matches!(err, Error::BackupInProgress { .. }), "{err}");
    assert!(err.to_string().contains("backup-interrupted"));

    // Deleting b1 removes its cfg but sweeps nothing while a backup is in progress.
    let before = count_blocks(&root, "vol");
    let out = store.delete_backup("vol", &b1.name).await.expect("delete");
    assert_eq!(
        out.sweep_skipped,
        Some(SweepSkipped::BackupInProgress("backup-interrupted".into()))
    );
    assert_eq!(out.blocks_deleted, 0);
    assert_eq!(count_blocks(&root, "vol"), before);
    assert!(!root.join(backup_cfg("vol", &b1.name)).exists());

    // Deleting the placeholder lets the sweep collect b1's blocks; b2 stays whole.
    let out = store
        .delete_backup("vol", "backup-interrupted")
        .await
        .expect("delete placeholder");
    assert_eq!(out.sweep_skipped, None);
    assert_eq!(out.blocks_deleted, 2);
    assert_eq!(count_blocks(&root, "vol"), 2);
    let vol = store.inspect_volume("vol").await.expect("vol");
    assert_eq!(
        (vol.last_backup_name.as_str(), vol.block_count),
        (b2.name.as_str(), 2)
    );
    let restored = dir.path().join("b2.out");
    restore_file(&store, "vol", &b2.name, &restored).await;
    assert_eq!(sha256_file(&restored), sha256_file(&img));

    // Deleting the last backup empties the volume's blocks and LastBackup*.
    let out = store
        .delete_backup("vol", &b2.name)
        .await
        .expect("delete last");
    assert_eq!(out.blocks_deleted, 2);
    let vol = store.inspect_volume("vol").await.expect("vol");
    assert_eq!(
        (vol.last_backup_name.as_str(), vol.last_backup_at.as_str()),
        ("", "")
    );
    assert!(matches!(
        store.delete_backup("vol", &b2.name).await,
        Err(Error::BackupNotFound { .. })
    ));
}

#[tokio::test]
async fn corrupt_and_missing_blocks_are_reported_by_verify_and_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    let shared = pseudo_random(11, 2 * MB as usize);
    write_image(
        &img,
        6 * MB,
        &[
            (0, shared.clone()),
            (2 * MB, pseudo_random(12, 2 * MB as usize)),
        ],
    );
    let b1 = backup_file(&store, "vol", &img, Compression::Gzip).await;
    write_image(
        &img,
        6 * MB,
        &[
            (0, shared.clone()),
            (4 * MB, pseudo_random(13, 2 * MB as usize)),
        ],
    );
    let b2 = backup_file(&store, "vol", &img, Compression::Gzip).await;
    let shared_c = backupstore::names::h(&shared);
    let cfg1 = store.inspect_backup("vol", &b1.name).await.expect("cfg");
    let only_b1 = cfg1.blocks[1].block_checksum.clone();
    // Corrupt the shared block (both backups break), delete b1's own block.
    let shared_path = root.join(block_path("vol", &shared_c));
    let mut bytes = fs::read(&shared_path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&shared_path, bytes).expect("write");
    fs::remove_file(root.join(block_path("vol", &only_b1))).expect("rm");

    let report = store.verify("vol", None, 2).await.expect("verify");
    assert!(!report.is_healthy());
    assert_eq!(report.blocks_checked, 3);
    assert_eq!(report.damaged.len(), 2);
    let corrupt = report
        .damaged
        .iter()
        .find(|d| d.checksum == shared_c)
        .expect("corrupt");
    assert!(matches!(corrupt.problem, BlockProblem::Corrupt(_)));
    assert_eq!(corrupt.backups.len(), 2);
    let missing = report
        .damaged
        .iter()
        .find(|d| d.checksum == only_b1)
        .expect("missing");
    assert_eq!(missing.problem, BlockProblem::Missing);
    assert_eq!(missing.backups.iter().collect::<Vec<_>>(), vec![&b1.name]);
    assert_eq!(report.broken_backups.len(), 2);

    let sink = Arc::new(FileSink::create(&dir.path().join("o"), 6 * MB).expect("sink"));
    let err = store
        .restore("vol", &b2.name, sink, RestoreOptions::default())
        .await
        .expect_err("corrupt");
    assert!(matches!(err, Error::CorruptBlock { .. }), "{err}");
    assert!(err.to_string().contains(&shared_c));
    // A missing block fails the restore at once, naming the block's object.
    let mut bytes = fs::read(&shared_path).expect("read");
    bytes[mid] ^= 0xff;
    fs::write(&shared_path, bytes).expect("repair");
    let sink = Arc::new(FileSink::create(&dir.path().join("o1"), 6 * MB).expect("sink"));
    let err = store
        .restore("vol", &b1.name, sink, RestoreOptions::default())
        .await
        .expect_err("missing");
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&only_b1), "{err}");
}

#[tokio::test]
async fn cancellation_stops_a_backup_and_leaves_no_placeholder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 16 * MB, &[(0, pseudo_random(21, 16 * MB as usize))]);
    let mut opts = BackupOptions::new("vol", "x");
    opts.workers = 1;
    let token = opts.cancel.clone();
    let seen = Arc::new(Mutex::new(0u64));
    let seen2 = seen.clone();
    opts.progress = Some(Arc::new(move |p| {
        *seen2.lock().expect("lock") = p.blocks_done;
        if p.blocks_done == 2 {
            token.cancel();
        }
    }));
    opts.backup_name = Some("backup-cancelled".into());
    let err = store
        .backup(Arc::new(FileSource::open(&img).expect("src")), opts)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert!(*seen.lock().expect("lock") < 8);
    assert!(!root.join(backup_cfg("vol", "backup-cancelled")).exists());
    assert!(store.list_backups("vol").await.expect("list").is_empty());
}

#[tokio::test]
async fn a_restore_stopped_with_every_block_in_flight_reports_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_store(&dir.path().join("store"));
    let img = dir.path().join("x.img");
    write_image(&img, 8 * MB, &[(0, pseudo_random(22, 8 * MB as usize))]);
    let b = backup_file(&store, "vol", &img, Compression::Lz4).await;
    // More workers than blocks: all four are under way before the first one finishes, so
    // nothing is left to start once the token fires.
    let mut opts = RestoreOptions {
        workers: 16,
        ..RestoreOptions::default()
    };
    let token = opts.cancel.clone();
    opts.progress = Some(Arc::new(move |p| {
        if p.blocks_done == 1 {
            token.cancel();
        }
    }));
    let sink = Arc::new(FileSink::create(&dir.path().join("out"), 8 * MB).expect("sink"));
    let err = store
        .restore("vol", &b.name, sink, opts)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled), "{err}");
}

#[tokio::test]
async fn transient_failures_are_retried_and_not_found_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, failing) = failing_store(dir.path());
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(0, pseudo_random(31, 4 * MB as usize))]);
    failing.fail_next_puts_transiently(2);
    let b = backup_file(&store, "vol", &img, Compression::Lz4).await;
    assert_eq!(b.counters.blocks_new, 2);
    let err = store
        .inspect_backup("vol", "backup-0000000000000000")
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("backup-0000000000000000"), "{err}");
    let err = store.inspect_volume("nothere").await.expect_err("missing");
    assert!(err.to_string().contains("nothere"), "{err}");
    assert!(matches!(
        store
            .backup(
                Arc::new(FileSource::open(&img).expect("src")),
                BackupOptions::new("bad/name", "x")
            )
            .await,
        Err(Error::InvalidName { .. })
    ));
}

#[tokio::test]
async fn full_mode_ignores_the_previous_map_and_can_reupload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(0, pseudo_random(41, 4 * MB as usize))]);
    backup_file(&store, "vol", &img, Compression::Lz4).await;
    let mut opts = BackupOptions::new("vol", "x");
    opts.mode = BackupMode::Full;
    opts.reupload_existing = true;
    let b = store
        .backup(Arc::new(FileSource::open(&img).expect("src")), opts)
        .await
        .expect("full");
    assert!(!b.is_incremental);
    assert_eq!(
        (b.counters.blocks_new, b.counters.blocks_reuploaded),
        (0, 2)
    );
    let raw = fs::read_to_string(root.join(backup_cfg("vol", &b.name))).expect("cfg");
    let cfg = BackupConfig::from_json(raw.as_bytes()).expect("parse");
    assert!(cfg.re_uploaded_data_size > 0);
    assert_eq!(cfg.newly_uploaded_data_size, 0);
    assert_eq!(
        cfg.parameters
            .as_ref()
            .and_then(|p| p.get("backup-mode"))
            .map(String::as_str),
        Some("full")
    );
    let vol = VolumeConfig::from_json(&fs::read(root.join(volume_cfg("vol"))).expect("read"))
        .expect("vol");
    assert_eq!(vol.block_count, 2);
}

#[tokio::test]
async fn delete_volume_removes_only_that_volume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 2 * MB, &[(0, pseudo_random(51, 2 * MB as usize))]);
    backup_file(&store, "vol-a", &img, Compression::Lz4).await;
    let keep = backup_file(&store, "vol-b", &img, Compression::Lz4).await;
    let n = store.delete_volume("vol-a").await.expect("delete volume");
    assert_eq!(n, 3, "volume.cfg, backup cfg, block");
    assert_eq!(store.list_volumes().await.expect("list"), vec!["vol-b"]);
    assert_eq!(count_blocks(&root, "vol-a"), 0);
    let out = dir.path().join("b.out");
    restore_file(&store, "vol-b", &keep.name, &out).await;
    assert_eq!(sha256_file(&out), sha256_file(&img));
    assert!(matches!(
        store.delete_volume("vol-a").await,
        Err(Error::VolumeNotFound { .. })
    ));
}

/// A diff source as the engine provides one: only the listed blocks, over a base snapshot.
struct DiffSource {
    inner: FileSource,
    changed: Vec<u64>,
    base: String,
}

impl backupstore::BlockSource for DiffSource {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn extents(&self, block_size: u64) -> std::io::Result<Vec<backupstore::Extent>> {
        Ok(self
            .changed
            .iter()
            .map(|&offset| backupstore::Extent {
                offset,
                len: block_size,
            })
            .collect())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn diff_base(&self) -> Option<String> {
        Some(self.base.clone())
    }
}

#[tokio::test]
async fn diff_sources_are_laid_over_the_previous_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_store(&dir.path().join("store"));
    let img1 = dir.path().join("one.img");
    let pieces = vec![
        (0, pseudo_random(61, 2 * MB as usize)),
        (4 * MB, pseudo_random(62, 2 * MB as usize)),
    ];
    write_image(&img1, 8 * MB, &pieces);
    let diff = |changed: Vec<u64>, base: &str, img: &std::path::Path| DiffSource {
        inner: FileSource::open(img).expect("src"),
        changed,
        base: base.to_string(),
    };
    // No backup yet: a diff has nothing to lie on.
    let err = store
        .backup(
            Arc::new(diff(vec![0], "one.img", &img1)),
            BackupOptions::new("vol", "two.img"),
        )
        .await
        .expect_err("no base");
    assert!(matches!(err, Error::NoBaseForDiff { .. }), "{err}");

    let first = backup_file(&store, "vol", &img1, Compression::Lz4).await;
    assert_eq!(
        store.incremental_base("vol").await.expect("base"),
        Some((first.name.clone(), "one.img".to_string()))
    );
    let img2 = dir.path().join("two.img");
    let mut pieces2 = pieces.clone();
    pieces2.push((6 * MB, pseudo_random(63, 2 * MB as usize)));
    write_image(&img2, 8 * MB, &pieces2);
    // A diff over the wrong base is refused.
    let err = store
        .backup(
            Arc::new(diff(vec![6 * MB], "zero.img", &img2)),
            BackupOptions::new("vol", "two.img"),
        )
        .await
        .expect_err("wrong base");
    assert!(matches!(err, Error::NoBaseForDiff { .. }), "{err}");
    let second = store
        .backup(
            Arc::new(diff(vec![6 * MB], "one.img", &img2)),
            BackupOptions::new("vol", "two.img"),
        )
        .await
        .expect("diff backup");
    assert!(second.is_incremental);
    assert_eq!(
        second.counters.bytes_read,
        2 * MB,
        "only the changed block is read"
    );
    assert_eq!(second.blocks_in_map, 3, "two carried over, one new");
    let out = dir.path().join("two.out");
    restore_file(&store, "vol", &second.name, &out).await;
    assert_eq!(sha256_file(&out), sha256_file(&img2));
}

#[tokio::test]
async fn hostile_backup_cfgs_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 2 * MB, &[(0, pseudo_random(71, 2 * MB as usize))]);
    backup_file(&store, "vol", &img, Compression::Lz4).await;
    let bad = [
        (
            "backup-short",
            r#"{"Name":"backup-short","CreatedTime":"2026-01-01T00:00:00Z","Blocks":[{"Offset":0,"BlockChecksum":"ab"}]}"#,
        ),
        (
            "backup-unaligned",
            r#"{"Name":"backup-unaligned","CreatedTime":"2026-01-01T00:00:00Z","Blocks":[{"Offset":3,"BlockChecksum":"0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        ),
        ("backup-garbage", "{not json"),
    ];
    for (name, body) in bad {
        fs::write(root.join(backup_cfg("vol", name)), body).expect("write");
    }
    let report = store.verify("vol", None, 2).await.expect("verify");
    assert_eq!(report.backups_checked.len(), 1);
    assert_eq!(report.backups_skipped.len(), 3, "{report:?}");
    assert!(report.broken_backups.contains("backup-short"));
    assert!(!report.is_healthy());
    for (name, _) in bad {
        let sink = Arc::new(FileSink::create(&dir.path().join(name), 2 * MB).expect("sink"));
        let err = store
            .restore("vol", name, sink, RestoreOptions::default())
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                Error::InvalidBlockMap { .. } | Error::InvalidMetadata { .. }
            ),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    // GC refuses to sweep while a backup's metadata is unreadable.
    let out = store
        .delete_backup("vol", "backup-short")
        .await
        .expect("delete");
    assert_eq!(
        out.sweep_skipped,
        Some(SweepSkipped::BackupUnreadable("backup-garbage".into()))
    );
}

#[tokio::test]
async fn the_volume_stamp_changes_exactly_when_a_backup_lands_or_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = local_store(&dir.path().join("store"));
    assert_eq!(store.volume_stamp("vol").await.expect("stamp"), None);
    let image = dir.path().join("one.img");
    write_image(&image, 4 * MB, &[(0, pseudo_random(3, 2 * MB as usize))]);
    let first = backup_file(&store, "vol", &image, Compression::Lz4).await;
    let stamp1 = store
        .volume_stamp("vol")
        .await
        .expect("stamp")
        .expect("the volume exists");
    assert_eq!(
        store.volume_stamp("vol").await.expect("stamp").as_ref(),
        Some(&stamp1),
        "stable while nothing happens"
    );
    // A coarse mtime could hide a rewrite within the same tick: the size or ETag still differ
    // here because the second backup changes LastBackupName.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = backup_file(&store, "vol", &image, Compression::Lz4).await;
    let stamp2 = store
        .volume_stamp("vol")
        .await
        .expect("stamp")
        .expect("exists");
    assert_ne!(stamp1, stamp2, "a new backup changes the stamp");
    store
        .delete_backup("vol", &second.name)
        .await
        .expect("delete");
    let stamp3 = store
        .volume_stamp("vol")
        .await
        .expect("stamp")
        .expect("exists");
    assert_ne!(stamp2, stamp3, "a deleted backup changes the stamp");
    assert_ne!(first.name, second.name);
}
