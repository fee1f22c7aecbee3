//! Against the store written by Longhorn's own code: golden encodings, list, inspect, verify,
//! full and incremental restores byte-exact, and an incremental backup of ours on top.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use backupstore::blockmap::{RestoreStep, incremental_steps};
use backupstore::file::data_ranges;
use backupstore::format::{BackupConfig, LockFile, VolumeConfig};
use backupstore::{
    BackupMode, BackupOptions, BlockSink, Compression, Error, FileSink, FileSource, RestoreOptions,
    Store,
};
use common::*;

const LZ4_FULL: &str = "backup-8dadb0ff4e67499f";
const LZ4_INCR: &str = "backup-490dc169a7d04e49";

/// (volume, backup, source image)
const BACKUPS: [(&str, &str, &str); 5] = [
    ("vol-lz4", LZ4_FULL, "a.img"),
    ("vol-lz4", LZ4_INCR, "b.img"),
    ("vol-gzip", "backup-76253cee833d49dd", "a.img"),
    ("vol-none", "backup-eae89adb2e4e4406", "a.img"),
    ("vol-16m", "backup-a1cdaa4aa5ec433a", "c.img"),
];

fn files_named(dir: &Path, suffix: &str, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files_named(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

#[test]
fn our_encoding_of_every_fixture_file_is_byte_identical() {
    let root = fixture_dir().join("backupstore");
    let mut cfgs = Vec::new();
    files_named(&root, ".cfg", &mut cfgs);
    let mut locks = Vec::new();
    files_named(&root, ".lck", &mut locks);
    assert_eq!(cfgs.len(), 9, "4 volume.cfg + 5 backup cfgs");
    assert_eq!(locks.len(), 2);
    for path in cfgs {
        let bytes = fs::read(&path).expect("read");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        let ours = if path.ends_with("volume.cfg") {
            VolumeConfig::from_json(&bytes).expect("parse").to_json()
        } else {
            BackupConfig::from_json(&bytes).expect("parse").to_json()
        };
        assert_eq!(ours, text, "{}", path.display());
    }
    for path in locks {
        let bytes = fs::read(&path).expect("read");
        let ours = LockFile::from_json(&bytes).expect("parse").to_json();
        assert_eq!(ours.as_bytes(), &bytes[..], "{}", path.display());
    }
}

#[test]
fn recreated_images_match_the_fixture_checksums() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_images(dir.path());
    let sums = fs::read_to_string(fixture_dir().join("images.sha256")).expect("sums");
    let mut n = 0;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").expect("line");
        assert_eq!(sha256_file(&dir.path().join(name)), sum, "{name}");
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn lists_and_inspects_the_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    let store = local_store(dir.path());
    assert_eq!(
        store.list_volumes().await.expect("volumes"),
        vec!["vol-16m", "vol-gzip", "vol-lz4", "vol-none"]
    );
    let backups = store.list_backups("vol-lz4").await.expect("backups");
    let names: Vec<&str> = backups.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, vec![LZ4_INCR, LZ4_FULL]);
    let incr = backups[0].config.as_ref().expect("cfg");
    assert!(incr.is_incremental);
    assert_eq!(incr.snapshot_name, "b.img");
    assert_eq!(incr.blocks.len(), 5);
    let vol = store.inspect_volume("vol-lz4").await.expect("volume");
    assert_eq!(vol.last_backup_name, LZ4_INCR);
    assert_eq!(vol.compression_method, "lz4");
    assert_eq!(vol.block_count, 6);
    let big = store
        .inspect_backup("vol-16m", "backup-a1cdaa4aa5ec433a")
        .await
        .expect("16m");
    assert_eq!(big.block_size(), Ok(16 * MB));
    assert!(matches!(
        store.inspect_backup("vol-lz4", "backup-nope").await,
        Err(Error::BackupNotFound { .. })
    ));
    assert!(matches!(
        store.inspect_volume("vol-absent").await,
        Err(Error::VolumeNotFound { .. })
    ));
}

async fn restore_to(store: &Store, volume: &str, backup: &str, out: &Path) -> u64 {
    let size = store.restore_size(volume, backup).await.expect("size");
    let sink = Arc::new(FileSink::create(out, size).expect("sink"));
    let progress = store
        .restore(volume, backup, sink, RestoreOptions::default())
        .await
        .expect("restore");
    progress.blocks_fetched
}

