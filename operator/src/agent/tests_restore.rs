//! Tests of the data path on a real engine in a temp dir: clones equal their source, leave no
//! temporary snapshot and no marker; failures leave nothing behind; markers are durable files.

use super::*;

const MIB: u64 = 1 << 20;

fn read_all(volume: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; volume.size() as usize];
    volume.read_at(0, &mut buf).unwrap();
    buf
}

fn setup() -> (tempfile::TempDir, Arc<Engine>, Markers) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path()).unwrap());
    let markers = Markers::new(dir.path());
    (dir, engine, markers)
}

#[test]
fn nonzero_runs_are_sector_runs() {
    let mut buf = vec![0u8; 6 * 4096];
    buf[10] = 1;
    buf[4096 + 5] = 1;
    buf[3 * 4096] = 1;
    assert_eq!(
        nonzero_runs(&buf),
        vec![(0, 2 * 4096), (3 * 4096, 4 * 4096)]
    );
    assert!(nonzero_runs(&[0u8; 8192]).is_empty());
    // A short tail counts by its own length.
    assert_eq!(nonzero_runs(&[1u8; 100]), vec![(0, 100)]);
}

#[test]
fn percent_of_blocks_done() {
    let p = |done, total| {
        percent(&RestoreProgress {
            blocks_done: done,
            blocks_total: total,
            ..RestoreProgress::default()
        })
    };
    assert_eq!(p(0, 0), 0);
    assert_eq!(p(1, 3), 33);
    assert_eq!(p(3, 3), 100);
    assert_eq!(p(5, 3), 100);
}

#[test]
fn markers_are_set_and_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let markers = Markers::new(dir.path());
    assert!(!markers.is_set("v1"));
    markers.clear("v1").unwrap();
    markers.set("v1", "restore x").unwrap();
    assert!(markers.is_set("v1"));
    assert!(!markers.is_set("v2"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("incomplete/v1")).unwrap(),
        "restore x"
    );
    markers.clear("v1").unwrap();
    assert!(!markers.is_set("v1"));
}

#[tokio::test]
async fn clone_of_a_volume_equals_its_current_data_and_drops_the_temporary_snapshot() {
    let (_dir, engine, markers) = setup();
    let source = engine.create_volume("src", 6 * MIB, None).unwrap();
    source.write_at(MIB + 7, b"older").unwrap();
    source.snapshot("s1", Default::default()).unwrap();
    source.write_at(3 * MIB, &[0xAB; 10_000]).unwrap();
    let copied = clone_volume(engine.clone(), markers.clone(), "src", "dst", 2 * MIB)
        .await
        .unwrap();
    assert_eq!(copied, 4096 + 3 * 4096, "only sectors with data are copied");
    let dst = engine.open_volume("dst").unwrap();
    assert_eq!(read_all(&dst), read_all(&source));
    let names: Vec<String> = source
        .list_snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["s1".to_owned()]);
    assert!(!markers.is_set("dst"));
}

#[tokio::test]
async fn clone_of_a_missing_snapshot_leaves_nothing_behind() {
    let (_dir, engine, markers) = setup();
    engine.create_volume("src", 2 * MIB, None).unwrap();
    let error = clone_snapshot(
        engine.clone(),
        markers.clone(),
        "src",
        "nope",
        "dst",
        2 * MIB,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, DataError::SnapshotMissing { .. }),
        "{error}"
    );
    let error = clone_snapshot(
        engine.clone(),
        markers.clone(),
        "elsewhere",
        "s",
        "dst",
        2 * MIB,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, DataError::SourceNotHere { .. }), "{error}");
    assert_eq!(engine.list_volumes().unwrap(), vec!["src".to_owned()]);
    assert!(!markers.is_set("dst"));
}

#[tokio::test]
async fn a_clone_onto_an_existing_volume_keeps_that_volume() {
    let (_dir, engine, markers) = setup();
    let source = engine.create_volume("src", 2 * MIB, None).unwrap();
    source.snapshot("s1", Default::default()).unwrap();
    let existing = engine.create_volume("dst", 2 * MIB, None).unwrap();
    existing.write_at(0, b"keep").unwrap();
    drop(existing);
    let error = clone_snapshot(engine.clone(), markers.clone(), "src", "s1", "dst", 2 * MIB)
        .await
        .unwrap_err();
    assert!(
        matches!(error, DataError::Engine(engine::Error::VolumeExists { .. })),
        "{error}"
    );
    assert!(!markers.is_set("dst"), "no marker would later discard it");
    let mut head = [0u8; 4];
    engine
        .open_volume("dst")
        .unwrap()
        .read_at(0, &mut head)
        .unwrap();
    assert_eq!(&head, b"keep");
}

#[test]
fn temporary_snapshot_names_fit_the_engine() {
    assert_eq!(temporary_snapshot_name("v1"), "clone-for-v1");
    assert_eq!(temporary_snapshot_name(&"x".repeat(63)).len(), 63);
}

#[tokio::test]
async fn a_restore_equals_its_backup_and_a_cancelled_one_leaves_nothing_behind() {
    use crate::agent::volumes::tests::{backup_of, pattern};
    let (dir, engine, markers) = setup();
    let store_dir = dir.path().join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let url =
        backupstore::target::TargetUrl::parse(&format!("file://{}", store_dir.display())).unwrap();
    let stores = crate::stores::Stores::default();
    let store = stores
        .open_with("t", url.clone(), Default::default())
        .await
        .unwrap();
    let data = pattern(7, (5 * MIB) as usize);
    backup_of(&store, dir.path(), "src", "b1", &data).await;
    let backup = url.backup_url("b1", "src").unwrap();

    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let error = restore(
        engine.clone(),
        markers.clone(),
        &store,
        &backup,
        "cancelled",
        MIB,
        None,
        cancel,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, DataError::Store(_)), "{error}");
    assert!(engine.list_volumes().unwrap().is_empty());
    assert!(!markers.is_set("cancelled"));

    let progress = restore(
        engine.clone(),
        markers.clone(),
        &store,
        &backup,
        "dst",
        MIB,
        None,
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(progress.blocks_done, progress.blocks_total);
    let dst = engine.open_volume("dst").unwrap();
    assert_eq!(
        dst.size(),
        6 * MIB,
        "the backup's size wins over a smaller request"
    );
    let restored = read_all(&dst);
    assert_eq!(
        &restored[MIB as usize..MIB as usize + data.len()],
        &data[..]
    );
    assert!(restored[..MIB as usize].iter().all(|b| *b == 0));
    assert!(!markers.is_set("dst"));
    stores.close_all().await;
}
