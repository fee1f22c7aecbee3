//! Backup and restore of a synthetic sparse image to a local-directory target, side by side
//! with restic (the baseline) on the same image, in one run.
//!
//! Image (default 2 GiB): first half random bytes, next quarter allocated zeros, last quarter a
//! hole. Measured: full backup, incremental backup after rewriting 1% of the blocks, full
//! restore, incremental restore (restic 0.14 has none: its figure is a second full restore);
//! bytes read versus bytes changed; wall time, CPU time and peak RSS of each tool as a child
//! process (GNU `/usr/bin/time -f "%M %U %S"`). On a shared machine the CPU seconds are the
//! figure other load does not distort. Full backup and full restore run `BULWARK_BENCH_RUNS`
//! rounds (default 5) and report medians; every step starts with the page cache dropped (when
//! run as root), so both tools read from the device.
//!
//! Run: `cargo bench -p backupstore --bench backup_vs_restic`
//! Quick check: `BULWARK_BENCH_MIB=256 cargo bench -p backupstore --bench backup_vs_restic`
//! Work directory: `$BULWARK_BENCH_DIR` (default: a temporary directory, removed afterwards).
//!
//! The incremental backup reads through a diff source listing the rewritten blocks, as the
//! engine's snapshot diff does; restic has no such input and rescans the whole file.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backupstore::backup::{BackupMode, BackupOptions};
use backupstore::restore::RestoreOptions;
use backupstore::target::{self, ConnectOptions, Credentials, TargetUrl};
use backupstore::{BlockSource, Extent, FileSink, FileSource, Store};
use rand::{RngCore, SeedableRng};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Our processes run as the manifests run them: `MALLOC_ARENA_MAX=2` (deploy/agent.yaml). With
/// glibc's default of 8 arenas per core, threads that handle 2 MiB block buffers keep about
/// 40-60 MiB more resident (measured here: full backup 116 → 69 MiB, full restore 127 → 93 MiB).
const OURS_ENV: &[(&str, &str)] = &[("MALLOC_ARENA_MAX", "2")];

