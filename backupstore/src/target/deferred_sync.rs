//! Directory targets without a per-block fsync, with the same guarantee.
//!
//! An fsync per 2 MiB block serialises every upload behind the disk. Instead, a block object
//! (`….blk`) is written to a hidden staging file (`<name>#<digits>`, which listings skip) with
//! no fsync, and remembered. Before any other object is written (a backup cfg, `volume.cfg`, a
//! lock file) — and before copies and renames — every remembered block is made durable in
//! one parallel batch: fsync its data, rename it into place, fsync the directories up to the
//! target root. So (1) a completed backup cfg never references a block that is not durable,
//! and (2) a block visible under its final name is durable, so another client that
//! deduplicates against it is safe too. Staging files of a client that dies before its batch
//! are never shown (and are removed when the handle is dropped).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result,
};

use crate::direct::DirectFile;

/// Threads that fsync a batch at once (lets the device queue the writes).
const SYNC_THREADS: usize = 8;

/// Staged blocks after which a background task starts fsyncing them (64 MiB of 2 MiB blocks),
/// so the disk writes overlap reading and hashing instead of all waiting for the batch. Only a
/// head start: the batch fsyncs every block again (cheap once clean), so a failure here
/// changes nothing.
const PRESYNC_AFTER: usize = 32;

/// A block written to its staging file, not yet durable nor visible.
#[derive(Debug)]
struct Staged {
    staging: PathBuf,
    target: PathBuf,
}

/// Wraps a directory store (`inner`, rooted at `root`, which fsyncs its own writes): block
/// objects are staged and made durable in batches, see the module docs.
#[derive(Debug)]
pub struct DeferredBlockSync<T> {
    inner: T,
    root: PathBuf,
    pending: Mutex<Vec<Staged>>,
    /// Staging files no background fsync has been started for.
    unsynced: Mutex<Vec<PathBuf>>,
    presync_running: Arc<AtomicBool>,
    /// Held for a whole batch, so a writer that finds nothing pending knows that every block
    /// staged before it is durable (not just taken by another writer's batch in flight).
    flushing: tokio::sync::Mutex<()>,
}

impl<T> DeferredBlockSync<T> {
    pub fn new(inner: T, root: PathBuf) -> Self {
        Self {
            inner,
            root,
            pending: Mutex::new(Vec::new()),
            unsynced: Mutex::new(Vec::new()),
            presync_running: Arc::new(AtomicBool::new(false)),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Blocks staged and not yet made durable.
    pub fn pending_blocks(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    /// Starts a background fsync of the staged files once enough have piled up (one such
    /// task at a time, so blocking threads never pile up behind a slow disk).
    fn maybe_presync(&self, staging: PathBuf) {
        let batch = match self.unsynced.lock() {
            Ok(mut u) => {
                u.push(staging);
                if u.len() < PRESYNC_AFTER || self.presync_running.swap(true, Ordering::AcqRel) {
                    return;
                }
                std::mem::take(&mut *u)
            }
            Err(_) => return,
        };
        let running = self.presync_running.clone();
        tokio::task::spawn_blocking(move || {
            for path in batch {
                // Renamed meanwhile (NotFound) or failed: the batch's own fsync decides.
                let _ = File::open(&path).and_then(|f| f.sync_data());
            }
            running.store(false, Ordering::Release);
        });
    }

    /// Makes every staged block durable and visible.
    pub async fn flush(&self) -> Result<()> {
        let _batch = self.flushing.lock().await;
        let batch = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Err(generic("pending-block list poisoned".into())),
        };
        if let Ok(mut u) = self.unsynced.lock() {
            u.clear();
        }
        if batch.is_empty() {
            return Ok(());
        }
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || sync_batch(&root, batch))
            .await
            .map_err(|e| generic(e.to_string().into()))?
            .map_err(|e| generic(Box::new(e)))
    }
}

impl<T> Drop for DeferredBlockSync<T> {
    fn drop(&mut self) {
        if let Ok(p) = self.pending.get_mut() {
            for staged in p.drain(..) {
                let _ = std::fs::remove_file(&staged.staging);
            }
        }
    }
}

/// An object's metadata as `LocalFileSystem` reports it (the same ETag scheme), so results of
/// the block read path and of the inner store compare equal.
fn object_meta(location: &Path, metadata: &std::fs::Metadata) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = metadata.modified().unwrap_or(std::time::UNIX_EPOCH);
    let micros = modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    ObjectMeta {
        location: location.clone(),
        last_modified: modified.into(),
        size: metadata.len(),
        e_tag: Some(format!(
            "\"{:x}-{micros:x}-{:x}\"",
            metadata.ino(),
            metadata.len()
        )),
        version: None,
    }
}

fn generic(source: Box<dyn std::error::Error + Send + Sync>) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source,
    }
}

