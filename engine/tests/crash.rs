//! Crash safety: a failure injected at each point inside snapshot, revert, delete (merge) and
//! restore swap; the volume is then dropped and reopened from disk, which must show exactly the
//! chain before the operation (failure before its commit point) or after it (failure after),
//! with no leftover files, and keep working.

// A failed unwrap is how a test reports an unexpected error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use backupstore::source::BlockSink;
use engine::{Engine, Error, FailPoint, SECTOR, Volume};

const S: u64 = SECTOR;
const SIZE: u64 = 32 * S;

/// Everything a user can observe about a volume, except timestamps.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    head: Vec<u8>,
    head_changed: u64,
    /// (name, parent, view, own allocated bytes)
    snapshots: Vec<(String, Option<String>, Vec<u8>, u64)>,
}

fn observe(vol: &Arc<Volume>) -> Observed {
    let mut head = vec![0; vol.size() as usize];
    vol.read_at(0, &mut head).unwrap();
    let snapshots = vol
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|info| {
            let reader = vol.snapshot_reader(&info.name).unwrap();
            let mut view = vec![0; reader.size() as usize];
            reader.read_at(0, &mut view).unwrap();
            (info.name, info.parent, view, info.size)
        })
        .collect();
    Observed {
        head,
        head_changed: vol.head_changed_bytes().unwrap(),
        snapshots,
    }
}

fn fill(vol: &Volume, sector: u64, count: u64, byte: u8) {
    vol.write_at(sector * S, &vec![byte; (count * S) as usize])
        .unwrap();
}

/// s1: sectors 0-3, 8-11, 16-19 (0x11); s2: sectors 2-3, 10-11 (0x22) and 24 (0x23);
/// head: sector 1 (0x33) and a discard of sectors 16-17 (zeros over s1's data).
fn setup(root: &Path) -> (Engine, Arc<Volume>) {
    let engine = Engine::open(root).unwrap();
    let vol = engine.create_volume("v", SIZE, None).unwrap();
    for start in [0, 8, 16] {
        fill(&vol, start, 4, 0x11);
    }
    vol.snapshot("s1", BTreeMap::new()).unwrap();
    fill(&vol, 2, 2, 0x22);
    fill(&vol, 10, 2, 0x22);
    fill(&vol, 24, 1, 0x23);
    vol.snapshot("s2", BTreeMap::from([("k".into(), "v".into())]))
        .unwrap();
    fill(&vol, 1, 1, 0x33);
    vol.discard(16 * S, 2 * S).unwrap();
    (engine, vol)
}

type Operation = fn(&Arc<Volume>) -> Result<(), Error>;

fn snapshot_op(vol: &Arc<Volume>) -> Result<(), Error> {
    vol.snapshot("s3", BTreeMap::new()).map(|_| ())
}
/// Revert to s1 (s1 now has two children: s2 and the head), delete s1 (hidden), delete s2 (a
/// leaf): the hidden s1 is left with one child and is merged into the head.
fn purge_op(vol: &Arc<Volume>) -> Result<(), Error> {
    vol.revert("s1")?;
    vol.write_at(3 * S, &[0x55; 100]).unwrap();
    vol.delete_snapshot("s1")?;
    vol.delete_snapshot("s2")
}
fn expand_op(vol: &Arc<Volume>) -> Result<(), Error> {
    vol.expand(SIZE + 8 * S)
}
fn revert_op(vol: &Arc<Volume>) -> Result<(), Error> {
    vol.revert("s1")
}
fn delete_s1_op(vol: &Arc<Volume>) -> Result<(), Error> {
    vol.delete_snapshot("s1")
}
fn delete_s2_op(vol: &Arc<Volume>) -> Result<(), Error> {
    vol.delete_snapshot("s2")
}
/// A staged restore that rewrites sectors 0, 5 and 20-21, and zeroes 8-11 (data below) and
/// 28-29 (nothing below).
fn swap_op(vol: &Arc<Volume>) -> Result<(), Error> {
    let staged = vol.stage_restore()?;
    staged.write_at(0, &vec![0x44; S as usize]).unwrap();
    staged.write_at(5 * S, &vec![0x45; S as usize]).unwrap();
    staged
        .write_at(20 * S, &vec![0x46; 2 * S as usize])
        .unwrap();
    staged.zero_range(8 * S, 4 * S).unwrap();
    staged.zero_range(28 * S, 2 * S).unwrap();
    staged.flush().unwrap();
    staged.commit()
}

fn layer_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("layer-")
        })
        .count()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Before,
    After,
}

