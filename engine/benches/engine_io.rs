//! Engine benchmark (harness = false): prints figures and ratios against baselines measured in
//! the same run.
//!
//! 1. I/O: sequential and random 4 KiB / 1 MiB reads and writes through `Volume::read_at` /
//!    `write_at` and through the volume's FUSE file, each as a ratio to a plain sparse file on
//!    the same disk (baseline).
//! 2. Snapshot time of a 64 GiB volume vs a 1 GiB volume (baseline), same data written.
//! 3. `changed_extents` time vs the number of changed extents (baseline: 10 extents).
//!
//! Run: `cargo bench -p engine --bench engine_io` (a few minutes; root and /dev/fuse for the
//! FUSE column). `BULWARK_BENCH_QUICK=1` runs smaller sizes in well under a minute.
//! `BULWARK_BENCH_DIR` picks the scratch directory (default: the system temp dir).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::frontend::{FuseOptions, MountedVolumes};
use engine::{Engine, Volume};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

type BenchResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Sizes of one run.
struct Scale {
    io_volume: u64,
    sequential_bytes: u64,
    random_4k_ops: u64,
    random_1m_ops: u64,
    snapshot_rounds: usize,
    /// Runs of each I/O workload; the median is reported (the machine may be shared).
    io_repeats: usize,
    extent_counts: &'static [u64],
}

const FULL: Scale = Scale {
    io_volume: GIB,
    sequential_bytes: 512 * MIB,
    random_4k_ops: 40_000,
    random_1m_ops: 512,
    snapshot_rounds: 20,
    io_repeats: 3,
    extent_counts: &[10, 100, 1_000, 10_000, 50_000],
};

const QUICK: Scale = Scale {
    io_volume: 256 * MIB,
    sequential_bytes: 64 * MIB,
    random_4k_ops: 4_000,
    random_1m_ops: 64,
    snapshot_rounds: 5,
    io_repeats: 1,
    extent_counts: &[10, 100, 1_000],
};

/// Something we can pread/pwrite.
trait Target {
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn sync(&self) -> io::Result<()>;
}

