//! Creating a backup: read the source's blocks with parallel workers (read, SHA-512, compress,
//! upload), deduplicate against the previous backup's map and one listing of the blocks folder,
//! then write the backup cfg with the merged map and update `volume.cfg` — metadata only under
//! the confirmed lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::blockmap::{overlay, validate};
use crate::compress::{Compression, is_all_zero};
use crate::error::{Error, Result};
use crate::format::{
    BackupConfig, BlockMapping, DEFAULT_BLOCK_SIZE, LARGE_BLOCK_SIZE, PARAM_BACKUP_MODE,
    PARAM_BLOCK_SIZE, SingleFile, VolumeConfig, format_time,
};
use crate::lock::{HeldLock, LockKind, PendingLock};
use crate::names::{
    backup_cfg, block_path, blocks_dir, checksum_from_file, generate_backup_name, h, validate_name,
    volume_cfg,
};
use crate::source::BlockSource;
use crate::store::{Store, file_name};

/// Called after each block with the running totals.
pub type ProgressFn = Arc<dyn Fn(&BackupProgress) + Send + Sync>;

/// `backup-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackupMode {
    /// Build on the volume's last backup when there is one (Longhorn's default).
    #[default]
    Incremental,
    /// Ignore the last backup: the map is exactly what the source holds.
    Full,
}

impl BackupMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackupMode::Incremental => "incremental",
            BackupMode::Full => "full",
        }
    }
}

/// What to back up and how.
#[derive(Clone)]
pub struct BackupOptions {
    pub volume: String,
    /// `None`: a fresh `backup-<16 hex>` name.
    pub backup_name: Option<String>,
    pub snapshot_name: String,
    /// `None`: now.
    pub snapshot_created_at: Option<jiff::Timestamp>,
    pub mode: BackupMode,
    /// 2 MiB or 16 MiB; must equal the block size of the volume's previous backups.
    pub block_size: u64,
    /// Used for a new backup volume; an existing volume's method wins.
    pub compression: Compression,
    /// Blocks read, hashed, compressed and uploaded at once (memory ≈ 2 × workers × block size).
    pub workers: usize,
    pub labels: BTreeMap<String, String>,
    /// Upload blocks again even when the store has them (Longhorn's full mode repairs damaged
    /// blocks this way); counted as re-uploaded.
    pub reupload_existing: bool,
    pub backing_image_name: String,
    pub backing_image_checksum: String,
    pub storage_class_name: String,
    pub progress: Option<ProgressFn>,
    pub cancel: CancellationToken,
}

impl BackupOptions {
    pub fn new(volume: impl Into<String>, snapshot_name: impl Into<String>) -> BackupOptions {
        BackupOptions {
            volume: volume.into(),
            backup_name: None,
            snapshot_name: snapshot_name.into(),
            snapshot_created_at: None,
            mode: BackupMode::Incremental,
            block_size: DEFAULT_BLOCK_SIZE,
            compression: Compression::Lz4,
            workers: default_workers(),
            labels: BTreeMap::new(),
            reupload_existing: false,
            backing_image_name: String::new(),
            backing_image_checksum: String::new(),
            storage_class_name: String::new(),
            progress: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// Blocks in flight: one per core plus two, so a block being written or read never leaves a
/// core idle (memory ≈ 2 × workers × block size).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        + 2
}

/// What a backup did, in bytes and blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupCounters {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes of blocks whose content differs from the previous backup at that offset.
    pub bytes_changed: u64,
    /// Compressed bytes written to the store.
    pub bytes_uploaded: u64,
    /// Bytes of changed blocks the store already held (not uploaded).
    pub bytes_deduplicated: u64,
    /// Blocks uploaded that the store did not hold.
    pub blocks_new: u64,
    /// Changed blocks the store already held.
    pub blocks_deduplicated: u64,
    /// Blocks uploaded again although the store held them (`reupload_existing`).
    pub blocks_reuploaded: u64,
}

/// Progress of a running backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupProgress {
    pub blocks_total: u64,
    pub blocks_done: u64,
    pub counters: BackupCounters,
}

