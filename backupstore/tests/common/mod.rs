//! Shared test helpers: the fixture store, its source images (recreated in Rust), stores on
//! real temporary directories.
#![allow(dead_code)]

pub mod failing;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backupstore::Store;
use backupstore::lock::LockTimings;
use object_store::local::LocalFileSystem;

pub const MB: u64 = 1 << 20;

/// Python's `random.Random` (MT19937 seeded by `init_by_array`), enough for `getrandbits(8)`.
pub struct PyRandom {
    mt: [u32; 624],
    index: usize,
}

impl PyRandom {
    pub fn new(seed: u32) -> PyRandom {
        let mut r = PyRandom {
            mt: [0; 624],
            index: 624,
        };
        r.init_genrand(19650218);
        let key = [seed];
        let (mut i, mut j) = (1usize, 0usize);
        let n = 624;
        for _ in 0..n.max(key.len()) {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1664525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= n {
                r.mt[0] = r.mt[n - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..n - 1 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1566083941)).wrapping_sub(i as u32);
            i += 1;
            if i >= n {
                r.mt[0] = r.mt[n - 1];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            let prev = self.mt[i - 1] ^ (self.mt[i - 1] >> 30);
            self.mt[i] = 1812433253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(k + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    pub fn noise(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u32() >> 24) as u8).collect()
    }
}

pub fn text(tag: &str, n: usize) -> Vec<u8> {
    let line = format!("bulwark fixture {tag}\n").into_bytes();
    line.iter().copied().cycle().take(n).collect()
}

fn image(path: &Path, size: u64, pieces: &[(u64, &[u8])]) {
    let f = File::create(path).expect("create image");
    f.set_len(size).expect("size image");
    for (off, data) in pieces {
        f.write_all_at(data, *off).expect("write image");
    }
}

/// Recreates a.img, b.img and c.img of the fixture in `out` (port of make-images.py).
pub fn make_images(out: &Path) {
    let mb = MB as usize;
    let mut rng = PyRandom::new(20261122);
    let mut block0 = rng.noise(256 * 1024);
    block0.extend(text("block 0", 2 * mb - 256 * 1024));
    let zeros = vec![0u8; 2 * mb];
    let b3a = text("block 3 version A", 2 * mb);
    let b3b = text("block 3 version B", 2 * mb);
    let mut b5 = rng.noise(128 * 1024);
    b5.extend(text("block 5", 2 * mb - 128 * 1024));
    let half = text("block 6 first half", mb);
    image(
        &out.join("a.img"),
        16 * MB,
        &[
            (0, &block0),
            (2 * MB, &zeros),
            (6 * MB, &b3a),
            (12 * MB, &half),
        ],
    );
    image(
        &out.join("b.img"),
        16 * MB,
        &[
            (0, &block0),
            (2 * MB, &zeros),
            (6 * MB, &b3b),
            (10 * MB, &b5),
            (12 * MB, &half),
        ],
    );
    let mut c_head = rng.noise(64 * 1024);
    c_head.extend(text("c head", 3 * mb - 64 * 1024));
    image(
        &out.join("c.img"),
        32 * MB,
        &[(0, &c_head), (20 * MB, &b3a)],
    );
}

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/longhorn-store")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
            let mut perms = fs::metadata(&target).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            fs::set_permissions(&target, perms).expect("chmod");
        }
    }
}

/// A writable copy of the fixture store in `dir`. Its leftover lock files get an mtime an hour
/// in the past, as they have in the original (they are long expired).
pub fn copy_fixture(dir: &Path) {
    copy_tree(&fixture_dir().join("backupstore"), &dir.join("backupstore"));
    let old = SystemTime::now() - Duration::from_secs(3600);
    for vol in ["19/25/vol-lz4", "8b/14/vol-gzip"] {
        let locks = dir.join("backupstore/volumes").join(vol).join("locks");
        for entry in fs::read_dir(&locks).expect("locks") {
            let f = File::options()
                .write(true)
                .open(entry.expect("entry").path())
                .expect("open lock");
            f.set_modified(old).expect("set mtime");
        }
    }
}

/// Fast lock timings so tests do not sit in the protocol's 2 s waits.
pub fn fast_locks() -> LockTimings {
    LockTimings {
        check_wait: Duration::from_millis(20),
        retry_interval: Duration::from_millis(50),
        max_wait: Duration::from_secs(2),
        ..LockTimings::default()
    }
}

/// A store on a local directory, with fast lock timings.
pub fn local_store(dir: &Path) -> Store {
    fs::create_dir_all(dir).expect("mkdir store");
    let fs = LocalFileSystem::new_with_prefix(dir)
        .expect("local fs")
        .with_automatic_cleanup(true);
    Store::new(Arc::new(fs), object_store::path::Path::from("")).with_lock_timings(fast_locks())
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(fs::read(path).expect("read")))
}

/// Allocated bytes of a file (st_blocks × 512).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).expect("meta").blocks() * 512
}

/// Copies a sparse file keeping its holes (std::fs::copy may fill them).
pub fn sparse_copy(from: &Path, to: &Path) {
    let src = File::open(from).expect("open");
    let size = src.metadata().expect("meta").len();
    let dst = File::create(to).expect("create");
    dst.set_len(size).expect("size");
    for r in backupstore::file::data_ranges(&src, size).expect("ranges") {
        let mut buf = vec![0u8; r.len as usize];
        src.read_exact_at(&mut buf, r.offset).expect("read");
        dst.write_all_at(&buf, r.offset).expect("write");
    }
}

/// Deterministic bytes (xorshift), distinct per `seed`.
pub fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// A sparse image of `size` bytes with `pieces` written (everything else a hole).
pub fn write_image(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) {
    let f = File::create(path).expect("create image");
    f.set_len(size).expect("size image");
    for (off, data) in pieces {
        f.write_all_at(data, *off).expect("write image");
    }
}

/// A store on `dir` through a [`failing::FailingStore`], returned alongside for control.
pub fn failing_store(dir: &Path) -> (Store, Arc<failing::FailingStore>) {
    fs::create_dir_all(dir).expect("mkdir store");
    let fs = LocalFileSystem::new_with_prefix(dir)
        .expect("local fs")
        .with_automatic_cleanup(true);
    let failing = Arc::new(failing::FailingStore::new(Arc::new(fs)));
    let store = Store::new(failing.clone(), object_store::path::Path::from(""))
        .with_lock_timings(fast_locks());
    (store, failing)
}