fn crash_at(op: Operation, point: FailPoint, expect: Expect) {
    // The reference: the same operation without a failure.
    let reference_dir = tempfile::tempdir().unwrap();
    let (_e, reference) = setup(reference_dir.path());
    let before = observe(&reference);
    op(&reference).unwrap();
    let after = observe(&reference);
    assert_ne!(
        before, after,
        "the operation must change something observable"
    );

    let dir = tempfile::tempdir().unwrap();
    let (engine, vol) = setup(dir.path());
    let vol_dir = vol.dir().to_path_buf();
    vol.inject_failure(point);
    let err = op(&vol).unwrap_err();
    assert!(
        matches!(err, Error::InjectedFailure(p) if p == point),
        "{point:?}: got {err}"
    );
    // The in-memory state may be stale now: the volume refuses further structural work.
    assert!(matches!(
        vol.snapshot("x", BTreeMap::new()),
        Err(Error::Poisoned { .. })
    ));
    drop(vol);
    drop(engine);

    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.open_volume("v").unwrap();
    let seen = observe(&vol);
    match expect {
        Expect::Before => assert_eq!(seen, before, "{point:?}: expected the chain before"),
        Expect::After => assert_eq!(seen, after, "{point:?}: expected the chain after"),
    }
    assert_eq!(
        layer_files(&vol_dir),
        vol.list_snapshots().unwrap().len() + 1,
        "{point:?}: leftover layer files"
    );
    assert!(!vol_dir.join("volume.json.tmp").exists());

    // And it keeps working.
    vol.write_at(3 * S + 7, b"still alive").unwrap();
    vol.snapshot("after-crash", BTreeMap::new()).unwrap();
    let mut buf = [0u8; 11];
    vol.snapshot_reader("after-crash")
        .unwrap()
        .read_at(3 * S + 7, &mut buf)
        .unwrap();
    assert_eq!(&buf, b"still alive");
}

#[test]
fn snapshot_crash_before_commit_keeps_old_chain() {
    crash_at(snapshot_op, FailPoint::SnapshotBeforeCommit, Expect::Before);
    crash_at(snapshot_op, FailPoint::MetadataBeforeRename, Expect::Before);
}

#[test]
fn expand_crash_before_commit_keeps_old_size() {
    crash_at(expand_op, FailPoint::MetadataBeforeRename, Expect::Before);
}

#[test]
fn revert_crash_before_commit_keeps_old_chain() {
    crash_at(revert_op, FailPoint::RevertBeforeCommit, Expect::Before);
    crash_at(revert_op, FailPoint::MetadataBeforeRename, Expect::Before);
}

#[test]
fn merge_crash_before_intent_keeps_snapshot() {
    crash_at(
        delete_s1_op,
        FailPoint::MetadataBeforeRename,
        Expect::Before,
    );
    crash_at(
        delete_s2_op,
        FailPoint::MetadataBeforeRename,
        Expect::Before,
    );
}

#[test]
fn merge_crash_after_intent_is_finished_on_open() {
    for point in [
        FailPoint::MergeAfterIntent,
        FailPoint::MergeMidCopy,
        FailPoint::MergeBeforeCommit,
    ] {
        crash_at(delete_s1_op, point, Expect::After);
        // Into the head: the merge must not make the head look changed beyond the merged data.
        crash_at(delete_s2_op, point, Expect::After);
    }
}

#[test]
fn purge_of_a_hidden_snapshot_is_finished_on_open() {
    for point in [
        FailPoint::MergeAfterIntent,
        FailPoint::MergeMidCopy,
        FailPoint::MergeBeforeCommit,
    ] {
        crash_at(purge_op, point, Expect::After);
    }
}

#[test]
fn restore_swap_crash_shows_old_or_new_never_a_mix() {
    crash_at(swap_op, FailPoint::SwapBeforeCommit, Expect::Before);
    crash_at(swap_op, FailPoint::MetadataBeforeRename, Expect::Before);
    crash_at(swap_op, FailPoint::SwapAfterCommit, Expect::After);
    crash_at(swap_op, FailPoint::SwapMidFold, Expect::After);
}

#[test]
fn corrupt_metadata_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, vol) = setup(dir.path());
    let meta = vol.dir().join("volume.json");
    drop(vol);
    drop(engine);
    std::fs::write(&meta, b"{ not json").unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let err = engine.open_volume("v").unwrap_err();
    assert!(
        matches!(&err, Error::CorruptMetadata { path, .. } if path == &meta),
        "{err}"
    );
    // A broken volume can still be deleted.
    engine.delete_volume("v").unwrap();
    assert!(engine.list_volumes().unwrap().is_empty());
}
