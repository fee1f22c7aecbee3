//! Backups and restores through the backupstore seams: a full copy from a snapshot source into
//! a new volume, an incremental copy, and a staged restore that readers see all at once.

// A failed unwrap is how a test reports an unexpected error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backupstore::source::{BlockSink, BlockSource, Extent};
use engine::{Engine, Error, SECTOR, Volume, VolumeSink};

const S: u64 = SECTOR;
const BLOCK: u64 = 4 * S;

fn read_all(vol: &Volume) -> Vec<u8> {
    let mut buf = vec![0; vol.size() as usize];
    vol.read_at(0, &mut buf).unwrap();
    buf
}

/// What a backup tool does: copy every listed extent from the source into the sink.
fn copy(source: &dyn BlockSource, sink: &dyn BlockSink, block: u64) -> Vec<Extent> {
    let extents = source.extents(block).unwrap();
    for e in &extents {
        let mut buf = vec![0; e.len as usize];
        source.read_at(e.offset, &mut buf).unwrap();
        sink.write_at(e.offset, &buf).unwrap();
    }
    sink.flush().unwrap();
    extents
}

#[test]
fn full_then_incremental_backup_restores_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let src = engine.create_volume("src", 64 * S, None).unwrap();
    src.write_at(0, &vec![1; 3 * S as usize]).unwrap();
    src.write_at(40 * S + 100, b"hello").unwrap();
    src.snapshot("b1", BTreeMap::new()).unwrap();
    src.write_at(S, &vec![2; S as usize]).unwrap();
    src.discard(40 * S, S).unwrap();
    src.snapshot("b2", BTreeMap::new()).unwrap();

    // Full restore of b1 into a new volume.
    let full = src.backup_source(None, "b1").unwrap();
    assert_eq!(full.size(), 64 * S);
    // The store must know a full source from a diff: it drops vanished blocks only for the former
    // and refuses a diff over a backup of another snapshot.
    assert!(full.covers_whole_volume());
    assert_eq!(full.diff_base(), None);
    let dst = engine.create_volume("dst", 64 * S, None).unwrap();
    let copied = copy(&full, &VolumeSink::new(Arc::clone(&dst)), BLOCK);
    assert_eq!(
        copied,
        vec![
            Extent {
                offset: 0,
                len: BLOCK
            },
            Extent {
                offset: 40 * S,
                len: BLOCK
            }
        ]
    );
    let mut b1 = vec![0; 64 * S as usize];
    full.read_at(0, &mut b1).unwrap();
    assert_eq!(read_all(&dst), b1);

    // Incremental b1 -> b2: only the blocks of b2's layer, and applying them yields b2.
    let diff = src.backup_source(Some("b1"), "b2").unwrap();
    assert!(!diff.covers_whole_volume());
    assert_eq!(diff.diff_base().as_deref(), Some("b1"));
    let copied = copy(&diff, &VolumeSink::new(Arc::clone(&dst)), BLOCK);
    assert_eq!(
        copied,
        vec![
            Extent {
                offset: 0,
                len: BLOCK
            },
            Extent {
                offset: 40 * S,
                len: BLOCK
            }
        ]
    );
    let mut b2 = vec![0; 64 * S as usize];
    src.snapshot_reader("b2")
        .unwrap()
        .read_at(0, &mut b2)
        .unwrap();
    assert_eq!(read_all(&dst), b2);
    assert_eq!(
        &b2[40 * S as usize + 100..40 * S as usize + 105],
        &[0; 5],
        "the discard reached the diff"
    );

    // After a revert to b1 and a new snapshot, b2 is no ancestor: no diff is offered.
    src.revert("b1").unwrap();
    src.snapshot("b3", BTreeMap::new()).unwrap();
    assert!(matches!(
        src.backup_source(Some("b2"), "b3"),
        Err(Error::NotAncestor { .. })
    ));
    assert!(matches!(
        src.changed_extents(Some("b3"), "b1", BLOCK),
        Err(Error::NotAncestor { .. })
    ));
    assert_eq!(
        src.changed_extents(Some("b1"), "b3", BLOCK).unwrap(),
        vec![]
    );
}