impl Target for File {
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl Target for Arc<Volume> {
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.read_at(offset, buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.flush()
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    Sequential,
    Random,
}

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    pattern: Pattern,
    block: u64,
    write: bool,
}

const WORKLOADS: [Workload; 8] = [
    Workload {
        name: "seq write 1 MiB",
        pattern: Pattern::Sequential,
        block: MIB,
        write: true,
    },
    Workload {
        name: "seq read 1 MiB",
        pattern: Pattern::Sequential,
        block: MIB,
        write: false,
    },
    Workload {
        name: "seq write 4 KiB",
        pattern: Pattern::Sequential,
        block: 4 * KIB,
        write: true,
    },
    Workload {
        name: "seq read 4 KiB",
        pattern: Pattern::Sequential,
        block: 4 * KIB,
        write: false,
    },
    Workload {
        name: "rand write 1 MiB",
        pattern: Pattern::Random,
        block: MIB,
        write: true,
    },
    Workload {
        name: "rand read 1 MiB",
        pattern: Pattern::Random,
        block: MIB,
        write: false,
    },
    Workload {
        name: "rand write 4 KiB",
        pattern: Pattern::Random,
        block: 4 * KIB,
        write: true,
    },
    Workload {
        name: "rand read 4 KiB",
        pattern: Pattern::Random,
        block: 4 * KIB,
        write: false,
    },
];

/// Offsets of one workload: the same sequence for every target.
fn offsets(workload: Workload, scale: &Scale) -> Vec<u64> {
    let ops = match (workload.pattern, workload.block) {
        (Pattern::Sequential, block) => scale.sequential_bytes / block,
        (Pattern::Random, MIB) => scale.random_1m_ops,
        (Pattern::Random, _) => scale.random_4k_ops,
    };
    let slots = scale.io_volume / workload.block;
    let mut rng = StdRng::seed_from_u64(workload.block ^ u64::from(workload.write));
    (0..ops)
        .map(|index| match workload.pattern {
            Pattern::Sequential => (index % slots) * workload.block,
            Pattern::Random => rng.random_range(0..slots) * workload.block,
        })
        .collect()
}

/// Median MiB/s of `repeats` runs of `workload` on `target`.
fn median_rate(
    target: &dyn Target,
    workload: Workload,
    offsets: &[u64],
    repeats: usize,
) -> io::Result<f64> {
    let mut rates = (0..repeats.max(1))
        .map(|_| measure(target, workload, offsets))
        .collect::<io::Result<Vec<f64>>>()?;
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Runs `workload` on `target`; writes end with a sync (included in the time). Returns MiB/s.
fn measure(target: &dyn Target, workload: Workload, offsets: &[u64]) -> io::Result<f64> {
    let mut buf = vec![0u8; workload.block as usize];
    StdRng::seed_from_u64(7).fill(&mut buf[..]);
    let start = Instant::now();
    for &offset in offsets {
        if workload.write {
            target.write(offset, &buf)?;
        } else {
            target.read(offset, &mut buf)?;
        }
    }
    if workload.write {
        target.sync()?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok((offsets.len() as u64 * workload.block) as f64 / MIB as f64 / elapsed)
}

fn fuse_unavailable() -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse missing");
    }
    let root = tempfile::tempfile()
        .and_then(|file| file.metadata())
        .is_ok_and(|metadata| metadata.uid() == 0);
    (!root).then_some("not root")
}

fn io_bench(scratch: &Path, scale: &Scale) -> BenchResult {
    println!(
        "== I/O: MiB/s (median of {}) per target; ratio = target / plain sparse file (baseline); \
         volume {} MiB, all targets filled first",
        scale.io_repeats,
        scale.io_volume / MIB
    );
    let baseline_path = scratch.join("baseline.img");
    let baseline = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&baseline_path)?;
    baseline.set_len(scale.io_volume)?;

    let engine = Engine::open(scratch.join("data"))?;
    let volume = engine.create_volume("bench-direct", scale.io_volume, None)?;
    let fuse_volume = engine.create_volume("bench-fuse", scale.io_volume, None)?;

    let mount_dir = scratch.join("mnt");
    std::fs::create_dir(&mount_dir)?;
    let fuse = match fuse_unavailable() {
        Some(reason) => {
            println!("   (FUSE column skipped: {reason})");
            None
        }
        None => {
            let mounted = MountedVolumes::mount(&mount_dir, &FuseOptions::default())?;
            let path = mounted.add("bench-fuse", fuse_volume.clone())?;
            let file = OpenOptions::new().read(true).write(true).open(path)?;
            Some((mounted, file))
        }
    };

    // Fill every target first, so reads hit data (not holes, which a volume answers without
    // touching a disk) and writes overwrite allocated blocks everywhere.
    let fill = Workload {
        name: "fill",
        pattern: Pattern::Sequential,
        block: MIB,
        write: true,
    };
    let fill_offsets: Vec<u64> = (0..scale.io_volume / MIB)
        .map(|index| index * MIB)
        .collect();
    measure(&baseline, fill, &fill_offsets)?;
    measure(&volume, fill, &fill_offsets)?;
    if let Some((_, file)) = &fuse {
        measure(file, fill, &fill_offsets)?;
    }
    println!(
        "{:<18} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "workload", "plain", "volume", "ratio", "fuse", "ratio"
    );
    for workload in WORKLOADS {
        let offsets = offsets(workload, scale);
        let repeats = scale.io_repeats;
        let plain = median_rate(&baseline, workload, &offsets, repeats)?;
        let direct = median_rate(&volume, workload, &offsets, repeats)?;
        let through_fuse = match &fuse {
            Some((_, file)) => Some(median_rate(file, workload, &offsets, repeats)?),
            None => None,
        };
        let fuse_cols = through_fuse.map_or_else(
            || format!("{:>10} {:>7}", "-", "-"),
            |mibs| format!("{mibs:>10.1} {:>7.2}", mibs / plain),
        );
        println!(
            "{:<18} {plain:>10.1} {direct:>10.1} {:>7.2} {fuse_cols}",
            workload.name,
            direct / plain
        );
    }
    drop(fuse);
    Ok(())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Median time of a snapshot of a `size` volume after writing the same 8 MiB each round.
fn snapshot_time(engine: &Engine, name: &str, size: u64, rounds: usize) -> BenchResult<Duration> {
    let volume = engine.create_volume(name, size, None)?;
    let data = vec![0x5au8; MIB as usize];
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        for chunk in 0..8u64 {
            // Spread over the volume, so a size-dependent snapshot would show.
            let offset = (size / 8) * chunk + round as u64 * MIB;
            volume.write_at(offset, &data)?;
        }
        let start = Instant::now();
        volume.snapshot(&format!("s{round}"), BTreeMap::new())?;
        samples.push(start.elapsed());
    }
    Ok(median(samples))
}

