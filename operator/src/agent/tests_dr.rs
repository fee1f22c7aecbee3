//! DR at the agent level: two data dirs (a primary node and a standby node) share one store. A
//! chain of backups with writes, overwrites and discards between them is followed by the
//! standby, which ends byte-identical to each backed-up snapshot while fetching only the blocks
//! that changed; an incremental restore killed in the middle leaves the standby at the old
//! backup, and running it again (after reopening the engine, as a restarted agent would) ends
//! byte-identical; a standby whose restored backup vanished from the store restores in full.

use std::sync::atomic::{AtomicBool, Ordering};

use backupstore::{BackupOptions, Store};
use tokio_util::sync::CancellationToken;

use super::*;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 2 * MIB;
const SIZE: u64 = 8 * BLOCK;

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed)
        .collect()
}

fn read_all(volume: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; volume.size() as usize];
    volume.read_at(0, &mut buf).unwrap();
    buf
}

fn snapshot_bytes(volume: &Arc<Volume>, snapshot: &str) -> Vec<u8> {
    let reader = volume.snapshot_reader(snapshot).unwrap();
    let mut buf = vec![0u8; reader.size() as usize];
    reader.read_at(0, &mut buf).unwrap();
    buf
}

struct Primary {
    volume: Arc<Volume>,
    store: Store,
    round: u32,
}

impl Primary {
    /// Snapshot the volume and back it up incrementally against the last backup's snapshot.
    async fn backup(&mut self) -> (String, String) {
        self.round += 1;
        let snapshot = format!("s{}", self.round);
        self.volume.snapshot(&snapshot, Default::default()).unwrap();
        let base = self
            .store
            .incremental_base("src")
            .await
            .unwrap()
            .map(|(_, s)| s);
        let source = self
            .volume
            .backup_source(base.as_deref(), &snapshot)
            .unwrap();
        let outcome = self
            .store
            .backup(
                Arc::new(source),
                BackupOptions::new("src", snapshot.clone()),
            )
            .await
            .unwrap();
        (outcome.name, snapshot)
    }
}

async fn setup() -> (tempfile::TempDir, Primary, Arc<Engine>, Markers) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b", "store"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let primary_engine = Engine::open(dir.path().join("a")).unwrap();
    let volume = primary_engine.create_volume("src", SIZE, None).unwrap();
    let objects = backupstore::target::local::open_directory(&dir.path().join("store")).unwrap();
    let store = Store::new(objects, Default::default());
    let standby = Arc::new(Engine::open(dir.path().join("b")).unwrap());
    let markers = Markers::new(&dir.path().join("b"));
    let primary = Primary {
        volume,
        store,
        round: 0,
    };
    (dir, primary, standby, markers)
}

fn url(store_dir: &std::path::Path, backup: &str) -> BackupUrl {
    BackupUrl::parse(&format!(
        "file://{}?backup={backup}&volume=src",
        store_dir.display()
    ))
    .unwrap()
}