#[test]
fn staged_restore_zeroes_over_lower_data_and_swaps_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("standby", 64 * S, None).unwrap();
    let old = vec![0xAA; 64 * S as usize];
    vol.write_at(0, &old).unwrap();
    vol.snapshot("restored-1", BTreeMap::new()).unwrap();

    // The new backup: first half rewritten, a block that disappeared zeroed, rest unchanged.
    let mut new = old.clone();
    new[..32 * S as usize].fill(0xBB);
    new[40 * S as usize..44 * S as usize].fill(0);
    new[50 * S as usize + 10..50 * S as usize + 20].fill(0xCC);

    let staged = vol.stage_restore().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The commit waits until the reader has seen the old data once, so the reader runs across
    // the swap however the threads are scheduled.
    let reading = Arc::new(AtomicBool::new(false));
    let reader = {
        let (vol, stop, reading, old, new) = (
            Arc::clone(&vol),
            Arc::clone(&stop),
            Arc::clone(&reading),
            old.clone(),
            new.clone(),
        );
        std::thread::spawn(move || {
            let (mut saw_old, mut saw_new) = (0, 0);
            while !stop.load(Ordering::Acquire) || saw_new == 0 {
                let seen = read_all(&vol);
                if seen == old {
                    saw_old += 1;
                    reading.store(true, Ordering::Release);
                } else if seen == new {
                    saw_new += 1;
                } else {
                    panic!("a reader saw a mix of the old and the new backup");
                }
            }
            (saw_old, saw_new)
        })
    };
    staged.write_at(0, &new[..32 * S as usize]).unwrap();
    staged.zero_range(40 * S, 4 * S).unwrap();
    staged
        .write_at(
            50 * S + 10,
            &new[50 * S as usize + 10..50 * S as usize + 20],
        )
        .unwrap();
    staged.flush().unwrap();
    assert_eq!(read_all(&vol), old, "nothing is visible before the commit");
    while !reading.load(Ordering::Acquire) {
        assert!(!reader.is_finished(), "the reader stopped before reading");
        std::thread::yield_now();
    }
    staged.commit().unwrap();
    stop.store(true, Ordering::Release);
    let (saw_old, saw_new) = reader.join().unwrap();
    assert!(saw_old > 0 && saw_new > 0);
    assert_eq!(read_all(&vol), new);
    assert_eq!(
        vol.chain_len(),
        2,
        "the staged layer was folded into the head"
    );
    // The snapshot of the previous restore is untouched.
    let mut snap = vec![0; 64 * S as usize];
    vol.snapshot_reader("restored-1")
        .unwrap()
        .read_at(0, &mut snap)
        .unwrap();
    assert_eq!(snap, old);
}

#[test]
fn staged_restore_refuses_to_commit_over_new_writes_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("standby", 16 * S, None).unwrap();
    let files = |vol: &Volume| std::fs::read_dir(vol.dir()).unwrap().count();
    let before = files(&vol);
    let staged = vol.stage_restore().unwrap();
    staged.write_at(0, &[1; 10]).unwrap();
    assert_eq!(files(&vol), before + 1);
    vol.write_at(S, &[2; 10]).unwrap();
    assert!(matches!(
        staged.commit(),
        Err(Error::StagedRestoreConflict { .. })
    ));
    assert_eq!(files(&vol), before, "the refused staged layer is removed");
    let mut buf = [9u8; 10];
    vol.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 10]);

    let abandoned = vol.stage_restore().unwrap();
    abandoned.write_at(0, &[3; 10]).unwrap();
    drop(abandoned);
    assert_eq!(
        files(&vol),
        before,
        "a dropped staged restore leaves nothing behind"
    );
    assert!(
        matches!(vol.stage_restore().unwrap().write_at(16 * S - 1, &[0, 0]), Err(e) if e.kind() == std::io::ErrorKind::InvalidInput)
    );
}

#[test]
fn snapshot_readers_survive_deletes_around_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("v", 16 * S, None).unwrap();
    vol.write_at(0, &vec![1; 8 * S as usize]).unwrap();
    vol.snapshot("s1", BTreeMap::new()).unwrap();
    vol.write_at(4 * S, &vec![2; 8 * S as usize]).unwrap();
    vol.snapshot("s2", BTreeMap::new()).unwrap();
    vol.write_at(10 * S, &vec![3; 2 * S as usize]).unwrap();
    let view = |r: &engine::SnapshotReader| {
        let mut buf = vec![0; r.size() as usize];
        r.read_at(0, &mut buf).unwrap();
        buf
    };
    let r1 = vol.snapshot_reader("s1").unwrap();
    let r2 = vol.snapshot_reader("s2").unwrap();
    let (v1, v2) = (view(&r1), view(&r2));
    assert_eq!(&v1[..8 * S as usize], &vec![1; 8 * S as usize][..]);
    assert_eq!(
        &v2[4 * S as usize..12 * S as usize],
        &vec![2; 8 * S as usize][..]
    );
    // s1 merges into s2 (below r2's top, and r1's own layer goes away): both views hold.
    vol.delete_snapshot("s1").unwrap();
    assert_eq!(view(&r1), v1);
    assert_eq!(view(&r2), v2);
    // s2 merges into the head: r2 still reads s2, the head is unchanged.
    let mut head = vec![0; 16 * S as usize];
    vol.read_at(0, &mut head).unwrap();
    vol.delete_snapshot("s2").unwrap();
    assert_eq!(view(&r2), v2);
    let mut after = vec![0; 16 * S as usize];
    vol.read_at(0, &mut after).unwrap();
    assert_eq!(after, head);
    assert_eq!(vol.chain_len(), 1);
    assert_eq!(vol.head_changed_bytes().unwrap(), 12 * S);
}
