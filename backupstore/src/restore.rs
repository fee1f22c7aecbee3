//! Restoring a backup into a [`BlockSink`], in full or incrementally from an earlier backup of
//! the same volume (fetching only blocks whose checksum differs, zeroing blocks that vanished).

use std::sync::Arc;

use tokio::time::Instant;

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::blockmap::{RestoreStep, incremental_steps, validate};
use crate::compress::{Compression, with_open_block};
use crate::error::{Error, Result};
use crate::format::{BackupConfig, VolumeConfig};
use crate::lock::{HeldLock, LockKind, PendingLock};
use crate::names::{backup_cfg, block_path, validate_name};
use crate::source::BlockSink;
use crate::store::Store;

/// Called after each block with the running totals.
pub type RestoreProgressFn = Arc<dyn Fn(&RestoreProgress) + Send + Sync>;

#[derive(Clone)]
pub struct RestoreOptions {
    /// Blocks fetched, checked and written at once.
    pub workers: usize,
    pub progress: Option<RestoreProgressFn>,
    pub cancel: CancellationToken,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            workers: default_restore_workers(),
            progress: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// Blocks in flight for a restore: four per core. A restored block spends most of its time
/// waiting (the read of the stored block, the direct write to the device), not computing, so
/// more blocks than a backup's keep the cores and the target busy; on S3, where every block
/// is a request with its own latency, this is what sets the speed. On a local disk 4 to 8 made
/// no measurable difference here. Memory stays bounded by workers × block size (about 50 MiB
/// peak with 8 for a 2 GiB restore).
pub fn default_restore_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 4
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreProgress {
    pub blocks_total: u64,
    pub blocks_done: u64,
    /// Blocks downloaded from the store.
    pub blocks_fetched: u64,
    /// Stored (compressed) bytes downloaded.
    pub bytes_fetched: u64,
    /// Bytes written into the sink (zeroed ranges not included).
    pub bytes_written: u64,
    /// Blocks made to read as zeros (vanished blocks, or gaps on a sink that was not empty).
    pub blocks_zeroed: u64,
    /// Blocks of the map that are all zeros: restored as zeros without fetching (their name,
    /// `H` of a zero block, says what they hold).
    pub blocks_zero_skipped: u64,
}

/// The volume size a restore produces.
/// The volume's size (its last block may be partial), grown to a whole block past the map's
/// last entry if the map reaches beyond it.
fn restored_size(volume: &VolumeConfig, backup: &BackupConfig, block_size: u64) -> u64 {
    let size = volume.size.max(0) as u64;
    match backup.blocks.last() {
        Some(b) if b.offset as u64 >= size => b.offset as u64 + block_size,
        _ => size,
    }
}

impl Store {
    /// Loads a backup for reading: refuses in-progress backups and invalid maps.
    async fn load_restorable(&self, volume: &str, backup: &str) -> Result<(BackupConfig, u64)> {
        let cfg = self.inspect_backup(volume, backup).await?;
        if cfg.in_progress() {
            return Err(Error::BackupInProgress {
                target: self.label().to_string(),
                volume: volume.to_string(),
                backup: backup.to_string(),
            });
        }
        let invalid = |reason: String| Error::InvalidBlockMap {
            target: self.label().to_string(),
            backup: backup_cfg(volume, backup),
            reason,
        };
        let block_size = cfg
            .block_size()
            .map_err(|q| invalid(format!("backup-block-size {q:?} is not a byte count")))?;
        if block_size == 0 || block_size > crate::format::LARGE_BLOCK_SIZE * 4 {
            return Err(invalid(format!("block size {block_size} is out of range")));
        }
        validate(&cfg.blocks, block_size).map_err(invalid)?;
        Ok((cfg, block_size))
    }

    /// The volume size to restore to, for callers that create the sink (for example a file of
    /// that size): the volume's size, or more if the backup's map reaches further.
    pub async fn restore_size(&self, volume: &str, backup: &str) -> Result<u64> {
        let vol = self.inspect_volume(volume).await?;
        let (cfg, bs) = self.load_restorable(volume, backup).await?;
        Ok(restored_size(&vol, &cfg, bs))
    }

    /// Takes the shared lock; returns it once confirmed. Reads may start before (`early`).
    async fn restore_lock(&self, volume: &str) -> Result<RestoreLock> {
        if let Some(held) = self.take_parked(volume).await {
            return Ok(RestoreLock::Held(held));
        }
        let pending = PendingLock::start(self, volume, LockKind::Shared).await?;
        // Taken before the listing is sent: any lock the listing misses was written later.
        let checked_at = Instant::now();
        let early = pending.uncontended_now().await.unwrap_or(false);
        Ok(RestoreLock::Pending(pending, early.then_some(checked_at)))
    }