#[tokio::test]
async fn every_fixture_backup_restores_byte_exact_with_holes_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    make_images(dir.path());
    let store = local_store(dir.path());
    for (volume, backup, image) in BACKUPS {
        let out = dir.path().join(format!("{volume}-{backup}.out"));
        let fetched = restore_to(&store, volume, backup, &out).await;
        let cfg = store.inspect_backup(volume, backup).await.expect("cfg");
        let block = cfg.block_size().expect("bs");
        let zero = backupstore::names::h(&vec![0u8; block as usize]);
        let nonzero = cfg
            .blocks
            .iter()
            .filter(|b| b.block_checksum != zero)
            .count();
        assert_eq!(fetched, nonzero as u64, "the all-zero block is not fetched");
        assert_eq!(
            sha256_file(&out),
            sha256_file(&dir.path().join(image)),
            "{volume}/{backup}"
        );
        // Holes stay holes: nothing is allocated outside the backup's blocks, and the
        // allocated all-zero block is a hole too.
        let file = fs::File::open(&out).expect("open");
        for r in data_ranges(&file, fs::metadata(&out).expect("meta").len()).expect("ranges") {
            for i in r.offset / block..r.end().div_ceil(block) {
                let covered = cfg.blocks.iter().any(|b| b.offset as u64 == i * block);
                assert!(covered, "{volume}/{backup}: data at {r:?} outside the map");
            }
        }
    }
}

#[tokio::test]
async fn incremental_restore_fetches_exactly_the_two_changed_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    make_images(dir.path());
    let store = local_store(dir.path());
    let full = store.inspect_backup("vol-lz4", LZ4_FULL).await.expect("a");
    let incr = store.inspect_backup("vol-lz4", LZ4_INCR).await.expect("b");
    let fetch_offsets: Vec<u64> = incremental_steps(&full.blocks, &incr.blocks)
        .into_iter()
        .filter_map(|s| match s {
            RestoreStep::Fetch { offset, .. } => Some(offset),
            RestoreStep::Zero { .. } => None,
        })
        .collect();
    assert_eq!(fetch_offsets, vec![6 * MB, 10 * MB]);

    let out = dir.path().join("dr.img");
    restore_to(&store, "vol-lz4", LZ4_FULL, &out).await;
    assert_eq!(sha256_file(&out), sha256_file(&dir.path().join("a.img")));
    let sink = Arc::new(FileSink::open(&out, 16 * MB).expect("sink"));
    let progress = store
        .restore_incremental(
            "vol-lz4",
            LZ4_FULL,
            LZ4_INCR,
            sink,
            RestoreOptions::default(),
        )
        .await
        .expect("incremental");
    assert_eq!(progress.blocks_fetched, 2);
    assert_eq!(progress.blocks_zeroed, 0);
    let stored_sizes: u64 = incr
        .blocks
        .iter()
        .filter(|b| fetch_offsets.contains(&(b.offset as u64)))
        .map(|b| {
            let p = dir
                .path()
                .join(backupstore::names::block_path("vol-lz4", &b.block_checksum));
            fs::metadata(p).expect("block").len()
        })
        .sum();
    assert_eq!(progress.bytes_fetched, stored_sizes);
    assert_eq!(sha256_file(&out), sha256_file(&dir.path().join("b.img")));

    // And back: the reverse walk zeroes block 5 (gone in the older backup).
    let sink = Arc::new(FileSink::open(&out, 16 * MB).expect("sink"));
    let back = store
        .restore_incremental(
            "vol-lz4",
            LZ4_INCR,
            LZ4_FULL,
            sink,
            RestoreOptions::default(),
        )
        .await
        .expect("reverse");
    assert_eq!((back.blocks_fetched, back.blocks_zeroed), (1, 1));
    assert_eq!(sha256_file(&out), sha256_file(&dir.path().join("a.img")));
}

#[tokio::test]
async fn verify_finds_the_fixture_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    let store = local_store(dir.path());
    for volume in ["vol-lz4", "vol-gzip", "vol-none", "vol-16m"] {
        let report = store.verify(volume, None, 4).await.expect("verify");
        assert!(report.is_healthy(), "{volume}: {report:?}");
        assert!(report.blocks_checked > 0);
    }
    let report = store.verify("vol-lz4", None, 4).await.expect("verify");
    assert_eq!(report.blocks_checked, 6);
}

