//! Lock interoperability with Longhorn: our lock files look like theirs, a live lock of the
//! other type (written as Longhorn writes it) excludes us, an expired one does not, and type-1
//! holders (backup, restore) run together.

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backupstore::format::LockFile;
use backupstore::names::{lock_path, locks_dir};
use backupstore::{BackupOptions, Error, FileSink, FileSource, RestoreOptions};
use common::*;

fn write_foreign_lock(root: &Path, volume: &str, name: &str, lock_type: i64, age: Duration) {
    let path = root.join(lock_path(volume, name));
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let body = LockFile {
        name: name.into(),
        lock_type,
        acquired: true,
    }
    .to_json();
    fs::write(&path, body).expect("write lock");
    let f = fs::File::options().write(true).open(&path).expect("open");
    f.set_modified(SystemTime::now() - age).expect("mtime");
}

fn lock_files(root: &Path, volume: &str) -> Vec<String> {
    match fs::read_dir(root.join(locks_dir(volume))) {
        Err(_) => Vec::new(),
        Ok(rd) => rd
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
    }
}

#[tokio::test]
async fn our_lock_file_is_longhorns_shape_and_is_removed_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(0, pseudo_random(1, 4 * MB as usize))]);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut opts = BackupOptions::new("vol", "x");
    let (seen2, root2) = (seen.clone(), root.clone());
    opts.progress = Some(Arc::new(move |p| {
        if p.blocks_done == p.blocks_total {
            for name in lock_files(&root2, "vol") {
                let path = root2.join(locks_dir("vol")).join(&name);
                if let Ok(body) = fs::read_to_string(path) {
                    seen2.lock().expect("lock").push(format!("{name} {body}"));
                }
            }
        }
    }));
    store
        .backup(Arc::new(FileSource::open(&img).expect("src")), opts)
        .await
        .expect("backup");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (file, body) = seen[0].split_once(' ').expect("pair");
    let name = file.strip_suffix(".lck").expect("suffix");
    assert!(name.starts_with("lock-") && name.len() == 21, "{name}");
    assert!(name[5..].bytes().all(|b| b.is_ascii_hexdigit()));
    // Read while the backup ran: either still confirming or acquired, always type 1.
    let parsed = LockFile::from_json(body.as_bytes()).expect("parse");
    assert_eq!(parsed.lock_type, 1);
    assert_eq!(parsed.name, name);
    assert_eq!(parsed.to_json(), body, "exact encoding");
    assert!(lock_files(&root, "vol").is_empty(), "released");
}

#[tokio::test]
async fn a_live_longhorn_delete_lock_excludes_backups_until_it_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 2 * MB, &[(0, pseudo_random(2, 2 * MB as usize))]);
    write_foreign_lock(
        &root,
        "vol",
        "lock-00000000000000aa",
        2,
        Duration::from_secs(5),
    );
    let err = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect_err("excluded");
    assert!(matches!(err, Error::LockBusy { .. }), "{err}");
    assert!(err.to_string().contains("lock-00000000000000aa"), "{err}");
    assert_eq!(lock_files(&root, "vol"), vec!["lock-00000000000000aa.lck"]);
    assert!(store.list_backups("vol").await.expect("list").is_empty());
    assert!(!root.join(backupstore::names::volume_cfg("vol")).exists());

    // The same lock, 151 s old, has expired: it no longer counts.
    write_foreign_lock(
        &root,
        "vol",
        "lock-00000000000000aa",
        2,
        Duration::from_secs(151),
    );
    let done = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect("backup after expiry");
    assert_eq!(done.blocks_in_map, 1);
}