    /// Restores `backup` of `volume` into `sink`: every block of its map at its offset, holes
    /// stay holes (ranges outside the map are zeroed unless the sink starts zeroed).
    pub async fn restore(
        &self,
        volume: &str,
        backup: &str,
        sink: Arc<dyn BlockSink>,
        opts: RestoreOptions,
    ) -> Result<RestoreProgress> {
        validate_name("volume", volume)?;
        validate_name("backup", backup)?;
        let lock = self.restore_lock(volume).await?;
        let zeroed = sink.is_zeroed();
        let steps_for = |store: Store| async move {
            let vol = store.inspect_volume(volume).await?;
            let (cfg, bs) = store.load_restorable(volume, backup).await?;
            let size = restored_size(&vol, &cfg, bs);
            let mut steps = Vec::new();
            let mut pos = 0u64;
            for b in &cfg.blocks {
                let off = b.offset as u64;
                if !zeroed && off > pos {
                    steps.extend(gap_steps(pos, off, bs));
                }
                steps.push(RestoreStep::Fetch {
                    offset: off,
                    checksum: b.block_checksum.clone(),
                });
                pos = off + bs;
            }
            if !zeroed && size > pos {
                steps.extend(gap_steps(pos, size, bs));
            }
            let compression = Compression::parse(&cfg.compression_method)?;
            Ok::<_, Error>((steps, compression, bs, size))
        };
        self.run_restore(volume, lock, steps_for, sink, opts).await
    }

    /// Brings `sink`, which holds backup `from` of `volume` (restored earlier), to backup `to`:
    /// fetches only blocks whose checksum differs and zeroes blocks that vanished.
    pub async fn restore_incremental(
        &self,
        volume: &str,
        from: &str,
        to: &str,
        sink: Arc<dyn BlockSink>,
        opts: RestoreOptions,
    ) -> Result<RestoreProgress> {
        validate_name("volume", volume)?;
        validate_name("backup", from)?;
        validate_name("backup", to)?;
        let lock = self.restore_lock(volume).await?;
        let steps_for = |store: Store| async move {
            let vol = store.inspect_volume(volume).await?;
            let (old, old_bs) = store.load_restorable(volume, from).await?;
            let (new, bs) = store.load_restorable(volume, to).await?;
            if old_bs != bs {
                return Err(Error::BlockSizeMismatch {
                    target: store.label().to_string(),
                    volume: volume.to_string(),
                    existing: old_bs,
                    requested: bs,
                });
            }
            let size = restored_size(&vol, &new, bs);
            let compression = Compression::parse(&new.compression_method)?;
            Ok((
                incremental_steps(&old.blocks, &new.blocks),
                compression,
                bs,
                size,
            ))
        };
        self.run_restore(volume, lock, steps_for, sink, opts).await
    }