#[tokio::test]
async fn a_standby_follows_a_chain_of_backups_fetching_only_changed_blocks() {
    let (dir, mut primary, standby, markers) = setup().await;
    for block in 0..6 {
        primary
            .volume
            .write_at(block * BLOCK, &pattern(BLOCK, block as u8))
            .unwrap();
    }
    let (b1, s1) = primary.backup().await;
    let first = restore(
        standby.clone(),
        markers.clone(),
        &primary.store,
        &url(&dir.path().join("store"), &b1),
        "dst",
        SIZE,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(first.blocks_fetched, 6);
    let dst = standby.open_volume("dst").unwrap();
    assert!(read_all(&dst) == snapshot_bytes(&primary.volume, &s1));

    // Each round: what changes, then how many blocks the standby must fetch and zero.
    type Change = fn(&Volume);
    let rounds: [(&str, Change, u64, u64); 3] = [
        (
            "an overwrite inside block 2",
            |v| v.write_at(2 * BLOCK + 4096, &[0x5A; 8192]).unwrap(),
            1,
            0,
        ),
        (
            "block 4 discarded, block 7 written",
            |v| {
                v.discard(4 * BLOCK, BLOCK).unwrap();
                v.write_at(7 * BLOCK, &pattern(BLOCK, 77)).unwrap();
            },
            1,
            1,
        ),
        (
            "block 0 overwritten with block 1's content",
            |v| v.write_at(0, &pattern(BLOCK, 1)).unwrap(),
            1,
            0,
        ),
    ];
    let mut from = b1;
    for (what, change, fetched, zeroed) in rounds {
        change(&primary.volume);
        let (to, snapshot) = primary.backup().await;
        let done = follow(
            standby.clone(),
            &primary.store,
            "src",
            &from,
            &to,
            "dst",
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(done.incremental, "{what}");
        assert_eq!(
            done.progress.blocks_fetched, fetched,
            "{what}: blocks fetched"
        );
        // A discard over older data reads as zeros, so the backup maps a zero block there: the
        // standby zeroes it without fetching anything.
        assert_eq!(
            done.progress.blocks_zeroed + done.progress.blocks_zero_skipped,
            zeroed,
            "{what}: blocks made zero"
        );
        let dst = standby.open_volume("dst").unwrap();
        assert!(
            read_all(&dst) == snapshot_bytes(&primary.volume, &snapshot),
            "{what}: the standby differs from the backed-up snapshot"
        );
        from = to;
    }
}

#[tokio::test]
async fn an_interrupted_incremental_restore_leaves_the_old_backup_and_resumes() {
    let (dir, mut primary, standby, markers) = setup().await;
    primary.volume.write_at(0, &pattern(SIZE, 3)).unwrap();
    let (b1, s1) = primary.backup().await;
    restore(
        standby.clone(),
        markers.clone(),
        &primary.store,
        &url(&dir.path().join("store"), &b1),
        "dst",
        SIZE,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    primary.volume.write_at(0, &pattern(SIZE, 9)).unwrap();
    let (b2, s2) = primary.backup().await;

    // Killed after the first block: the restore stops, nothing of it is visible.
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let fired = Arc::new(AtomicBool::new(false));
    let seen = fired.clone();
    let progress: RestoreProgressFn = Arc::new(move |p: &RestoreProgress| {
        if p.blocks_done >= 1 {
            seen.store(true, Ordering::SeqCst);
            stop.cancel();
        }
    });
    let interrupted = follow(
        standby.clone(),
        &primary.store,
        "src",
        &b1,
        &b2,
        "dst",
        Some(progress),
        cancel,
    )
    .await;
    assert!(
        fired.load(Ordering::SeqCst),
        "the restore got going before it was stopped"
    );
    assert!(interrupted.is_err(), "a cancelled restore reports it");
    let dst = standby.open_volume("dst").unwrap();
    assert!(
        read_all(&dst) == snapshot_bytes(&primary.volume, &s1),
        "a half-applied restore became visible"
    );
    drop(dst);

    // The agent restarts: a new engine over the same data dir runs the restore again. Blocking
    // tasks of the cancelled restore may still hold the volume for a moment (a real restart
    // ends them with the process).
    drop(standby);
    let restarted = Arc::new(Engine::open(dir.path().join("b")).unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(engine::Error::VolumeLocked { .. }) = restarted.open_volume("dst") {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled restore never let go of the volume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let done = follow(
        restarted.clone(),
        &primary.store,
        "src",
        &b1,
        &b2,
        "dst",
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(done.incremental);
    let dst = restarted.open_volume("dst").unwrap();
    assert!(read_all(&dst) == snapshot_bytes(&primary.volume, &s2));
}

#[tokio::test]
async fn a_vanished_restored_backup_means_a_full_restore() {
    let (dir, mut primary, standby, markers) = setup().await;
    primary.volume.write_at(0, &pattern(4 * BLOCK, 5)).unwrap();
    let (b1, _) = primary.backup().await;
    restore(
        standby.clone(),
        markers.clone(),
        &primary.store,
        &url(&dir.path().join("store"), &b1),
        "dst",
        SIZE,
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    primary.volume.discard(0, BLOCK).unwrap();
    let (b2, _) = primary.backup().await;
    primary
        .volume
        .write_at(5 * BLOCK, &pattern(BLOCK, 6))
        .unwrap();
    let (b3, s3) = primary.backup().await;
    primary.store.delete_backup("src", &b1).await.unwrap();
    let done = follow(
        standby.clone(),
        &primary.store,
        "src",
        &b1,
        &b3,
        "dst",
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(!done.incremental, "b1 is gone: the restore must be full");
    let dst = standby.open_volume("dst").unwrap();
    assert!(
        read_all(&dst) == snapshot_bytes(&primary.volume, &s3),
        "block 0 (discarded since b1) must read as zeros after the full restore"
    );
    assert_ne!(b2, b3);
}