/// A completed backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub name: String,
    pub volume: String,
    pub is_incremental: bool,
    /// Entries in the backup's (full) block map.
    pub blocks_in_map: usize,
    pub counters: BackupCounters,
}

/// What the reads before the pipeline found.
struct Plan {
    existing_volume: Option<VolumeConfig>,
    compression: Compression,
    previous: Option<BackupConfig>,
    stored: HashSet<String>,
    offsets: Vec<u64>,
}

/// State the workers share.
struct Shared {
    source: Arc<dyn BlockSource>,
    block_size: u64,
    compression: Compression,
    previous: HashMap<u64, String>,
    stored: HashSet<String>,
    /// Checksums some worker of this backup already handles.
    claimed: Mutex<HashSet<String>>,
    reupload: bool,
    /// `H` of an all-zero block of `block_size`.
    zero_checksum: String,
    /// Read buffers returned by finished blocks. At most `workers` blocks are in flight, so at
    /// most `workers` buffers ever exist: memory is bounded by workers × block size.
    buffers: Mutex<Vec<Vec<u8>>>,
}

enum BlockFate {
    /// Same content as the previous backup at that offset, and stored.
    Unchanged,
    Deduplicated,
    Upload {
        data: Vec<u8>,
        reupload: bool,
    },
}

struct Processed {
    offset: u64,
    checksum: String,
    read: u64,
    fate: BlockFate,
}

impl Shared {
    /// Reads, hashes and (if it must be uploaded) compresses the block at `offset`. Blocking.
    fn process(&self, offset: u64) -> Result<Processed> {
        let size = self.source.size();
        let len = self.block_size.min(size.saturating_sub(offset)) as usize;
        // Buffers are reused: a fresh 2 MiB allocation per block costs page faults and zeroing
        // on every block.
        let mut buf = self.take_buffer();
        let processed = self.process_in(offset, len, &mut buf);
        self.give_back(buf);
        processed
    }

    fn take_buffer(&self) -> Vec<u8> {
        // A poisoned pool only means another worker panicked; its buffers are still plain bytes.
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, buf: Vec<u8>) {
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buf);
    }

    fn process_in(&self, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<Processed> {
        buf.resize(self.block_size as usize, 0);
        // A short last block hashes (and is stored) zero-padded to the block size.
        buf[len..].fill(0);
        self.source
            .read_at(offset, &mut buf[..len])
            .map_err(|source| Error::SourceRead { offset, source })?;
        let buf = &buf[..];
        // Allocated zeros are common (fresh file systems, discarded space): skip hashing them.
        let checksum = if is_all_zero(buf) {
            self.zero_checksum.clone()
        } else {
            h(buf)
        };
        let same_as_before = self.previous.get(&offset) == Some(&checksum);
        let first_claim = self
            .claimed
            .lock()
            .map_err(|_| Error::Task("claim set poisoned".into()))?
            .insert(checksum.clone());
        let stored = self.stored.contains(&checksum);
        let fate = if !first_claim || (stored && !self.reupload) {
            if same_as_before {
                BlockFate::Unchanged
            } else {
                BlockFate::Deduplicated
            }
        } else {
            let data = self
                .compression
                .compress(buf)
                .map_err(|e| Error::Task(format!("compressing block at {offset}: {e}")))?;
            BlockFate::Upload {
                data,
                reupload: stored,
            }
        };
        Ok(Processed {
            offset,
            checksum,
            read: len as u64,
            fate,
        })
    }
}