    async fn run_restore<F, Fut>(
        &self,
        volume: &str,
        lock: RestoreLock,
        steps_for: F,
        sink: Arc<dyn BlockSink>,
        opts: RestoreOptions,
    ) -> Result<RestoreProgress>
    where
        F: FnOnce(Store) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<RestoreStep>, Compression, u64, u64)>>,
    {
        let held: HeldLock;
        let result;
        let (pending, early) = match lock {
            RestoreLock::Held(h) => {
                let r = async {
                    let (steps, c, bs, size) = steps_for(self.clone()).await?;
                    self.apply_steps(volume, steps, c, bs, size, &sink, &opts)
                        .await
                }
                .await;
                let released = self.finish_shared(h).await;
                let progress = r?;
                released?;
                return Ok(progress);
            }
            RestoreLock::Pending(p, early) => (p, early),
        };
        if let Some(checked_at) = early {
            // A restore only reads the store, so it may run while the lock is confirmed. If it
            // is done within the read-only window, no client of the other type can have acted
            // during it (see `PendingLock::read_only_window`): withdraw the lock unconfirmed.
            let window = pending.read_only_window();
            let withdraw = CancellationToken::new();
            let confirm = tokio::spawn(pending.confirm_unless("restore", withdraw.clone()));
            let work = async {
                let (steps, c, bs, size) = steps_for(self.clone()).await?;
                self.apply_steps(volume, steps, c, bs, size, &sink, &opts)
                    .await
            };
            let r = work.await;
            if checked_at.elapsed() < window {
                withdraw.cancel();
            }
            let confirmed = confirm.await.map_err(|e| Error::Task(e.to_string()))?;
            match confirmed? {
                None => return r,
                Some(h) => {
                    held = h;
                    result = r;
                }
            }
        } else {
            held = pending.confirm("restore").await?;
            result = async {
                let (steps, c, bs, size) = steps_for(self.clone()).await?;
                self.apply_steps(volume, steps, c, bs, size, &sink, &opts)
                    .await
            }
            .await;
        }
        let released = self.finish_shared(held).await;
        let progress = result?;
        released?;
        Ok(progress)
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_steps(
        &self,
        volume: &str,
        steps: Vec<RestoreStep>,
        compression: Compression,
        block_size: u64,
        size: u64,
        sink: &Arc<dyn BlockSink>,
        opts: &RestoreOptions,
    ) -> Result<RestoreProgress> {
        let mut progress = RestoreProgress {
            blocks_total: steps.len() as u64,
            ..RestoreProgress::default()
        };
        let label = self.label().to_string();
        let zero_checksum = crate::names::zero_block_checksum(block_size);
        let sink_zeroed = sink.is_zeroed();
        let mut done = futures::stream::iter(steps)
            .map(|step| {
                let sink = sink.clone();
                let label = label.clone();
                let zero_checksum = &zero_checksum;
                async move {
                    if opts.cancel.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    match step {
                        RestoreStep::Zero { offset } => {
                            let len = block_size.min(size.saturating_sub(offset));
                            tokio::task::spawn_blocking(move || sink.zero_range(offset, len))
                                .await
                                .map_err(|e| Error::Task(e.to_string()))?
                                .map_err(|source| Error::SinkWrite { offset, source })?;
                            Ok((0, 0, 1))
                        }
                        RestoreStep::Fetch { offset, checksum } if checksum == *zero_checksum => {
                            if !sink_zeroed {
                                let len = block_size.min(size.saturating_sub(offset));
                                tokio::task::spawn_blocking(move || sink.zero_range(offset, len))
                                    .await
                                    .map_err(|e| Error::Task(e.to_string()))?
                                    .map_err(|source| Error::SinkWrite { offset, source })?;
                            }
                            Ok((0, 0, 2))
                        }
                        RestoreStep::Fetch { offset, checksum } => {
                            let rel = block_path(volume, &checksum);
                            let stored = self.get(&rel).await?;
                            if opts.cancel.is_cancelled() {
                                return Err(Error::Cancelled);
                            }
                            let fetched = stored.len() as u64;
                            let written = tokio::task::spawn_blocking(move || {
                                with_open_block(
                                    compression,
                                    &stored,
                                    &checksum,
                                    block_size,
                                    &label,
                                    &rel,
                                    |data| {
                                        let len =
                                            (data.len() as u64).min(size.saturating_sub(offset));
                                        sink.write_at(offset, &data[..len as usize])
                                            .map_err(|source| Error::SinkWrite { offset, source })
                                            .map(|()| len)
                                    },
                                )?
                            })
                            .await
                            .map_err(|e| Error::Task(e.to_string()))??;
                            Ok((fetched, written, 0))
                        }
                    }
                }
            })
            .buffer_unordered(opts.workers.max(1));
        while let Some((fetched, written, zeroed)) = done.try_next().await? {
            progress.blocks_done += 1;
            // `zeroed`: 0 fetched, 1 zeroed (vanished or gap), 2 all-zero block not fetched.
            match zeroed {
                0 => progress.blocks_fetched += 1,
                1 => progress.blocks_zeroed += 1,
                _ => progress.blocks_zero_skipped += 1,
            }
            progress.bytes_fetched += fetched;
            progress.bytes_written += written;
            if let Some(cb) = &opts.progress {
                cb(&progress);
            }
        }
        // Stopped while the last blocks were in flight: the caller asked for no result.
        if opts.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let s = sink.clone();
        tokio::task::spawn_blocking(move || s.flush())
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(|source| Error::SinkWrite { offset: 0, source })?;
        Ok(progress)
    }
}

/// How a restore holds its lock.
enum RestoreLock {
    /// Kept from this client's previous operation on the volume: no wait.
    Held(HeldLock),
    /// Written, to be confirmed; `Some(t)` when the early check at `t` was clean.
    Pending(PendingLock, Option<Instant>),
}

/// Zero steps covering `[start, end)` in whole blocks.
fn gap_steps(start: u64, end: u64, block_size: u64) -> impl Iterator<Item = RestoreStep> {
    (start / block_size..end.div_ceil(block_size)).map(move |i| RestoreStep::Zero {
        offset: i * block_size,
    })
}