const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 2 * MIB;
const VOLUME: &str = "bench-vol";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..])
    } else if args.iter().any(|a| a == "--bench") {
        parent()
    } else {
        // `cargo test --all-targets` runs bench binaries without `--bench`: a multi-minute,
        // multi-GiB run does not belong in the test suite.
        println!(
            "backup_vs_restic: run with `cargo bench -p backupstore --bench backup_vs_restic`"
        );
        Ok(())
    };
    if let Err(error) = result {
        eprintln!("bench failed: {error}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- our side, in a child process

/// A snapshot diff: only the listed blocks changed since the previous backup.
struct ChangedBlocks {
    file: FileSource,
    offsets: Vec<u64>,
}

impl BlockSource for ChangedBlocks {
    fn size(&self) -> u64 {
        self.file.size()
    }
    fn extents(&self, block_size: u64) -> std::io::Result<Vec<Extent>> {
        Ok(self
            .offsets
            .iter()
            .map(|&offset| Extent {
                offset,
                len: block_size.min(self.size() - offset),
            })
            .collect())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_at(offset, buf)
    }
}

fn child(args: &[String]) -> BoxResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let [op, store_dir, rest @ ..] = args else {
            return Err("child needs an operation and a store directory".into());
        };
        let url = TargetUrl::parse(&format!("file://{store_dir}"))?;
        let (object_store, root) =
            target::connect(&url, &Credentials::default(), &ConnectOptions::default()).await?;
        let store = Store::new(object_store, root);
        let started = Instant::now();
        let report = match (op.as_str(), rest) {
            ("backup", [image, name, changed @ ..]) => {
                let file = FileSource::open(Path::new(image))?;
                let source: Arc<dyn BlockSource> = match changed {
                    [] => Arc::new(file),
                    [list] => Arc::new(ChangedBlocks {
                        file,
                        offsets: std::fs::read_to_string(list)?
                            .lines()
                            .map(str::parse)
                            .collect::<Result<_, _>>()?,
                    }),
                    _ => return Err("backup takes at most one changed-block list".into()),
                };
                let mut options = BackupOptions::new(VOLUME, format!("snap-{name}"));
                options.backup_name = Some(name.clone());
                options.mode = BackupMode::Incremental;
                let outcome = store.backup(source, options).await?;
                let c = outcome.counters;
                serde_json::json!({
                    "bytes_read": c.bytes_read, "bytes_changed": c.bytes_changed,
                    "bytes_uploaded": c.bytes_uploaded, "blocks_new": c.blocks_new,
                })
            }
            ("backup-warm", [image, prime, name, list]) => {
                // As the node agent runs it: one long-lived handle keeps the volume's shared lock
                // between operations. `prime` (an empty snapshot diff) stands for the agent's
                // previous operation; only the backup after it is timed.
                let store = store.with_lock_linger(backupstore::store::MAX_LOCK_LINGER);
                let empty = ChangedBlocks {
                    file: FileSource::open(Path::new(image))?,
                    offsets: Vec::new(),
                };
                let mut options = BackupOptions::new(VOLUME, format!("snap-{prime}"));
                options.backup_name = Some(prime.clone());
                let prime_started = Instant::now();
                store.backup(Arc::new(empty), options).await?;
                let prime_secs = prime_started.elapsed().as_secs_f64();
                let changed = ChangedBlocks {
                    file: FileSource::open(Path::new(image))?,
                    offsets: std::fs::read_to_string(list)?
                        .lines()
                        .map(str::parse)
                        .collect::<Result<_, _>>()?,
                };
                let mut options = BackupOptions::new(VOLUME, format!("snap-{name}"));
                options.backup_name = Some(name.clone());
                let warm_started = Instant::now();
                let outcome = store.backup(Arc::new(changed), options).await?;
                let warm_secs = warm_started.elapsed().as_secs_f64();
                store.close().await?;
                let c = outcome.counters;
                serde_json::json!({
                    "bytes_read": c.bytes_read, "bytes_uploaded": c.bytes_uploaded,
                    "blocks_new": c.blocks_new, "prime_secs": prime_secs, "warm_secs": warm_secs,
                })
            }
            ("restore", [name, out]) => {
                let size = store.restore_size(VOLUME, name).await?;
                let sink = FileSink::create(Path::new(out), size)?;
                let p = store
                    .restore(VOLUME, name, Arc::new(sink), RestoreOptions::default())
                    .await?;
                serde_json::json!({"bytes_fetched": p.bytes_fetched, "bytes_written": p.bytes_written})
            }
            ("restore-inc", [from, to, out]) => {
                let size = store.restore_size(VOLUME, to).await?;
                let sink = FileSink::open(Path::new(out), size)?;
                let p = store
                    .restore_incremental(VOLUME, from, to, Arc::new(sink), RestoreOptions::default())
                    .await?;
                serde_json::json!({"bytes_fetched": p.bytes_fetched, "bytes_written": p.bytes_written,
                    "blocks_zeroed": p.blocks_zeroed})
            }
            _ => return Err(format!("unknown child operation {op} {rest:?}").into()),
        };
        let mut report = report;
        report["secs"] = serde_json::json!(started.elapsed().as_secs_f64());
        println!("{report}");
        Ok(())
    })
}

// ---------------------------------------------------------------- the parent: set-up and table

struct Measured {
    wall: Duration,
    peak_rss_kib: u64,
    /// User plus system CPU seconds: what the work costs, whatever else runs on the machine.
    cpu_secs: f64,
    stdout: String,
    /// A `sync` right after the process ended: the writes it left in the page cache. Ours
    /// syncs before it reports success; restic's restore does not.
    settle: Duration,
}

/// Run `command` under GNU time, returning wall time (measured here), peak RSS and stdout.
fn measure(
    work: &Path,
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> BoxResult<Measured> {
    let rss_file = work.join("rss.txt");
    // Same start for every step of both tools: the previous step's dirty pages written back,
    // the page cache dropped (each tool reads what it stored, and the image, from the device,
    // as a restore days after the backup does; otherwise whichever tool wrote through the page
    // cache would restore from memory), and a moment to settle.
    Command::new("sync").status()?;
    drop_page_cache();
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()?;
    let wall = started.elapsed();
    let settle_started = Instant::now();
    Command::new("sync").status()?;
    let settle = settle_started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let usage = std::fs::read_to_string(&rss_file)?;
    let fields: Vec<&str> = usage
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let [rss, user, system] = fields[..] else {
        return Err(format!("unexpected GNU time output {usage:?}").into());
    };
    let peak_rss_kib = rss.parse()?;
    let cpu_secs = user.parse::<f64>()? + system.parse::<f64>()?;
    Ok(Measured {
        wall,
        peak_rss_kib,
        cpu_secs,
        stdout: String::from_utf8(output.stdout)?,
        settle,
    })
}

/// Our full restore of `backup` into `out`, measured, then checked against `image`.
fn our_checked_restore(
    work: &Path,
    store: &str,
    backup: &str,
    out: &Path,
    image: &Path,
) -> BoxResult<Measured> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().ok_or("bench path is not UTF-8")?;
    let out_s = out.to_str().ok_or("non-UTF-8 path")?;
    let measured = measure(
        work,
        exe,
        &["--child", "restore", store, backup, out_s],
        OURS_ENV,
    )?;
    if !same_content(image, out)? {
        return Err(format!("our full restore of {backup} differs from the image").into());
    }
    Ok(measured)
}

