//! The volume API's behaviour on real sparse files: errors users can cause, backing images,
//! snapshots under concurrent writes, and the traps (discards and partial writes over lower
//! layers).

// A failed unwrap is how a test reports an unexpected error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engine::{BackingLayer, Engine, Error, SECTOR};

const S: u64 = SECTOR;

#[test]
fn user_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    assert!(matches!(
        engine.create_volume("bad/name", S, None),
        Err(Error::InvalidVolumeName { .. })
    ));
    assert!(matches!(
        engine.create_volume(".hidden", S, None),
        Err(Error::InvalidVolumeName { .. })
    ));
    assert!(matches!(
        engine.create_volume("v", 0, None),
        Err(Error::InvalidSize { size: 0 })
    ));
    assert!(matches!(
        engine.create_volume("v", S + 1, None),
        Err(Error::InvalidSize { .. })
    ));
    let vol = engine.create_volume("v", 4 * S, None).unwrap();
    assert!(matches!(
        engine.create_volume("v", S, None),
        Err(Error::VolumeExists { .. })
    ));
    assert!(matches!(
        engine.open_volume("nope"),
        Err(Error::VolumeNotFound { .. })
    ));
    assert!(matches!(
        engine.delete_volume("v"),
        Err(Error::VolumeInUse { .. })
    ));
    assert!(Arc::ptr_eq(&vol, &engine.open_volume("v").unwrap()));

    assert!(matches!(
        vol.snapshot("", BTreeMap::new()),
        Err(Error::InvalidSnapshotName { .. })
    ));
    vol.snapshot("a", BTreeMap::new()).unwrap();
    assert!(matches!(
        vol.snapshot("a", BTreeMap::new()),
        Err(Error::SnapshotExists { .. })
    ));
    assert!(matches!(
        vol.revert("zz"),
        Err(Error::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        vol.delete_snapshot("zz"),
        Err(Error::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        vol.expand(2 * S),
        Err(Error::ShrinkNotSupported { .. })
    ));
    assert!(matches!(
        vol.changed_extents(None, "a", 1000),
        Err(Error::InvalidBlockSize { .. })
    ));
    let err = vol.read_at(4 * S - 1, &mut [0; 2]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("outside volume"), "{err}");
    assert!(vol.write_at(u64::MAX, &[1]).is_err());

    // A second engine on the same directory (as another process would be) cannot take it.
    let other = Engine::open(dir.path()).unwrap();
    assert!(matches!(
        other.open_volume("v"),
        Err(Error::VolumeLocked { .. })
    ));
    assert!(matches!(
        other.delete_volume("v"),
        Err(Error::VolumeLocked { .. })
    ));

    drop(vol);
    assert_eq!(engine.list_volumes().unwrap(), vec!["v".to_string()]);
    engine.delete_volume("v").unwrap();
    assert_eq!(engine.list_volumes().unwrap(), Vec::<String>::new());
}

#[test]
fn backing_image_is_the_bottom_layer_and_never_changes() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("base.raw");
    let mut image = vec![0u8; 10 * S as usize];
    image[S as usize..2 * S as usize].fill(7);
    image[9 * S as usize + 5] = 9;
    std::fs::write(&raw, &image).unwrap();
    let engine = Engine::open(dir.path().join("data")).unwrap();
    let backing = BackingLayer {
        name: "base".into(),
        raw_path: raw.clone(),
    };
    let too_small = engine.create_volume("small", 8 * S, Some(backing.clone()));
    assert!(matches!(too_small, Err(Error::InvalidBacking { .. })));
    let vol = engine.create_volume("v", 16 * S, Some(backing)).unwrap();
    let mut buf = vec![0; 16 * S as usize];
    vol.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..10 * S as usize], &image[..]);
    assert_eq!(vol.head_changed_bytes().unwrap(), 0);
    // A discard over backing data must read zeros, and the image file stays as it was.
    vol.discard(S, S).unwrap();
    vol.write_at(9 * S + 4, &[1]).unwrap();
    vol.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[S as usize..2 * S as usize], &vec![0; S as usize][..]);
    assert_eq!(buf[9 * S as usize + 4], 1);
    assert_eq!(
        buf[9 * S as usize + 5],
        9,
        "partial write merged with the backing sector"
    );
    assert_eq!(std::fs::read(&raw).unwrap(), image);
    // Full backups include the backing image's blocks (only those with data).
    vol.snapshot("s", BTreeMap::new()).unwrap();
    let full = vol.changed_extents(None, "s", S).unwrap();
    let offsets: Vec<u64> = full.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![S, 9 * S]);
    assert_eq!(vol.list_snapshots().unwrap()[0].parent, None);
}

