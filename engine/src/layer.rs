//! One sparse layer file. A layer "has" a sector exactly when the filesystem reports that sector
//! as data (SEEK_DATA/SEEK_HOLE); the engine only ever writes whole, aligned 4 KiB sectors to a
//! layer and never uses fallocate's zero-range (unwritten extents read as holes), so presence is
//! exact on filesystems whose allocation unit divides 4 KiB (checked when the engine opens).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use backupstore::direct::DirectFile;
use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;

use std::sync::RwLock;

use crate::extent_cache::{ExtentCache, SpanMap};
use crate::sector::{SECTOR, Span, align_down, align_up, push_span};

/// Largest buffer used when copying or zeroing ranges.
pub const COPY_CHUNK: u64 = 1 << 20;

pub struct LayerFile {
    /// Written buffered, except bulk writes (restores), which go direct.
    file: DirectFile,
    path: PathBuf,
    /// Allocated spans for the read path (see `extent_cache`).
    cache: RwLock<ExtentCache>,
}

impl std::fmt::Debug for LayerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LayerFile({})", self.path.display())
    }
}

impl LayerFile {
    /// Creates a new, empty (all-hole) layer of `len` bytes; fails if the file exists.
    pub fn create(path: &Path, len: u64) -> io::Result<LayerFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(len)?;
        file.sync_all()?;
        Ok(LayerFile {
            file: DirectFile::new(file),
            path: path.to_path_buf(),
            cache: RwLock::default(),
        })
    }

    pub fn open(path: &Path) -> io::Result<LayerFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(LayerFile {
            file: DirectFile::new(file),
            path: path.to_path_buf(),
            cache: RwLock::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.file().metadata()?.len())
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.file().set_len(len)
    }

    /// The sectors this layer holds within `[start, end)`, as sorted byte spans clipped to the
    /// window (the window need not be sector-aligned).
    pub fn data_spans(&self, start: u64, end: u64) -> io::Result<Vec<Span>> {
        let mut out = Vec::new();
        let mut pos = align_down(start, SECTOR);
        while pos < end {
            let data = match rustix::fs::seek(self.file.file(), SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(Errno::NXIO) => break,
                Err(e) => return Err(e.into()),
            };
            if data >= end {
                break;
            }
            let hole = rustix::fs::seek(self.file.file(), SeekFrom::Hole(data))?;
            let s = align_down(data, SECTOR).max(start);
            let e = align_up(hole, SECTOR).min(end);
            push_span(&mut out, (s, e));
            if hole <= pos {
                break; // defensive: the filesystem made no progress
            }
            pos = hole;
        }
        Ok(out)
    }

    /// Bytes held by this layer (allocated sectors times 4 KiB).
    pub fn allocated_bytes(&self) -> io::Result<u64> {
        let len = self.len()?;
        Ok(crate::sector::total_len(&self.data_spans(0, len)?))
    }

    /// Reads exactly `buf.len()` bytes at `offset`; bytes past the end of the file read as zeros.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .file
                .file()
                .read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                buf[done..].fill(0);
                break;
            }
            done += n;
        }
        Ok(())
    }

    pub fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let result = self.file.file().write_all_at(data, offset);
        self.note_written(result, offset, data.len())
    }

    /// [`LayerFile::write_all_at`] for bulk data (restored blocks): aligned parts go to the
    /// device with direct I/O (see `backupstore::direct`), leaving the page cache to the
    /// volume's readers and skipping the copy into new pages.
    pub fn write_bulk_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let result = self.file.write_all_at(data, offset);
        self.note_written(result, offset, data.len())
    }

    fn note_written(&self, result: io::Result<()>, offset: u64, len: usize) -> io::Result<()> {
        let mut cache = self.cache_mut();
        match result {
            Ok(()) => cache.note_data(offset, offset + len as u64),
            // Part of it may have landed: forget the map and rescan on next use.
            Err(_) => *cache = ExtentCache::Unloaded,
        }
        result
    }

    fn cache_mut(&self) -> std::sync::RwLockWriteGuard<'_, ExtentCache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Like [`LayerFile::data_spans`], answered from memory once the layer has been scanned.
    /// For the read path only; change tracking asks the filesystem.
    pub fn cached_spans(&self, start: u64, end: u64) -> io::Result<Vec<Span>> {
        {
            let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
            match &*cache {
                ExtentCache::Loaded(map) => return Ok(map.query(start, end)),
                ExtentCache::Disabled => return self.data_spans(start, end),
                ExtentCache::Unloaded => {}
            }
        }
        let mut cache = self.cache_mut();
        if let ExtentCache::Unloaded = &*cache {
            let spans = self.data_spans(0, self.len()?)?;
            *cache = if spans.len() > crate::extent_cache::MAX_SPANS {
                ExtentCache::Disabled
            } else {
                ExtentCache::Loaded(SpanMap::from_spans(&spans))
            };
        }
        match &*cache {
            ExtentCache::Loaded(map) => Ok(map.query(start, end)),
            _ => self.data_spans(start, end),
        }
    }

    /// Writes real zeros over `[start, end)` (allocating the sectors).
    pub fn write_zeros(&self, start: u64, end: u64) -> io::Result<()> {
        let zeros = vec![0u8; COPY_CHUNK.min(end.saturating_sub(start)) as usize];
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(COPY_CHUNK) as usize;
            self.write_all_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Deallocates `[start, end)`; it reads as a hole afterwards.
    pub fn punch_hole(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let result = rustix::fs::fallocate(
            self.file.file(),
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            start,
            end - start,
        );
        let mut cache = self.cache_mut();
        match result {
            Ok(()) => cache.note_hole(start, end),
            Err(_) => *cache = ExtentCache::Unloaded,
        }
        Ok(result?)
    }

    /// Copies the bytes of `spans` from `self` into `dest` at the same offsets.
    pub fn copy_spans_to(&self, dest: &LayerFile, spans: &[Span]) -> io::Result<()> {
        let mut buf = vec![0u8; COPY_CHUNK as usize];
        for &(s, e) in spans {
            let mut pos = s;
            while pos < e {
                let n = (e - pos).min(COPY_CHUNK) as usize;
                self.read_exact_at(&mut buf[..n], pos)?;
                dest.write_all_at(&buf[..n], pos)?;
                pos += n as u64;
            }
        }
        Ok(())
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.file.file().sync_data()
    }
}

/// Makes a directory entry change (create, rename, unlink) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LayerFile {
    /// Opens a file read-only (an image to import).
    pub fn open_read_only(path: &Path) -> io::Result<LayerFile> {
        let file = File::open(path)?;
        Ok(LayerFile {
            file: DirectFile::new(file),
            path: path.to_path_buf(),
            cache: RwLock::default(),
        })
    }

    /// Makes data and the file's size durable.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.file().sync_all()
    }
}