/// Whether `location` is a block whose path maps to the file system one to one (plain
/// segments: no escaping by `LocalFileSystem` to mirror).
fn is_plain_block(location: &Path) -> bool {
    location.filename().is_some_and(|f| f.ends_with(".blk"))
        && location.parts().all(|part| {
            let s = part.as_ref();
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
}

/// Writes `payload` to a fresh staging file next to `target` (no fsync).
fn write_staged(target: &FsPath, payload: &PutPayload) -> std::io::Result<PathBuf> {
    let parent = target
        .parent()
        .ok_or_else(|| std::io::Error::other("block path has no parent directory"))?;
    std::fs::create_dir_all(parent)?;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| std::io::Error::other("block path has no file name"))?;
    loop {
        // `#` followed by digits only: `LocalFileSystem` listings skip such names.
        let staging = parent.join(format!("{name}#{}", rand::random::<u64>()));
        let file = match File::create_new(&staging) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        // Direct I/O: the block goes to the device without a copy into new page-cache pages,
        // and the batch's fsync has only metadata left to write (see `crate::direct`).
        let file = DirectFile::new(file);
        let mut at = 0u64;
        let written = payload.iter().try_for_each(|chunk| {
            file.write_all_at(chunk, at)?;
            at += chunk.len() as u64;
            Ok(())
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        return Ok(staging);
    }
}

/// fsync data, rename into place, fsync every directory up to `root`; in parallel.
fn sync_batch(root: &FsPath, batch: Vec<Staged>) -> std::io::Result<()> {
    let per_thread = batch.len().div_ceil(SYNC_THREADS).max(1);
    let result = std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk.iter().try_for_each(|s| {
                        File::open(&s.staging)?.sync_all()?;
                        std::fs::rename(&s.staging, &s.target)
                    })
                })
            })
            .collect();
        join_all(workers)
    });
    if let Err(e) = result {
        // Leave nothing half-done behind: what was not renamed is removed (the next backup
        // uploads it again).
        for s in &batch {
            let _ = std::fs::remove_file(&s.staging);
        }
        return Err(e);
    }
    let mut dirs = BTreeSet::new();
    for s in &batch {
        let mut dir = s.target.parent();
        while let Some(d) = dir {
            if !dirs.insert(d.to_path_buf()) || d == root || !d.starts_with(root) {
                break;
            }
            dir = d.parent();
        }
    }
    let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.starts_with(root)).collect();
    let per_thread = dirs.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = dirs
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || chunk.iter().try_for_each(|d| File::open(d)?.sync_all()))
            })
            .collect();
        join_all(workers)
    })
}

fn join_all(
    workers: Vec<std::thread::ScopedJoinHandle<'_, std::io::Result<()>>>,
) -> std::io::Result<()> {
    let mut first_error = Ok(());
    for w in workers {
        let r = w
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")));
        if first_error.is_ok() {
            first_error = r;
        }
    }
    first_error
}

impl<T: ObjectStore> fmt::Display for DeferredBlockSync<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeferredBlockSync({})", self.inner)
    }
}

#[async_trait::async_trait]
impl<T: ObjectStore> ObjectStore for DeferredBlockSync<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if opts.mode == PutMode::Overwrite && is_plain_block(location) {
            let target = self.root.join(location.as_ref());
            let staged_target = target.clone();
            let staging = tokio::task::spawn_blocking(move || write_staged(&target, &payload))
                .await
                .map_err(|e| generic(e.to_string().into()))?
                .map_err(|e| generic(Box::new(e)))?;
            self.maybe_presync(staging.clone());
            let staged = Staged {
                staging,
                target: staged_target,
            };
            match self.pending.lock() {
                Ok(mut p) => p.push(staged),
                Err(_) => {
                    let _ = std::fs::remove_file(&staged.staging);
                    return Err(generic("pending-block list poisoned".into()));
                }
            }
            return Ok(PutResult {
                e_tag: None,
                version: None,
                extensions: Default::default(),
            });
        }
        self.flush().await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.flush().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.range.is_some() || options.head || !is_plain_block(location) {
            return self.inner.get_opts(location, options).await;
        }
        // A whole block: read direct in one blocking call (see `crate::direct::read_whole`).
        let path = self.root.join(location.as_ref());
        let read = tokio::task::spawn_blocking(move || crate::direct::read_whole(&path))
            .await
            .map_err(|e| generic(e.to_string().into()))?;
        let (data, metadata) = match read {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(object_store::Error::NotFound {
                    path: location.to_string(),
                    source: Box::new(e),
                });
            }
            Err(e) => return Err(generic(Box::new(e))),
        };
        let meta = object_meta(location, &metadata);
        options.check_preconditions(&meta)?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::once(async { Ok(data) }).boxed()),
            range: 0..meta.size,
            meta,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.flush().await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.flush().await?;
        self.inner.rename_opts(from, to, options).await
    }
}