#[tokio::test]
async fn our_incremental_backup_on_top_of_vol_lz4_keeps_the_store_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    make_images(dir.path());
    let store = local_store(dir.path());
    // d.img: b.img with block 0 rewritten and block 6 punched out.
    let d = dir.path().join("d.img");
    sparse_copy(&dir.path().join("b.img"), &d);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&d).expect("open");
        f.write_all_at(&text("block 0 version D", 2 * MB as usize), 0)
            .expect("write");
        FileSink::open(&d, 16 * MB)
            .expect("sink")
            .zero_range(12 * MB, 2 * MB)
            .expect("punch");
    }
    let mut opts = BackupOptions::new("vol-lz4", "d.img");
    opts.labels = BTreeMap::from([("fixture".to_string(), "true".to_string())]);
    opts.compression = Compression::Gzip; // ignored: the volume's lz4 wins
    let source = Arc::new(FileSource::open(&d).expect("source"));
    let outcome = store.backup(source, opts).await.expect("backup");
    assert!(outcome.is_incremental);
    assert_eq!(outcome.blocks_in_map, 4, "blocks 0, 1, 3, 5");
    let c = outcome.counters;
    assert_eq!(c.blocks_new, 1, "only block 0 is new");
    assert_eq!(c.bytes_changed, 2 * MB);
    assert_eq!(c.blocks_deduplicated, 0);
    assert_eq!(c.bytes_read, 4 * 2 * MB);

    let cfg_path = dir
        .path()
        .join(backupstore::names::backup_cfg("vol-lz4", &outcome.name));
    let raw = fs::read_to_string(&cfg_path).expect("cfg");
    let cfg = BackupConfig::from_json(raw.as_bytes()).expect("parse");
    assert_eq!(cfg.to_json(), raw, "canonical Go encoding");
    assert!(raw.starts_with(&format!(
        "{{\"Name\":\"{}\",\"VolumeName\":\"vol-lz4\",\"SnapshotName\":\"d.img\",",
        outcome.name
    )));
    assert!(raw.contains(r#""IsIncremental":true,"CompressionMethod":"lz4","#));
    assert!(raw.contains(r#""ProcessingBlocks":null,"Blocks":[{"Offset":0,"#));
    assert!(raw.ends_with(r#""SingleFile":{"FilePath":""}}"#));
    assert_eq!(cfg.size, 4 * 2 * MB as i64);
    assert_eq!(
        cfg.parameters
            .as_ref()
            .and_then(|p| p.get("backup-block-size"))
            .map(String::as_str),
        Some("2097152")
    );
    let vol_raw = fs::read_to_string(dir.path().join(backupstore::names::volume_cfg("vol-lz4")))
        .expect("volume.cfg");
    let vol = VolumeConfig::from_json(vol_raw.as_bytes()).expect("parse");
    assert_eq!(vol.to_json(), vol_raw);
    assert!(vol_raw.contains(r#""CompressionMethod":"\"lz4\"""#));
    assert_eq!(vol.last_backup_name, outcome.name);
    assert_eq!(vol.block_count, 7);

    // Everything restores: the new backup and the two Longhorn ones, and verify is clean.
    let out = dir.path().join("d.out");
    restore_to(&store, "vol-lz4", &outcome.name, &out).await;
    assert_eq!(sha256_file(&out), sha256_file(&d));
    for (backup, image) in [(LZ4_FULL, "a.img"), (LZ4_INCR, "b.img")] {
        let out = dir.path().join(format!("{backup}.out"));
        restore_to(&store, "vol-lz4", backup, &out).await;
        assert_eq!(sha256_file(&out), sha256_file(&dir.path().join(image)));
    }
    let report = store.verify("vol-lz4", None, 2).await.expect("verify");
    assert!(report.is_healthy(), "{report:?}");
    assert_eq!(report.backups_checked.len(), 3);

    // The block size is fixed per volume.
    let mut big = BackupOptions::new("vol-lz4", "d.img");
    big.block_size = 16 * MB;
    big.mode = BackupMode::Full;
    let err = store
        .backup(Arc::new(FileSource::open(&d).expect("source")), big)
        .await
        .expect_err("mismatch");
    assert!(
        matches!(err, Error::BlockSizeMismatch { existing, requested, .. }
        if existing == 2 * MB && requested == 16 * MB),
        "{err}"
    );
}