fn snapshot_bench(scratch: &Path, scale: &Scale) -> BenchResult {
    println!(
        "== snapshot: median of {} (8 MiB written before each)",
        scale.snapshot_rounds
    );
    let engine = Engine::open(scratch.join("snapshots"))?;
    let small = snapshot_time(&engine, "one-gib", GIB, scale.snapshot_rounds)?;
    let large = snapshot_time(&engine, "sixty-four-gib", 64 * GIB, scale.snapshot_rounds)?;
    println!(
        "   1 GiB volume (baseline): {:>9.3} ms",
        small.as_secs_f64() * 1e3
    );
    println!(
        "  64 GiB volume:            {:>9.3} ms   ratio {:.2}",
        large.as_secs_f64() * 1e3,
        large.as_secs_f64() / small.as_secs_f64()
    );
    Ok(())
}

fn changed_extents_bench(scratch: &Path, scale: &Scale) -> BenchResult {
    println!("== changed_extents(s0 -> s1, 4 KiB blocks): median of 5; ratio to 10 extents");
    let engine = Engine::open(scratch.join("extents"))?;
    let block = vec![0xa5u8; 4096];
    let mut baseline = None;
    for &count in scale.extent_counts {
        // Isolated 4 KiB blocks 64 KiB apart: `count` separate extents.
        let stride = 64 * KIB;
        let size = (count * stride).max(GIB);
        let volume = engine.create_volume(&format!("extents-{count}"), size, None)?;
        volume.snapshot("s0", BTreeMap::new())?;
        for index in 0..count {
            volume.write_at(index * stride, &block)?;
        }
        volume.snapshot("s1", BTreeMap::new())?;
        let mut samples = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let start = Instant::now();
            found = volume.changed_extents(Some("s0"), "s1", 4096)?.len();
            samples.push(start.elapsed());
        }
        if found as u64 != count {
            return Err(format!("changed_extents found {found} extents, wrote {count}").into());
        }
        let time = median(samples);
        let base = *baseline.get_or_insert(time);
        println!(
            "  {count:>6} extents: {:>10.3} ms  {:>7.2} µs/extent  ratio {:>8.1}",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e6 / count as f64,
            time.as_secs_f64() / base.as_secs_f64()
        );
        drop(volume);
        engine.delete_volume(&format!("extents-{count}"))?;
    }
    Ok(())
}

fn main() -> BenchResult {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let quick = std::env::var_os("BULWARK_BENCH_QUICK").is_some();
    let scale = if quick { &QUICK } else { &FULL };
    let scratch = match std::env::var_os("BULWARK_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "engine bench ({} mode) in {}",
        if quick { "quick" } else { "full" },
        scratch.path().display()
    );
    io_bench(scratch.path(), scale)?;
    snapshot_bench(scratch.path(), scale)?;
    changed_extents_bench(scratch.path(), scale)?;
    Ok(())
}
