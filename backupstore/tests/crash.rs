//! Crash safety: a backup is cut off after every possible number of writes (the store fails
//! every request from then on, as if the process had died). After each cut the store must keep
//! its promises: no completed backup references a missing block, a delete never sweeps blocks
//! while a backup is in progress, the next backup succeeds, and every completed backup restores
//! byte-exact.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backupstore::lock::LockTimings;
use backupstore::names::block_path;
use backupstore::{
    BackupOptions, Compression, FileSink, FileSource, RestoreOptions, Store, SweepSkipped,
};
use common::*;

/// Crashed clients leave live lock files; let them expire quickly in this test.
fn crash_timings() -> LockTimings {
    LockTimings {
        expiry: Duration::from_millis(300),
        refresh: Duration::from_millis(100),
        ..fast_locks()
    }
}

async fn backup(
    store: &Store,
    image: &Path,
    seed: u64,
) -> backupstore::Result<backupstore::BackupOutcome> {
    let mut opts = BackupOptions::new("vol", format!("snap-{seed}"));
    opts.compression = Compression::Lz4;
    opts.workers = 2;
    store
        .backup(Arc::new(FileSource::open(image).expect("source")), opts)
        .await
}

fn image_for(dir: &Path, seed: u64) -> std::path::PathBuf {
    // Four data blocks out of six: two fixed, two that change with every seed.
    let path = dir.join(format!("img-{seed}"));
    write_image(
        &path,
        12 * MB,
        &[
            (0, pseudo_random(1000, 2 * MB as usize)),
            (2 * MB, pseudo_random(seed * 2, 2 * MB as usize)),
            (6 * MB, pseudo_random(seed * 2 + 1, 2 * MB as usize)),
            (10 * MB, vec![0u8; 2 * MB as usize]),
        ],
    );
    path
}

#[tokio::test]
async fn backups_cut_off_at_every_write_leave_the_store_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    fs::create_dir_all(&root).expect("mkdir");
    let (store, failing) = failing_store(&root);
    let store = store.with_lock_timings(crash_timings());
    let mut completed: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    let first_image = image_for(dir.path(), 1);
    let first = backup(&store, &first_image, 1).await.expect("first backup");
    completed.insert(first.name.clone(), first_image);

    let mut cut = 0i64;
    let mut seed = 2;
    loop {
        let image = image_for(dir.path(), seed);
        failing.crash_after(cut);
        let result = backup(&store, &image, seed).await;
        let crashed = failing.crashed();
        failing.heal();
        match result {
            Ok(done) => {
                assert!(!crashed || cut > 0);
                completed.insert(done.name, image);
                if !crashed {
                    // The budget was larger than a whole backup needs: every cut point is done.
                    break;
                }
            }
            Err(_) => {
                assert!(
                    crashed,
                    "only the injected crash may fail a backup (cut {cut})"
                );
                // Let the crashed client's lock expire, as a real one would after 150 s.
                tokio::time::sleep(Duration::from_millis(400)).await;
                check_after_crash(&store, &root, &completed, cut).await;
            }
        }
        cut += 1;
        seed += 1;
        assert!(cut < 40, "a backup should need far fewer writes");
    }
    assert!(
        cut >= 6,
        "the cut points covered lock, placeholder, blocks and metadata ({cut})"
    );

    // The next backup after all this succeeds, and everything restores byte-exact.
    let image = image_for(dir.path(), 999);
    let last = backup(&store, &image, 999)
        .await
        .expect("backup after crashes");
    completed.insert(last.name, image);
    let report = store.verify("vol", None, 2).await.expect("verify");
    assert!(report.is_healthy(), "{report:?}");
    for (name, image) in &completed {
        let out = dir.path().join(format!("{name}.out"));
        let size = store.restore_size("vol", name).await.expect("size");
        let sink = Arc::new(FileSink::create(&out, size).expect("sink"));
        store
            .restore("vol", name, sink, RestoreOptions::default())
            .await
            .expect("restore");
        assert_eq!(sha256_file(&out), sha256_file(image), "{name}");
    }
}

/// The invariants that must hold right after a crash.
async fn check_after_crash(
    store: &Store,
    root: &Path,
    completed: &BTreeMap<String, std::path::PathBuf>,
    cut: i64,
) {
    // No completed backup references a missing block (existence checked against the files;
    // the hash check of every block runs once at the end, it is slow in debug builds).
    let stored = list_blocks(root);
    let mut in_progress = Vec::new();
    let mut checked = Vec::new();
    for entry in store.list_backups("vol").await.expect("list") {
        let cfg = entry.config.expect("every backup cfg stays readable");
        if cfg.in_progress() {
            in_progress.push(entry.name);
            continue;
        }
        for b in &cfg.blocks {
            let path = root.join(block_path("vol", &b.block_checksum));
            assert!(
                stored.contains(&path.to_string_lossy().into_owned()),
                "cut {cut}: {} references missing block {}",
                entry.name,
                b.block_checksum
            );
        }
        checked.push(entry.name);
    }
    for name in completed.keys() {
        assert!(checked.contains(name), "cut {cut}: {name} lost");
    }
    // A crash after the placeholder leaves an in-progress backup: a delete must not sweep.
    if let Some(stuck) = in_progress.first() {
        let blocks_before = list_blocks(root);
        // Delete a throwaway completed backup to trigger GC.
        let image = root.join("../throwaway.img");
        write_image(
            &image,
            2 * MB,
            &[(0, pseudo_random(cut as u64 + 5000, 2 * MB as usize))],
        );
        let throwaway = backup(store, &image, 0).await.expect("throwaway");
        let out = store
            .delete_backup("vol", &throwaway.name)
            .await
            .expect("delete");
        assert!(
            matches!(out.sweep_skipped, Some(SweepSkipped::BackupInProgress(_))),
            "cut {cut}: {out:?}"
        );
        let blocks_after = list_blocks(root);
        for b in &blocks_before {
            assert!(
                blocks_after.contains(b),
                "cut {cut}: GC removed {b} during a backup"
            );
        }
        // The operator then deletes the failed backup; now the sweep runs and collects garbage.
        let out = store
            .delete_backup("vol", stuck)
            .await
            .expect("delete stuck");
        assert_eq!(out.sweep_skipped, None, "cut {cut}");
        let stored = list_blocks(root);
        for entry in store.list_backups("vol").await.expect("list") {
            let cfg = entry.config.expect("readable");
            for b in &cfg.blocks {
                let path = root.join(block_path("vol", &b.block_checksum));
                assert!(
                    stored.contains(&path.to_string_lossy().into_owned()),
                    "cut {cut}: the sweep removed block {} of {}",
                    b.block_checksum,
                    entry.name
                );
            }
        }
    }
}

fn list_blocks(root: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.to_string_lossy().ends_with(".blk") {
                    out.push(p.to_string_lossy().into_owned());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}