#[tokio::test]
async fn a_live_longhorn_backup_lock_admits_restores_but_not_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 2 * MB, &[(0, pseudo_random(3, 2 * MB as usize))]);
    let b = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect("backup");
    write_foreign_lock(
        &root,
        "vol",
        "lock-00000000000000bb",
        1,
        Duration::from_secs(1),
    );
    let out = dir.path().join("out");
    let sink = Arc::new(FileSink::create(&out, 2 * MB).expect("sink"));
    store
        .restore("vol", &b.name, sink, RestoreOptions::default())
        .await
        .expect("restore alongside a backup");
    assert_eq!(sha256_file(&out), sha256_file(&img));
    assert_eq!(
        lock_files(&root, "vol"),
        vec!["lock-00000000000000bb.lck"],
        "our restore lock is gone"
    );
    let err = store
        .delete_backup("vol", &b.name)
        .await
        .expect_err("excluded");
    assert!(matches!(err, Error::LockBusy { .. }), "{err}");
    assert!(
        store.inspect_backup("vol", &b.name).await.is_ok(),
        "nothing deleted"
    );
}

#[tokio::test]
async fn restores_with_longhorns_timings_leave_no_lock_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root);
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(2 * MB, pseudo_random(4, 2 * MB as usize))]);
    let b = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect("backup");
    // Real timings: the restore either finishes inside the read-only window (lock withdrawn
    // unconfirmed) or waits for the confirmation; both must give the same bytes, no lock left.
    let store = store.with_lock_timings(backupstore::lock::LockTimings::default());
    let out = dir.path().join("out");
    let sink = Arc::new(FileSink::create(&out, 4 * MB).expect("sink"));
    let p = store
        .restore("vol", &b.name, sink, RestoreOptions::default())
        .await
        .expect("restore");
    assert_eq!(p.blocks_fetched, 1);
    assert_eq!(sha256_file(&out), sha256_file(&img));
    assert!(lock_files(&root, "vol").is_empty());
}

#[tokio::test]
async fn a_lingering_lock_is_reused_then_released_for_deletes_and_on_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root).with_lock_linger(Duration::from_secs(8));
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(0, pseudo_random(5, 2 * MB as usize))]);
    let first = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect("backup");
    let kept = lock_files(&root, "vol");
    assert_eq!(kept.len(), 1, "the shared lock is kept");
    let body = fs::read(root.join(locks_dir("vol")).join(&kept[0])).expect("read");
    let lock = LockFile::from_json(&body).expect("parse");
    assert!(lock.acquired && lock.lock_type == 1);

    write_image(&img, 4 * MB, &[(0, pseudo_random(6, 2 * MB as usize))]);
    let second = store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect("second backup");
    assert!(second.is_incremental);
    assert_eq!(lock_files(&root, "vol"), kept, "the same lock was reused");
    let out = dir.path().join("out");
    let sink = Arc::new(FileSink::create(&out, 4 * MB).expect("sink"));
    store
        .restore("vol", &second.name, sink, RestoreOptions::default())
        .await
        .expect("restore");
    assert_eq!(sha256_file(&out), sha256_file(&img));
    assert_eq!(lock_files(&root, "vol"), kept);

    // Our own delete is not blocked by our kept lock: it is released first.
    store
        .delete_backup("vol", &first.name)
        .await
        .expect("delete");
    assert!(lock_files(&root, "vol").is_empty());
    store.verify("vol", None, 2).await.expect("verify");
    assert_eq!(lock_files(&root, "vol").len(), 1);
    store.close().await.expect("close");
    assert!(lock_files(&root, "vol").is_empty());
}

#[tokio::test]
async fn a_lingering_lock_is_released_after_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = local_store(&root).with_lock_linger(Duration::from_millis(300));
    let img = dir.path().join("x.img");
    write_image(&img, 4 * MB, &[(0, pseudo_random(7, 2 * MB as usize))]);
    store
        .backup(
            Arc::new(FileSource::open(&img).expect("src")),
            BackupOptions::new("vol", "x"),
        )
        .await
        .expect("backup");
    assert_eq!(lock_files(&root, "vol").len(), 1, "kept right after");
    // Poll (no timing assertion): the idle timer must release it without any further call.
    let mut released = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if lock_files(&root, "vol").is_empty() {
            released = true;
            break;
        }
    }
    assert!(
        released,
        "the kept lock was never released after its idle timeout"
    );
}
