//! The FUSE frontend against real volumes: file I/O maps to the volume, and a loop device with
//! ext4 on top survives a snapshot taken while the filesystem is in use.
//!
//! Needs root, /dev/fuse, loop devices, `losetup`, `mkfs.ext4`, `fsfreeze` and `e2fsck` (CI has
//! them). Without them the tests fail with a message saying what is missing; set
//! `BULWARK_SKIP_FUSE_TESTS=1` to skip them knowingly on a machine that cannot run them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use engine::frontend::{FrontendError, FuseOptions, MountedVolumes, prepare_mount_point};
use engine::{Engine, Volume};
use rustix::fs::FallocateFlags;

const MIB: u64 = 1024 * 1024;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// False (after saying why) when the machine cannot run FUSE tests and the skip is requested.
fn fuse_available() -> bool {
    let missing = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse does not exist")
    } else if !running_as_root() {
        Some("the tests must run as root (mount, losetup)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("BULWARK_SKIP_FUSE_TESTS").is_some() => {
            eprintln!("skipping FUSE test: {reason} (BULWARK_SKIP_FUSE_TESTS is set)");
            false
        }
        Some(reason) => panic!("{reason}; set BULWARK_SKIP_FUSE_TESTS=1 to skip FUSE tests"),
    }
}

/// A file we create is owned by our effective uid.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    tempfile::tempfile()
        .and_then(|file| file.metadata())
        .is_ok_and(|metadata| metadata.uid() == 0)
}

fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let output = Command::new(program).args(args).output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{program} {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn path_str(path: &Path) -> io::Result<&str> {
    path.to_str()
        .ok_or_else(|| io::Error::other(format!("non-UTF-8 path {}", path.display())))
}

/// A loop device, detached on drop (also when a test panics).
struct LoopDevice(String);

impl LoopDevice {
    fn attach(file: &Path, read_only: bool) -> io::Result<Self> {
        let mut args = vec!["-f", "--show"];
        if read_only {
            args.push("-r");
        }
        args.push(path_str(file)?);
        Ok(LoopDevice(run("losetup", &args)?))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = run("losetup", &["-d", &self.0]);
    }
}

/// A mounted filesystem, unmounted on drop.
struct FsMount(PathBuf);

impl FsMount {
    fn mount(device: &str, dir: &Path, options: &str) -> io::Result<Self> {
        run("mount", &["-o", options, device, path_str(dir)?])?;
        Ok(FsMount(dir.to_owned()))
    }
}

impl Drop for FsMount {
    fn drop(&mut self) {
        if let Ok(dir) = path_str(&self.0) {
            let _ = run("umount", &[dir]);
        }
    }
}

/// A frozen filesystem, thawed on drop: a panic must never leave it frozen (every writer,
/// including the test harness, would hang).
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn freeze(dir: &'a Path) -> io::Result<Self> {
        run("fsfreeze", &["-f", path_str(dir)?])?;
        Ok(Frozen(dir))
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if let Ok(dir) = path_str(self.0) {
            let _ = run("fsfreeze", &["-u", dir]);
        }
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A new volume holding snapshot `snapshot` of `volume` (only its allocated ranges are copied).
fn clone_snapshot(
    engine: &Engine,
    volume: &Arc<Volume>,
    snapshot: &str,
    name: &str,
) -> io::Result<Arc<Volume>> {
    let reader = volume.snapshot_reader(snapshot).map_err(io::Error::other)?;
    let clone = create_volume(engine, name, reader.size())?;
    let mut buf = vec![0u8; MIB as usize];
    for extent in reader.allocated_extents(4096).map_err(io::Error::other)? {
        let mut offset = extent.offset;
        while offset < extent.end() {
            let len = (extent.end() - offset).min(MIB) as usize;
            reader.read_at(offset, &mut buf[..len])?;
            clone.write_at(offset, &buf[..len])?;
            offset += len as u64;
        }
    }
    Ok(clone)
}

fn create_volume(engine: &Engine, name: &str, size: u64) -> io::Result<Arc<Volume>> {
    engine
        .create_volume(name, size, None)
        .map_err(io::Error::other)
}

#[test]
fn file_io_reaches_the_volume() -> TestResult {
    if !fuse_available() {
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    let mount_dir = tempfile::tempdir()?;
    let engine = Engine::open(data.path())?;
    let volume = create_volume(&engine, "vol-a", 8 * MIB)?;
    let mounted = MountedVolumes::mount(mount_dir.path(), &FuseOptions::default())?;
    let path = mounted.add("vol-a", volume.clone())?;

    assert_eq!(fs::metadata(&path)?.len(), 8 * MIB);
    let listed: Vec<String> = fs::read_dir(mount_dir.path())?
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(listed, vec!["vol-a".to_owned()]);

    // Unaligned write through the file lands in the volume.
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let written = pattern(1, 3 * 4096 + 123);
    file.write_all_at(&written, 4096 * 5 + 17)?;
    file.sync_all()?;
    let mut seen = vec![0u8; written.len()];
    volume.read_at(4096 * 5 + 17, &mut seen)?;
    assert!(
        seen == written,
        "volume does not hold what was written through FUSE"
    );

    // A write into the volume is visible through the file (no stale page cache: direct I/O).
    let direct = pattern(2, 2 * MIB as usize);
    volume.write_at(MIB, &direct)?;
    let mut through_fuse = vec![0u8; direct.len()];
    file.read_exact_at(&mut through_fuse, MIB)?;
    assert!(through_fuse == direct, "FUSE read differs from the volume");

    // Punching a hole makes the range read as zeros.
    rustix::fs::fallocate(
        &file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        MIB + 4096,
        8192,
    )?;
    let mut punched = vec![1u8; 8192];
    volume.read_at(MIB + 4096, &mut punched)?;
    assert!(
        punched.iter().all(|&byte| byte == 0),
        "punched range is not zero"
    );
    let mut after = vec![0u8; 4096];
    volume.read_at(MIB + 4096 + 8192, &mut after)?;
    assert_eq!(after, direct[4096 + 8192..2 * 4096 + 8192]);

    // The end of the volume is the end of the file.
    let past_end = file
        .write_at(b"x", 8 * MIB)
        .map_err(|err| err.raw_os_error());
    assert_eq!(past_end, Err(Some(libc_enospc())));
    let mut tail = [0u8; 16];
    assert_eq!(file.read_at(&mut tail, 8 * MIB - 8)?, 8);

    // Nothing can be created, deleted or resized through the mount.
    assert!(File::create(mount_dir.path().join("new")).is_err());
    assert!(fs::remove_file(&path).is_err());
    assert!(file.set_len(4 * MIB).is_err());

    // A volume that is open cannot be removed; once closed it can, and its file disappears.
    match mounted.remove("vol-a") {
        Err(FrontendError::VolumeOpen { open_handles, .. }) => assert!(open_handles >= 1),
        Err(other) => panic!("remove of an open volume failed with {other}"),
        Ok(_) => panic!("an open volume was removed"),
    }
    drop(file);
    // release is asynchronous to close(2); wait for it briefly.
    let mut removed = mounted.remove("vol-a");
    for _ in 0..50 {
        if !matches!(removed, Err(FrontendError::VolumeOpen { .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        removed = mounted.remove("vol-a");
    }
    let removed = removed?;
    assert_eq!(removed.size(), 8 * MIB);
    assert!(!path.exists());
    mounted.add("vol-a", removed.clone())?;
    assert!(matches!(
        mounted.add("vol-a", removed),
        Err(FrontendError::AlreadyServed { .. })
    ));
    mounted.unmount()?;
    Ok(())
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

#[test]
fn snapshot_of_a_mounted_ext4_keeps_the_old_files() -> TestResult {
    if !fuse_available() {
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    let mount_dir = tempfile::tempdir()?;
    let fs_dir = tempfile::tempdir()?;
    let snap_fs_dir = tempfile::tempdir()?;
    let engine = Engine::open(data.path())?;
    let volume = create_volume(&engine, "pvc-1", 64 * MIB)?;
    let mounted = MountedVolumes::mount(mount_dir.path(), &FuseOptions::default())?;
    let file = mounted.add("pvc-1", volume.clone())?;

    let device = LoopDevice::attach(&file, false)?;
    run("mkfs.ext4", &["-q", "-F", &device.0])?;
    let live = FsMount::mount(&device.0, fs_dir.path(), "rw")?;

    let kept = pattern(10, 3 * MIB as usize);
    let doomed = pattern(11, 200_000);
    let overwritten = pattern(12, 100_000);
    fs::write(fs_dir.path().join("kept.bin"), &kept)?;
    fs::write(fs_dir.path().join("doomed.bin"), &doomed)?;
    fs::write(fs_dir.path().join("overwritten.bin"), &overwritten)?;
    fs::create_dir(fs_dir.path().join("dir"))?;
    for index in 0..20u64 {
        fs::write(
            fs_dir.path().join(format!("dir/{index}.txt")),
            format!("file {index}\n"),
        )?;
    }
    run("sync", &["-f", path_str(fs_dir.path())?])?;

    let snapshot = {
        let _frozen = Frozen::freeze(fs_dir.path())?;
        let labels = BTreeMap::from([("reason".to_owned(), "fuse-test".to_owned())]);
        volume.snapshot("before-changes", labels)?
    };
    assert_eq!(snapshot.name, "before-changes");

    // Keep using the filesystem: delete, overwrite, add.
    fs::remove_file(fs_dir.path().join("doomed.bin"))?;
    fs::remove_dir_all(fs_dir.path().join("dir"))?;
    let replacement = pattern(13, 150_000);
    fs::write(fs_dir.path().join("overwritten.bin"), &replacement)?;
    fs::write(fs_dir.path().join("added.bin"), pattern(14, 500_000))?;
    run("sync", &["-f", path_str(fs_dir.path())?])?;
    assert!(volume.head_changed_bytes()? > 0);
    assert!(!fs_dir.path().join("doomed.bin").exists());

    // The snapshot's view, copied into a new volume served next to the live one, is a clean
    // ext4 with the old files.
    let clone = clone_snapshot(&engine, &volume, "before-changes", "pvc-1-clone")?;
    let clone_file = mounted.add("pvc-1-clone", clone)?;
    let snap_device = LoopDevice::attach(&clone_file, true)?;
    run("e2fsck", &["-f", "-n", &snap_device.0])?;
    let snap_fs = FsMount::mount(&snap_device.0, snap_fs_dir.path(), "ro,noload")?;
    let old = snap_fs_dir.path();
    assert!(fs::read(old.join("kept.bin"))? == kept);
    assert!(fs::read(old.join("doomed.bin"))? == doomed);
    assert!(fs::read(old.join("overwritten.bin"))? == overwritten);
    assert!(!old.join("added.bin").exists());
    for index in 0..20u64 {
        assert_eq!(
            fs::read_to_string(old.join(format!("dir/{index}.txt")))?,
            format!("file {index}\n")
        );
    }

    // The live filesystem has the new state.
    assert!(fs::read(fs_dir.path().join("overwritten.bin"))? == replacement);
    assert!(fs::read(fs_dir.path().join("kept.bin"))? == kept);

    drop(snap_fs);
    drop(snap_device);
    drop(live);
    // The live filesystem is consistent too once unmounted.
    run("e2fsck", &["-f", "-n", &device.0])?;
    drop(device);
    mounted.unmount()?;
    Ok(())
}

/// Snapshots taken while a writer streams through the FUSE file never deadlock, and each one
/// holds a prefix of the writes: block `i` is only there if every block before it is too
/// (writes are sequential and each is acknowledged before the next starts).
#[test]
fn snapshots_during_fuse_writes_hold_a_prefix_of_them() -> TestResult {
    if !fuse_available() {
        return Ok(());
    }
    const BLOCKS: u64 = 2048;
    let data = tempfile::tempdir()?;
    let mount_dir = tempfile::tempdir()?;
    let engine = Engine::open(data.path())?;
    let volume = create_volume(&engine, "busy", BLOCKS * 4096)?;
    let mounted = MountedVolumes::mount(mount_dir.path(), &FuseOptions::default())?;
    let path = mounted.add("busy", volume.clone())?;
    let block_bytes = |index: u64| vec![(index % 251) as u8 + 1; 4096];

    let writer = std::thread::spawn(move || -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        for index in 0..BLOCKS {
            file.write_all_at(&block_bytes(index), index * 4096)?;
        }
        file.sync_all()
    });
    let mut snapshots = Vec::new();
    while !writer.is_finished() {
        let name = format!("s{}", snapshots.len());
        volume.snapshot(&name, BTreeMap::new())?;
        snapshots.push(name);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    writer
        .join()
        .map_err(|_| io::Error::other("writer thread panicked"))??;
    assert!(snapshots.len() >= 2, "only {} snapshots", snapshots.len());

    let mut prefixes = Vec::new();
    for name in &snapshots {
        let reader = volume.snapshot_reader(name)?;
        let mut block = vec![0u8; 4096];
        let mut prefix = None;
        for index in 0..BLOCKS {
            reader.read_at(index * 4096, &mut block)?;
            match prefix {
                None if block == block_bytes(index) => {}
                None => {
                    assert!(block.iter().all(|&b| b == 0), "{name}: block {index} torn");
                    prefix = Some(index);
                }
                Some(end) => assert!(
                    block.iter().all(|&b| b == 0),
                    "{name}: block {index} present after missing block {end}"
                ),
            }
        }
        prefixes.push(prefix.unwrap_or(BLOCKS));
    }
    // Later snapshots never hold fewer writes.
    assert!(
        prefixes.windows(2).all(|pair| pair[0] <= pair[1]),
        "{prefixes:?}"
    );
    let mut all = vec![0u8; 4096];
    for index in 0..BLOCKS {
        volume.read_at(index * 4096, &mut all)?;
        assert_eq!(all, block_bytes(index), "head block {index}");
    }
    mounted.unmount()?;
    Ok(())
}

/// Options and mount points that cannot work are refused before anything is mounted.
#[test]
fn unusable_mount_requests_are_refused() -> TestResult {
    let mount_dir = tempfile::tempdir()?;
    let no_threads = FuseOptions {
        threads: 0,
        ..FuseOptions::default()
    };
    assert!(matches!(
        MountedVolumes::mount(mount_dir.path(), &no_threads),
        Err(FrontendError::InvalidOptions { .. })
    ));
    assert!(matches!(
        MountedVolumes::mount(&mount_dir.path().join("missing"), &FuseOptions::default()),
        Err(FrontendError::MountPointUnusable { .. })
    ));
    let file = mount_dir.path().join("file");
    fs::write(&file, b"")?;
    assert!(matches!(
        MountedVolumes::mount(&file, &FuseOptions::default()),
        Err(FrontendError::MountPointNotDirectory { .. })
    ));
    Ok(())
}

/// Whether `dir` is a mount point, read from this process's mount table.
fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let table = fs::read_to_string("/proc/self/mountinfo")?;
    let dir = path_str(dir)?;
    Ok(table
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(dir)))
}

/// Not a test: the child process of `missing_and_dead_mount_points_are_made_usable`, which
/// serves an empty volume directory at `BULWARK_FUSE_HELPER_DIR` until it is killed. Without
/// that variable (a plain `--ignored` run) it has nothing to do.
#[test]
#[ignore = "run by missing_and_dead_mount_points_are_made_usable as its FUSE server"]
fn fuse_server_until_killed() -> TestResult {
    let Some(dir) = std::env::var_os("BULWARK_FUSE_HELPER_DIR") else {
        return Ok(());
    };
    let _mounted = MountedVolumes::mount(Path::new(&dir), &FuseOptions::default())?;
    std::thread::sleep(std::time::Duration::from_secs(600));
    Ok(())
}

/// An agent's mount directory may not exist yet (first start with the default `<data>/mnt`)
/// or may hold the mount of an agent killed with SIGKILL; both must be made usable.
#[test]
fn missing_and_dead_mount_points_are_made_usable() -> TestResult {
    if !fuse_available() {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let dir = root.path().join("data/mnt");
    prepare_mount_point(&dir)?;
    assert!(
        dir.is_dir(),
        "the missing mount point and its parent are created"
    );

    let mut server = Command::new(std::env::current_exe()?)
        .args(["--exact", "fuse_server_until_killed", "--ignored"])
        .env("BULWARK_FUSE_HELPER_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !is_mount_point(&dir)? {
        if let Some(status) = server.try_wait()? {
            return Err(
                format!("the FUSE server process exited ({status}) before mounting").into(),
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the FUSE server process did not mount {} within 60 s",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.kill()?;
    server.wait()?;
    let dead = fs::metadata(&dir).expect_err("a mount without its server cannot be used");
    assert_eq!(
        dead.raw_os_error(),
        Some(rustix::io::Errno::NOTCONN.raw_os_error())
    );

    prepare_mount_point(&dir)?;
    assert!(!is_mount_point(&dir)?, "the dead mount is gone");
    let engine = Engine::open(root.path().join("data/engine"))?;
    let mounted = MountedVolumes::mount(&dir, &FuseOptions::default())?;
    mounted.add("v1", create_volume(&engine, "v1", MIB)?)?;
    assert_eq!(fs::metadata(dir.join("v1"))?.len(), MIB);
    mounted.remove("v1")?;
    mounted.unmount()?;
    Ok(())
}