impl Store {
    /// The backup an incremental backup of `volume` would build on: `(backup name, snapshot
    /// name)` of its completed last backup, if any. The engine diffs against that snapshot.
    pub async fn incremental_base(&self, volume: &str) -> Result<Option<(String, String)>> {
        validate_name("volume", volume)?;
        let Some(v) = self.load_volume_opt(volume).await? else {
            return Ok(None);
        };
        if v.last_backup_name.is_empty() || validate_name("backup", &v.last_backup_name).is_err() {
            return Ok(None);
        }
        match self.inspect_backup(volume, &v.last_backup_name).await {
            Ok(b) if !b.in_progress() => Ok(Some((b.name, b.snapshot_name))),
            Ok(_) | Err(Error::BackupNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn check_block_size(block_size: u64) -> Result<()> {
    if block_size == DEFAULT_BLOCK_SIZE || block_size == LARGE_BLOCK_SIZE {
        Ok(())
    } else {
        Err(Error::InvalidBlockSize(block_size))
    }
}

impl Store {
    /// Backs up `source` as a new backup of `opts.volume`. See the crate docs for the steps.
    pub async fn backup(
        &self,
        source: Arc<dyn BlockSource>,
        opts: BackupOptions,
    ) -> Result<BackupOutcome> {
        validate_name("volume", &opts.volume)?;
        let name = match &opts.backup_name {
            Some(n) => n.clone(),
            None => generate_backup_name(),
        };
        validate_name("backup", &name)?;
        check_block_size(opts.block_size)?;
        let workers = opts.workers.max(1);

        if let Some(held) = self.take_parked(&opts.volume).await {
            // This client still holds the volume's shared lock from its last operation.
            return self
                .backup_locked(held, source, &opts, &name, workers)
                .await;
        }
        let pending = PendingLock::start(self, &opts.volume, LockKind::Shared).await?;
        let early = pending.uncontended_now().await.unwrap_or(false);
        if early {
            // Fast path: nobody of the other lock type is about, so reads and block uploads
            // may run during the protocol's 2 s wait; metadata waits for the confirmation.
            let confirm = tokio::spawn(pending.confirm("backup"));
            let token = opts.cancel.child_token();
            let prepared = self.prepare(&source, &opts).await;
            let plan = match prepared {
                Ok(plan) => plan,
                Err(e) => {
                    if let Ok(Ok(held)) = confirm.await {
                        let _ = held.release().await;
                    }
                    return Err(e);
                }
            };
            let confirm_and_mark = {
                let token = token.clone();
                let plan_volume = plan.existing_volume.clone();
                let compression = plan.compression;
                let (opts, name, source) = (&opts, &name, &source);
                async move {
                    let result = async {
                        let held = confirm.await.map_err(|e| Error::Task(e.to_string()))??;
                        if held.contended {
                            token.cancel();
                        } else {
                            self.write_start_metadata(
                                opts,
                                name,
                                plan_volume.as_ref(),
                                compression,
                                source,
                            )
                            .await?;
                        }
                        Ok::<HeldLock, Error>(held)
                    }
                    .await;
                    if result.is_err() {
                        // No lock, no metadata: stop the block work at once.
                        token.cancel();
                    }
                    result
                }
            };
            let shared = self.shared(&source, &opts, &plan);
            let (held, blocks) = tokio::join!(
                confirm_and_mark,
                self.run_pipeline(shared, &plan.offsets, &opts, workers, token)
            );
            let held = match held {
                Ok(h) => h,
                Err(e) => return Err(e),
            };
            if !held.contended {
                let result = match blocks {
                    Ok(blocks) => {
                        self.finish(&held, &source, &opts, &name, plan, blocks)
                            .await
                    }
                    Err(e) => Err(e),
                };
                return self.conclude(held, &opts, &name, result).await;
            }
            // Another client of the other type was about: what we read may be stale. Start
            // over under the lock.
            self.backup_locked(held, source, &opts, &name, workers)
                .await
        } else {
            let held = pending.confirm("backup").await?;
            self.backup_locked(held, source, &opts, &name, workers)
                .await
        }
    }

    /// The whole backup with the lock already confirmed.
    async fn backup_locked(
        &self,
        held: HeldLock,
        source: Arc<dyn BlockSource>,
        opts: &BackupOptions,
        name: &str,
        workers: usize,
    ) -> Result<BackupOutcome> {
        let result = async {
            let plan = self.prepare(&source, opts).await?;
            self.write_start_metadata(
                opts,
                name,
                plan.existing_volume.as_ref(),
                plan.compression,
                &source,
            )
            .await?;
            let shared = self.shared(&source, opts, &plan);
            let blocks = self
                .run_pipeline(
                    shared,
                    &plan.offsets,
                    opts,
                    workers,
                    opts.cancel.child_token(),
                )
                .await?;
            self.finish(&held, &source, opts, name, plan, blocks).await
        }
        .await;
        self.conclude(held, opts, name, result).await
    }

    /// Releases the lock; on failure removes our in-progress placeholder (its blocks become
    /// garbage that the next delete collects).
    async fn conclude(
        &self,
        held: HeldLock,
        opts: &BackupOptions,
        name: &str,
        result: Result<BackupOutcome>,
    ) -> Result<BackupOutcome> {
        if result.is_err() {
            let rel = backup_cfg(&opts.volume, name);
            if let Ok(Some(data)) = self.get_opt(&rel).await
                && BackupConfig::from_json(&data).is_ok_and(|c| c.in_progress())
            {
                let _ = self.delete(&rel).await;
            }
        }
        let released = self.finish_shared(held).await;
        let outcome = result?;
        released?;
        Ok(outcome)
    }

    fn shared(
        &self,
        source: &Arc<dyn BlockSource>,
        opts: &BackupOptions,
        plan: &Plan,
    ) -> Arc<Shared> {
        let previous = plan
            .previous
            .as_ref()
            .map(|p| {
                p.blocks
                    .iter()
                    .map(|b| (b.offset as u64, b.block_checksum.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Arc::new(Shared {
            source: source.clone(),
            block_size: opts.block_size,
            compression: plan.compression,
            previous,
            stored: plan.stored.clone(),
            claimed: Mutex::new(HashSet::new()),
            buffers: Mutex::new(Vec::new()),
            reupload: opts.reupload_existing,
            zero_checksum: crate::names::zero_block_checksum(opts.block_size),
        })
    }

    /// Reads (never writes) what the backup needs: volume.cfg, the last backup, one listing of
    /// the blocks folder, and the source's extents.
    async fn prepare(&self, source: &Arc<dyn BlockSource>, opts: &BackupOptions) -> Result<Plan> {
        let volume = &opts.volume;
        let existing_volume = self.load_volume_opt(volume).await?;
        let compression = match &existing_volume {
            Some(v) => Compression::parse(&v.compression_method)?,
            None => opts.compression,
        };
        let mut previous = None;
        if let Some(v) = &existing_volume
            && !v.last_backup_name.is_empty()
            && validate_name("backup", &v.last_backup_name).is_ok()
        {
            match self.inspect_backup(volume, &v.last_backup_name).await {
                Ok(last) if !last.in_progress() => {
                    let existing = last.block_size().map_err(|q| Error::InvalidMetadata {
                        target: self.label().to_string(),
                        object: backup_cfg(volume, &last.name),
                        reason: format!("backup-block-size {q:?} is not a byte count"),
                    })?;
                    if existing != opts.block_size {
                        return Err(Error::BlockSizeMismatch {
                            target: self.label().to_string(),
                            volume: volume.clone(),
                            existing,
                            requested: opts.block_size,
                        });
                    }
                    if opts.mode == BackupMode::Incremental
                        && validate(&last.blocks, opts.block_size).is_ok()
                    {
                        previous = Some(last);
                    }
                }
                Ok(_) | Err(Error::BackupNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !source.covers_whole_volume() {
            // A diff is only meaningful on top of the backup of its base snapshot.
            let last = previous.as_ref().map(|p| p.snapshot_name.clone());
            let base_ok = match (&last, source.diff_base()) {
                (None, _) => false,
                (Some(l), Some(base)) => *l == base,
                (Some(_), None) => true,
            };
            if !base_ok {
                return Err(Error::NoBaseForDiff {
                    target: self.label().to_string(),
                    volume: volume.clone(),
                    base: source.diff_base().unwrap_or_default(),
                    last: last.unwrap_or_default(),
                });
            }
        }
        let listing = self.list_all(&blocks_dir(volume)).await?;
        let stored: HashSet<String> = listing
            .iter()
            .filter_map(|l| checksum_from_file(file_name(&l.rel)).map(str::to_string))
            .collect();
        let block_size = opts.block_size;
        let src = source.clone();
        let extents = tokio::task::spawn_blocking(move || src.extents(block_size))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(|e| Error::Source(format!("listing the source's extents: {e}")))?;
        let size = source.size();
        let mut offsets = Vec::new();
        for e in extents {
            if !e.offset.is_multiple_of(block_size) || e.end() > size {
                return Err(Error::Source(format!(
                    "extent {}+{} is not aligned to {block_size} or passes the end {size}",
                    e.offset, e.len
                )));
            }
            let mut off = e.offset;
            while off < e.end() {
                offsets.push(off);
                off += block_size;
            }
        }
        offsets.sort_unstable();
        offsets.dedup();
        Ok(Plan {
            existing_volume,
            compression,
            previous,
            stored,
            offsets,
        })
    }

    /// Under the lock: `volume.cfg` if missing, then the in-progress placeholder.
    async fn write_start_metadata(
        &self,
        opts: &BackupOptions,
        name: &str,
        existing: Option<&VolumeConfig>,
        compression: Compression,
        source: &Arc<dyn BlockSource>,
    ) -> Result<()> {
        if existing.is_none() {
            let v = VolumeConfig {
                name: opts.volume.clone(),
                size: source.size() as i64,
                labels: Some(opts.labels.clone()),
                created_time: format_time(jiff::Timestamp::now()),
                backing_image_name: opts.backing_image_name.clone(),
                backing_image_checksum: opts.backing_image_checksum.clone(),
                compression_method: compression.as_str().to_string(),
                storage_class_name: opts.storage_class_name.clone(),
                data_engine: "v1".to_string(),
                ..VolumeConfig::default()
            };
            self.put(&volume_cfg(&opts.volume), Bytes::from(v.to_json()))
                .await?;
        }
        let placeholder = BackupConfig::placeholder(name, &opts.volume, compression.as_str());
        self.put(
            &backup_cfg(&opts.volume, name),
            Bytes::from(placeholder.to_json()),
        )
        .await
    }

    /// Reads, hashes and uploads the blocks at `offsets` with `workers` in flight. Returns the
    /// map entries of every block read and the counters.
    async fn run_pipeline(
        &self,
        shared: Arc<Shared>,
        offsets: &[u64],
        opts: &BackupOptions,
        workers: usize,
        token: CancellationToken,
    ) -> Result<(Vec<BlockMapping>, BackupCounters)> {
        let mut progress = BackupProgress {
            blocks_total: offsets.len() as u64,
            ..BackupProgress::default()
        };
        if let Some(cb) = &opts.progress {
            cb(&progress);
        }
        let volume = opts.volume.clone();
        let mut results = futures::stream::iter(offsets.iter().copied())
            .map(|offset| {
                let shared = shared.clone();
                let token = token.clone();
                let volume = volume.clone();
                async move {
                    if token.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    let mut p = tokio::task::spawn_blocking(move || shared.process(offset))
                        .await
                        .map_err(|e| Error::Task(e.to_string()))??;
                    let uploaded = match &mut p.fate {
                        BlockFate::Upload { data, .. } => {
                            let len = data.len() as u64;
                            let body = Bytes::from(std::mem::take(data));
                            let rel = block_path(&volume, &p.checksum);
                            tokio::select! {
                                r = self.put(&rel, body) => r?,
                                _ = token.cancelled() => return Err(Error::Cancelled),
                            }
                            len
                        }
                        _ => 0,
                    };
                    Ok::<_, Error>((p, uploaded))
                }
            })
            .buffer_unordered(workers);
        let mut blocks = Vec::with_capacity(offsets.len());
        while let Some((p, uploaded)) = results.try_next().await? {
            let c = &mut progress.counters;
            c.bytes_read += p.read;
            let changed = shared.previous.get(&p.offset) != Some(&p.checksum);
            if changed {
                c.bytes_changed += shared.block_size;
            }
            match p.fate {
                BlockFate::Unchanged => {}
                BlockFate::Deduplicated => {
                    c.blocks_deduplicated += 1;
                    c.bytes_deduplicated += shared.block_size;
                }
                BlockFate::Upload { reupload, .. } => {
                    c.bytes_uploaded += uploaded;
                    if reupload {
                        c.blocks_reuploaded += 1;
                    } else {
                        c.blocks_new += 1;
                    }
                }
            }
            blocks.push(BlockMapping {
                offset: p.offset as i64,
                block_checksum: p.checksum,
            });
            progress.blocks_done += 1;
            if let Some(cb) = &opts.progress {
                cb(&progress);
            }
        }
        if opts.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        blocks.sort_unstable_by_key(|b| b.offset);
        Ok((blocks, progress.counters))
    }

    /// Writes the final backup cfg (merged map) and updates `volume.cfg`.
    async fn finish(
        &self,
        held: &HeldLock,
        source: &Arc<dyn BlockSource>,
        opts: &BackupOptions,
        name: &str,
        plan: Plan,
        (blocks, counters): (Vec<BlockMapping>, BackupCounters),
    ) -> Result<BackupOutcome> {
        held.check()?;
        let is_incremental = plan.previous.is_some();
        let map = match &plan.previous {
            Some(prev) if !source.covers_whole_volume() => overlay(&prev.blocks, &blocks),
            _ => blocks,
        };
        let snapshot_time = format_time(
            opts.snapshot_created_at
                .unwrap_or_else(jiff::Timestamp::now),
        );
        let mut parameters = BTreeMap::new();
        parameters.insert(
            PARAM_BACKUP_MODE.to_string(),
            opts.mode.as_str().to_string(),
        );
        parameters.insert(PARAM_BLOCK_SIZE.to_string(), opts.block_size.to_string());
        let reuploaded_bytes = if counters.blocks_reuploaded > 0 {
            // Split the uploaded bytes between new and re-uploaded blocks in proportion.
            let all = counters.blocks_new + counters.blocks_reuploaded;
            counters.bytes_uploaded * counters.blocks_reuploaded / all
        } else {
            0
        };
        let cfg = BackupConfig {
            name: name.to_string(),
            volume_name: opts.volume.clone(),
            snapshot_name: opts.snapshot_name.clone(),
            snapshot_created_at: snapshot_time.clone(),
            created_time: format_time(jiff::Timestamp::now()),
            size: (map.len() as u64 * opts.block_size) as i64,
            labels: Some(opts.labels.clone()),
            parameters: Some(parameters),
            is_incremental,
            compression_method: plan.compression.as_str().to_string(),
            newly_uploaded_data_size: (counters.bytes_uploaded - reuploaded_bytes) as i64,
            re_uploaded_data_size: reuploaded_bytes as i64,
            processing_blocks: !is_incremental,
            blocks: map,
            single_file: SingleFile::default(),
        };
        self.put(&backup_cfg(&opts.volume, name), Bytes::from(cfg.to_json()))
            .await?;
        // Re-read volume.cfg: another backup of the volume may have updated it meanwhile.
        let mut volume = self
            .load_volume_opt(&opts.volume)
            .await?
            .or(plan.existing_volume)
            .unwrap_or_default();
        let newer_exists = !volume.last_backup_name.is_empty()
            && volume.last_backup_name != name
            && volume.last_backup_at.as_str() > snapshot_time.as_str();
        if !newer_exists {
            volume.last_backup_name = name.to_string();
            volume.last_backup_at = snapshot_time;
        }
        volume.name = opts.volume.clone();
        volume.block_count = (plan.stored.len() as u64 + counters.blocks_new) as i64;
        volume.size = source.size() as i64;
        volume.labels = Some(opts.labels.clone());
        if volume.data_engine.is_empty() {
            volume.data_engine = "v1".to_string();
        }
        held.check()?;
        self.put(&volume_cfg(&opts.volume), Bytes::from(volume.to_json()))
            .await?;
        Ok(BackupOutcome {
            name: name.to_string(),
            volume: opts.volume.clone(),
            is_incremental,
            blocks_in_map: cfg.blocks.len(),
            counters,
        })
    }
}