/// `restic restore latest --target <target>`, measured.
fn run_restic_restore(work: &Path, target: &Path, env: &[(&str, &str)]) -> BoxResult<Measured> {
    let target = target.to_str().ok_or("non-UTF-8 path")?;
    measure(
        work,
        "restic",
        &["restore", "latest", "--target", target],
        env,
    )
}

/// Creates a restic repository at `repo`; returns the environment that points restic at it.
fn init_restic(repo: &Path, cache: &Path) -> BoxResult<Vec<(&'static str, String)>> {
    let path = |p: &Path| p.to_str().map(str::to_owned).ok_or("non-UTF-8 path");
    let env = vec![
        ("RESTIC_REPOSITORY", path(repo)?),
        ("RESTIC_PASSWORD", "bench".to_owned()),
        ("RESTIC_CACHE_DIR", path(cache)?),
    ];
    let status = Command::new("restic")
        .args(["init", "--repository-version", "2"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err("restic init failed".into());
    }
    Ok(env)
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Drops clean page-cache pages (needs root; without it every step runs with whatever is
/// cached, as announced at the start).
fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

fn json_field(stdout: &str, field: &str) -> BoxResult<u64> {
    let line = stdout.lines().last().ok_or("no output")?;
    let value: serde_json::Value = serde_json::from_str(line)?;
    value[field]
        .as_u64()
        .ok_or_else(|| format!("no {field} in {line}").into())
}

/// restic's `--json` summary line.
fn restic_summary(stdout: &str) -> BoxResult<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .ok_or_else(|| "restic printed no summary".into())
}

fn write_image(path: &Path, size: u64) -> BoxResult<()> {
    let mut file = File::create(path)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut chunk = vec![0u8; 8 * MIB as usize];
    let random_end = size / 2;
    let zeros_end = size / 4 * 3;
    let mut written = 0;
    while written < random_end {
        let n = (random_end - written).min(chunk.len() as u64) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    chunk.fill(0);
    while written < zeros_end {
        let n = (zeros_end - written).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    file.set_len(size)?; // the last quarter is a hole
    file.sync_all()?;
    Ok(())
}

/// Rewrite 1% of the blocks (at least one), chosen among the allocated ones, with new random
/// bytes; returns their offsets, sorted.
fn change_blocks(path: &Path, size: u64, content_seed: u64) -> BoxResult<Vec<u64>> {
    let blocks = size.div_ceil(BLOCK);
    let allocated = (size / 4 * 3) / BLOCK;
    let count = (blocks / 100).max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc4a6e);
    let mut offsets: Vec<u64> = Vec::new();
    while (offsets.len() as u64) < count {
        let block = rng.next_u64() % allocated;
        if !offsets.contains(&(block * BLOCK)) {
            offsets.push(block * BLOCK);
        }
    }
    offsets.sort_unstable();
    let file = OpenOptions::new().write(true).open(path)?;
    // Same blocks each time, new bytes per `content_seed` (so nothing deduplicates).
    let mut rng = rand::rngs::StdRng::seed_from_u64(content_seed);
    let mut data = vec![0u8; BLOCK as usize];
    for &offset in &offsets {
        rng.fill_bytes(&mut data);
        file.write_all_at(&data, offset)?;
    }
    file.sync_all()?;
    Ok(offsets)
}

fn same_content(a: &Path, b: &Path) -> BoxResult<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let mut ba = vec![0u8; 8 * MIB as usize];
    let mut bb = vec![0u8; 8 * MIB as usize];
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {memory} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn mib_per_s(bytes: u64, wall: Duration) -> f64 {
    bytes as f64 / MIB as f64 / wall.as_secs_f64()
}

fn parent() -> BoxResult<()> {
    let size_mib: u64 = std::env::var("BULWARK_BENCH_MIB")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(2048);
    // This VM's speed varies by ±25 % between runs: full backups and restores are repeated and
    // the medians reported.
    let runs: usize = std::env::var("BULWARK_BENCH_RUNS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(5)
        .max(1);
    if size_mib < 8 || !size_mib.is_multiple_of(4) {
        return Err("BULWARK_BENCH_MIB must be a multiple of 4, at least 8".into());
    }
    let size = size_mib * MIB;
    let _temp;
    let work: PathBuf = match std::env::var_os("BULWARK_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            _temp = tempfile::tempdir()?;
            _temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work)?;
    let restic_version = Command::new("restic")
        .arg("version")
        .output()
        .map_err(|e| format!("restic not runnable ({e}); install it: apt-get install -y restic"))?;
    let restic_version = String::from_utf8_lossy(&restic_version.stdout)
        .trim()
        .to_string();

    let image = work.join("image.raw");
    let store_dir = work.join("bulwark-store");
    let repo = work.join("restic-repo");
    for dir in [&store_dir, &repo] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    std::fs::create_dir_all(&store_dir)?;
    println!("machine: {}", machine());
    println!("baseline: {restic_version}");
    println!("bulwark runs with MALLOC_ARENA_MAX=2, as the manifests and the image set it");
    println!(
        "image: {size_mib} MiB ({} MiB random, {} MiB allocated zeros, {} MiB hole), block 2 MiB, workers: backup {}, restore {}",
        size_mib / 2,
        size_mib / 4,
        size_mib / 4,
        backupstore::backup::default_workers(),
        backupstore::restore::default_restore_workers()
    );
    println!("full backup and full restore: median of {runs} rounds, each tool side by side");
    println!(
        "every step starts with {}",
        if drop_page_cache() {
            "the page cache dropped (cold: data is read from the device)"
        } else {
            "whatever the page cache holds (not root: cannot drop it)"
        }
    );
    write_image(&image, size)?;

    let exe = std::env::current_exe()?;
    let exe = exe.to_str().ok_or("bench path is not UTF-8")?;
    let (img, store) = (
        image.to_str().ok_or("non-UTF-8 path")?,
        store_dir.to_str().ok_or("non-UTF-8 path")?,
    );
    let cache = work.join("restic-cache");
    let restic_env = init_restic(&repo, &cache)?;
    let restic_env = &borrowed(&restic_env);

    // Full backups.
    let ours_full = measure(
        &work,
        exe,
        &["--child", "backup", store, img, "backup-full"],
        OURS_ENV,
    )?;
    let restic_full = measure(&work, "restic", &["backup", "--json", img], restic_env)?;

    // Rewrite 1% of the blocks, then incremental backups.
    let changed = change_blocks(&image, size, 1)?;
    let changed_bytes = changed.len() as u64 * BLOCK;
    let list = work.join("changed.txt");
    std::fs::write(
        &list,
        changed.iter().map(|o| format!("{o}\n")).collect::<String>(),
    )?;
    let list_s = list.to_str().ok_or("non-UTF-8 path")?;
    let ours_inc = measure(
        &work,
        exe,
        &["--child", "backup", store, img, "backup-inc", list_s],
        OURS_ENV,
    )?;
    let restic_inc = measure(&work, "restic", &["backup", "--json", img], restic_env)?;

    // Full restores of the latest backup, checked byte for byte.
    let ours_out = work.join("ours-restored.raw");
    let ours_out_s = ours_out.to_str().ok_or("non-UTF-8 path")?;
    let ours_restore = our_checked_restore(&work, store, "backup-inc", &ours_out, &image)?;
    let restic_out = work.join("restic-restored");
    let restic_restore = run_restic_restore(&work, &restic_out, restic_env)?;
    let restic_file = restic_out.join(image.strip_prefix("/")?);
    if !same_content(&image, &restic_file)? {
        return Err("restic's restore differs from the image".into());
    }
    std::fs::remove_dir_all(&restic_out)?;

    // Incremental restore: bring a restore of the full backup to the incremental one.
    std::fs::remove_file(&ours_out)?;
    measure(
        &work,
        exe,
        &["--child", "restore", store, "backup-full", ours_out_s],
        OURS_ENV,
    )?;
    let ours_inc_restore = measure(
        &work,
        exe,
        &[
            "--child",
            "restore-inc",
            store,
            "backup-full",
            "backup-inc",
            ours_out_s,
        ],
        OURS_ENV,
    )?;
    if !same_content(&image, &ours_out)? {
        return Err("our incremental restore differs from the image".into());
    }
    std::fs::remove_file(&ours_out)?;
    let restic_inc_restore = run_restic_restore(&work, &restic_out, restic_env)?;
    std::fs::remove_dir_all(&restic_out)?;

    // Warm incremental backup (long-lived handle, lock kept), after a second 1% rewrite.
    change_blocks(&image, size, 2)?;
    let ours_warm = measure(
        &work,
        exe,
        &[
            "--child",
            "backup-warm",
            store,
            img,
            "backup-prime",
            "backup-warm",
            list_s,
        ],
        OURS_ENV,
    )?;
    let ours_warm_secs = json_field_f64(&ours_warm.stdout, "warm_secs")?;
    let ours_prime_secs = json_field_f64(&ours_warm.stdout, "prime_secs")?;
    if json_field(&ours_warm.stdout, "blocks_new")? != changed.len() as u64 {
        return Err(format!(
            "warm backup uploaded other than the changed blocks: {}",
            ours_warm.stdout
        )
        .into());
    }

    // More rounds of the full backup and full restore, each into a fresh store and repository.
    let mut full_backups = vec![(ours_full, restic_full)];
    let mut full_restores = vec![(ours_restore, restic_restore)];
    let round_store = work.join("round-store");
    let round_repo = work.join("round-repo");
    let round_out = work.join("round-restored.raw");
    let round_restic_out = work.join("round-restic-restored");
    for _ in 1..runs {
        for dir in [&round_store, &round_repo, &round_restic_out] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
        }
        std::fs::create_dir_all(&round_store)?;
        let env = init_restic(&round_repo, &cache)?;
        let env = &borrowed(&env);
        let store_s = round_store.to_str().ok_or("non-UTF-8 path")?;
        let ours = measure(
            &work,
            exe,
            &["--child", "backup", store_s, img, "backup-round"],
            OURS_ENV,
        )?;
        let theirs = measure(&work, "restic", &["backup", "--json", img], env)?;
        full_backups.push((ours, theirs));
        let ours = our_checked_restore(&work, store_s, "backup-round", &round_out, &image)?;
        std::fs::remove_file(&round_out)?;
        let theirs = run_restic_restore(&work, &round_restic_out, env)?;
        full_restores.push((ours, theirs));
    }
    for dir in [&round_store, &round_repo, &round_restic_out] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    let per_round = |rounds: &[(Measured, Measured)]| {
        rounds
            .iter()
            .map(|(o, t)| format!("{:.2}x", t.wall.as_secs_f64() / o.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let full_backup_rounds = per_round(&full_backups);
    let full_restore_rounds = per_round(&full_restores);
    let full_restore_durable_rounds = full_restores
        .iter()
        .map(|(o, t)| {
            format!(
                "{:.2}x",
                (t.wall + t.settle).as_secs_f64() / (o.wall + o.settle).as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let (ours_full, restic_full) = medians(full_backups);
    let (ours_restore, restic_restore) = medians(full_restores);

    let restic_full_read = restic_summary(&restic_full.stdout)?["total_bytes_processed"]
        .as_u64()
        .unwrap_or(0);
    let restic_inc_read = restic_summary(&restic_inc.stdout)?["total_bytes_processed"]
        .as_u64()
        .unwrap_or(0);
    let ours_inc_read = json_field(&ours_inc.stdout, "bytes_read")?;
    let ours_inc_fetched = json_field(&ours_inc_restore.stdout, "bytes_fetched")?;

    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>9}",
        "metric", "bulwark", "restic", "ratio"
    );
    let row = |name: &str, ours: f64, theirs: f64, higher_is_better: bool| {
        let ratio = if higher_is_better {
            ours / theirs
        } else {
            theirs / ours
        };
        println!("{name:<44} {ours:>14.2} {theirs:>14.2} {ratio:>8.2}x");
    };
    // CPU time and peak memory of one phase, both lower-is-better.
    let resources = |phase: &str, ours: &Measured, theirs: &Measured| {
        row(
            &format!("{phase}, CPU s (user+sys)"),
            ours.cpu_secs,
            theirs.cpu_secs,
            false,
        );
        let mib = |m: &Measured| m.peak_rss_kib as f64 / 1024.0;
        row(
            &format!("{phase}, peak RSS MiB"),
            mib(ours),
            mib(theirs),
            false,
        );
    };
    row(
        "full backup, MiB/s of image",
        mib_per_s(size, ours_full.wall),
        mib_per_s(size, restic_full.wall),
        true,
    );
    resources("full backup", &ours_full, &restic_full);
    row(
        "incremental backup cold (1% blocks), s",
        ours_inc.wall.as_secs_f64(),
        restic_inc.wall.as_secs_f64(),
        false,
    );
    row(
        "incremental backup warm (lock kept), s",
        ours_warm_secs,
        restic_inc.wall.as_secs_f64(),
        false,
    );
    row(
        "incremental backup, MiB read",
        ours_inc_read as f64 / MIB as f64,
        restic_inc_read as f64 / MIB as f64,
        false,
    );
    resources("incremental backup", &ours_inc, &restic_inc);
    row(
        "full restore, MiB/s of image",
        mib_per_s(size, ours_restore.wall),
        mib_per_s(size, restic_restore.wall),
        true,
    );
    row(
        "full restore, data on disk (+ sync), MiB/s",
        mib_per_s(size, ours_restore.wall + ours_restore.settle),
        mib_per_s(size, restic_restore.wall + restic_restore.settle),
        true,
    );
    resources("full restore", &ours_restore, &restic_restore);
    row(
        "incremental restore, s (restic: full)",
        ours_inc_restore.wall.as_secs_f64(),
        restic_inc_restore.wall.as_secs_f64(),
        false,
    );
    resources(
        "incremental restore",
        &ours_inc_restore,
        &restic_inc_restore,
    );
    println!();
    println!(
        "changed: {} blocks = {:.1} MiB; bulwark incremental read {:.1} MiB ({:.2}x changed), restic read {:.1} MiB ({:.2}x changed)",
        changed.len(),
        changed_bytes as f64 / MIB as f64,
        ours_inc_read as f64 / MIB as f64,
        ours_inc_read as f64 / changed_bytes as f64,
        restic_inc_read as f64 / MIB as f64,
        restic_inc_read as f64 / changed_bytes as f64,
    );
    println!(
        "speed ratio per round (restic wall / bulwark wall): full backup {full_backup_rounds}; full restore {full_restore_rounds}; full restore with data on disk {full_restore_durable_rounds}"
    );
    println!(
        "full backup read: bulwark {:.1} MiB (holes skipped), restic {:.1} MiB",
        json_field(&ours_full.stdout, "bytes_read")? as f64 / MIB as f64,
        restic_full_read as f64 / MIB as f64
    );
    println!(
        "bulwark incremental restore fetched {:.1} MiB (compressed) for {:.1} MiB changed",
        ours_inc_fetched as f64 / MIB as f64,
        changed_bytes as f64 / MIB as f64
    );
    println!(
        "bulwark in-process times (excluding process start): full backup {:.2}s, incremental backup {:.2}s, full restore {:.2}s, incremental restore {:.2}s",
        secs(&ours_full.stdout),
        secs(&ours_inc.stdout),
        secs(&ours_restore.stdout),
        secs(&ours_inc_restore.stdout)
    );
    println!(
        "incremental backup cold = one-shot CLI process (includes the lock protocol's 2 s wait); warm = long-lived handle keeping its shared lock (idle timeout {:?}), as the node agent runs it: {:.3}s in-process after a previous operation that took {:.2}s",
        backupstore::store::MAX_LOCK_LINGER,
        ours_warm_secs,
        ours_prime_secs
    );
    Ok(())
}

/// Each tool's run of median wall time (rounds ran side by side; the medians are taken per tool).
fn medians(rounds: Vec<(Measured, Measured)>) -> (Measured, Measured) {
    let (mut ours, mut theirs): (Vec<Measured>, Vec<Measured>) = rounds.into_iter().unzip();
    ours.sort_by_key(|m| m.wall);
    theirs.sort_by_key(|m| m.wall);
    let middle = ours.len() / 2;
    (ours.swap_remove(middle), theirs.swap_remove(middle))
}

fn json_field_f64(stdout: &str, field: &str) -> BoxResult<f64> {
    let line = stdout.lines().last().ok_or("no output")?;
    let value: serde_json::Value = serde_json::from_str(line)?;
    value[field]
        .as_f64()
        .ok_or_else(|| format!("no {field} in {line}").into())
}

fn secs(stdout: &str) -> f64 {
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["secs"].as_f64())
        .unwrap_or(f64::NAN)
}