#[test]
fn snapshots_never_split_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let len = 64 * S;
    let vol = engine.create_volume("v", len, None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (vol, stop) = (Arc::clone(&vol), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Acquire) {
                round = round.wrapping_add(1).max(1);
                // Unaligned on purpose: partial edge sectors go through read-merge-write.
                vol.write_at(100, &vec![round; (len - 200) as usize])
                    .unwrap();
            }
        })
    };
    for i in 0..20 {
        vol.snapshot(&format!("s{i}"), BTreeMap::new()).unwrap();
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    for i in 0..20 {
        let mut view = vec![0; len as usize];
        vol.snapshot_reader(&format!("s{i}"))
            .unwrap()
            .read_at(0, &mut view)
            .unwrap();
        let body = &view[100..(len - 100) as usize];
        assert!(
            body.iter().all(|b| *b == body[0]),
            "snapshot s{i} holds parts of two writes"
        );
        assert!(
            view[..100]
                .iter()
                .chain(&view[(len - 100) as usize..])
                .all(|b| *b == 0)
        );
    }
}

#[test]
fn snapshot_of_a_huge_sparse_volume_touches_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("big", 64 << 30, None).unwrap();
    vol.write_at(63 << 30, b"far away").unwrap();
    let info = vol.snapshot("s", BTreeMap::new()).unwrap();
    assert_eq!(info.size, S);
    assert_eq!(vol.head_changed_bytes().unwrap(), 0);
    vol.expand(65 << 30).unwrap();
    let mut buf = [0u8; 8];
    vol.read_at(63 << 30, &mut buf).unwrap();
    assert_eq!(&buf, b"far away");
    assert_eq!(vol.changed_extents(None, "s", 2 << 20).unwrap().len(), 1);
}

#[test]
fn concurrent_partial_writes_to_one_sector_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("v", 4 * S, None).unwrap();
    vol.write_at(0, &vec![0xFF; 2 * S as usize]).unwrap();
    vol.snapshot("base", BTreeMap::new()).unwrap();
    // Two threads write interleaved single bytes of the same two sectors, which live in the
    // snapshot below: each write is a read-merge-write of a whole sector in the head.
    let threads: Vec<_> = (0..2u64)
        .map(|parity| {
            let vol = Arc::clone(&vol);
            std::thread::spawn(move || {
                for i in (parity..2 * S).step_by(2) {
                    vol.write_at(i, &[parity as u8 + 1]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut buf = vec![0; 2 * S as usize];
    vol.read_at(0, &mut buf).unwrap();
    for (i, b) in buf.iter().enumerate() {
        let i = i as u64;
        let want = if i.is_multiple_of(2) { 1 } else { 2 };
        assert_eq!(*b, want, "byte {i}");
    }
}

#[test]
fn an_impossible_expand_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("v", 4 * S, None).unwrap();
    let err = vol.expand(u64::MAX / S * S).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(vol.size(), 4 * S);
    vol.expand(8 * S).unwrap();
    vol.snapshot("still-usable", BTreeMap::new()).unwrap();
    assert_eq!(vol.size(), 8 * S);
}

#[test]
fn a_snapshot_shared_by_two_branches_is_hidden_then_merged_away() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let vol = engine.create_volume("v", 8 * S, None).unwrap();
    let layer_files = || {
        std::fs::read_dir(vol.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("layer-")
            })
            .count()
    };
    vol.write_at(0, &[1; 10]).unwrap();
    vol.snapshot("base", BTreeMap::new()).unwrap();
    vol.write_at(S, &[2; 10]).unwrap();
    vol.snapshot("branch-a", BTreeMap::new()).unwrap();
    vol.revert("base").unwrap();
    vol.write_at(2 * S, &[3; 10]).unwrap();
    // "base" is read by branch-a and by the head: deleting it hides it.
    vol.delete_snapshot("base").unwrap();
    let names: Vec<String> = vol
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["branch-a".to_string()]);
    assert_eq!(vol.list_snapshots().unwrap()[0].parent, None);
    assert_eq!(
        layer_files(),
        3,
        "base's layer is still needed by both branches"
    );
    let mut buf = [0u8; 10];
    vol.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [1; 10]);
    // The name is free again.
    vol.snapshot("base", BTreeMap::new()).unwrap();
    vol.delete_snapshot("base").unwrap();
    // Dropping branch-a leaves the hidden layer one child: it is merged into it.
    vol.delete_snapshot("branch-a").unwrap();
    assert_eq!(layer_files(), 1);
    assert_eq!(vol.chain_len(), 1);
    vol.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [1; 10]);
    vol.read_at(2 * S, &mut buf).unwrap();
    assert_eq!(buf, [3; 10]);
    vol.read_at(S, &mut buf).unwrap();
    assert_eq!(buf, [0; 10], "branch-a's data is gone with it");
}
