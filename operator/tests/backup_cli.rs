//! `bulwark backup …` end to end on a real directory target and real sparse files: create full
//! and incremental backups, list, inspect, restore (full and incremental) byte-exact, verify,
//! detect a corrupt block, delete; errors name the target and the object.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;

fn bulwark(target: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .arg("backup")
        .args(args)
        .env("BULWARK_BACKUP_TARGET", target)
        .output()
        .expect("bulwark runs")
}

#[track_caller]
fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// An 8 MiB sparse image: data in block 0, a hole in block 1, allocated zeros in block 2,
/// `block3` as the first bytes of block 3.
fn write_image(path: &Path, block3: &[u8]) {
    let file = File::create(path).expect("create image");
    file.set_len(8 * MIB).expect("size");
    let data: Vec<u8> = (0..2 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    file.write_all_at(&data, 0).expect("block 0");
    file.write_all_at(&vec![0; 2 * MIB as usize], 4 * MIB)
        .expect("block 2");
    file.write_all_at(block3, 6 * MIB).expect("block 3");
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).expect("read a") == std::fs::read(b).expect("read b")
}

#[test]
fn backup_cli_round_trip_on_a_directory_target() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    let target = format!("file://{}", store.display());
    let (v1, v2) = (dir.path().join("v1.img"), dir.path().join("v2.img"));
    write_image(&v1, b"first version of block three");
    write_image(&v2, b"SECOND version of block three");

    let first = json(&bulwark(
        &target,
        &[
            "create",
            "--from",
            v1.to_str().expect("utf-8"),
            "--volume",
            "vol-a",
            "--name",
            "backup-1",
            "--json",
        ],
    ));
    assert_eq!(first["name"], "backup-1");
    assert_eq!(first["bytesRead"], 3 * 2 * MIB, "the hole is never read");
    assert_eq!(
        first["url"],
        format!("{target}?backup=backup-1&volume=vol-a")
    );
    let second = json(&bulwark(
        &target,
        &[
            "create",
            "--from",
            v2.to_str().expect("utf-8"),
            "--volume",
            "vol-a",
            "--name",
            "backup-2",
            "--json",
        ],
    ));
    assert_eq!(second["isIncremental"], true);
    assert_eq!(second["blocksNew"], 1, "only block 3 changed: {second}");

    let volumes = json(&bulwark(&target, &["ls", "--json"]));
    assert_eq!(volumes["volumes"][0]["name"], "vol-a", "{volumes}");
    let backups = json(&bulwark(&target, &["ls", "vol-a", "--json"]));
    let names: Vec<&str> = backups["backups"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{backups}");
    assert!(names.contains(&"backup-1") && names.contains(&"backup-2"));
    let inspected = json(&bulwark(
        &target,
        &["inspect", "vol-a", "backup-2", "--json"],
    ));
    assert_eq!(
        inspected["blocks"], 3,
        "full block map of 3 allocated blocks: {inspected}"
    );

    let restored = dir.path().join("restored.img");
    let path = restored.to_str().expect("utf-8");
    assert!(
        bulwark(&target, &["restore", "vol-a", "backup-2", "--to", path])
            .status
            .success()
    );
    assert!(same_bytes(&restored, &v2), "full restore is byte-exact");
    let backup_1_url = format!("{target}?backup=backup-1&volume=vol-a");
    let back = bulwark(
        &target,
        &[
            "restore",
            &backup_1_url,
            "--to",
            path,
            "--incremental-from",
            "backup-2",
        ],
    );
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert!(
        same_bytes(&restored, &v1),
        "incremental restore back to backup-1 is byte-exact"
    );

    let healthy = json(&bulwark(&target, &["verify", "vol-a", "--json"]));
    assert_eq!(healthy["healthy"], true, "{healthy}");

    // Corrupt the block only backup-2 holds: verify and restore both say so, naming the backup.
    let block = find_block(&store, &v2);
    std::fs::write(&block, b"not a block").expect("corrupt");
    let damaged = bulwark(&target, &["verify", "vol-a", "--json"]);
    assert!(!damaged.status.success(), "verify fails on damage");
    let report: serde_json::Value = serde_json::from_slice(&damaged.stdout).expect("JSON report");
    assert_eq!(
        report["brokenBackups"],
        serde_json::json!(["backup-2"]),
        "{report}"
    );
    let failed = bulwark(&target, &["restore", "vol-a", "backup-2", "--to", path]);
    assert!(
        !failed.status.success(),
        "a corrupt block fails the restore"
    );

    assert!(
        bulwark(&target, &["rm", "vol-a", "backup-2"])
            .status
            .success()
    );
    let left = json(&bulwark(&target, &["ls", "vol-a", "--json"]));
    assert_eq!(left["backups"].as_array().map(Vec::len), Some(1), "{left}");
    assert!(
        bulwark(&target, &["verify", "vol-a"]).status.success(),
        "backup-1 is intact after GC"
    );
}

/// The block file holding the content of block 3 of `image` (named by its hash).
fn find_block(store: &Path, image: &Path) -> std::path::PathBuf {
    use sha2::{Digest, Sha512};
    let data = std::fs::read(image).expect("image");
    let block = &data[(6 * MIB) as usize..(8 * MIB) as usize];
    let name = hex::encode(Sha512::digest(block))[..64].to_owned();
    let mut found = None;
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().and_then(|n| n.to_str()) == Some(&format!("{name}.blk")) {
                found = Some(path);
            }
        }
    }
    found.expect("the changed block is stored")
}

#[test]
fn errors_name_the_target_and_the_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = format!("file://{}", dir.path().display());
    let no_target = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["backup", "ls"])
        .env_remove("BULWARK_BACKUP_TARGET")
        .output()
        .expect("runs");
    assert!(!no_target.status.success());
    assert!(String::from_utf8_lossy(&no_target.stderr).contains("BULWARK_BACKUP_TARGET"));
    let missing = bulwark(&target, &["inspect", "vol-x", "backup-404"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("backup-404") || stderr.contains("vol-x"),
        "{stderr}"
    );
    assert!(
        stderr.contains(dir.path().to_str().expect("utf-8")),
        "names the target: {stderr}"
    );
}
