//! The data path of one backup, without Kubernetes: an engine snapshot, a store and options in,
//! a report with the store's counters out. Incremental against the snapshot of the volume's
//! last backup when the engine can diff against it; otherwise a full scan, which the store
//! deduplicates against what it already holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use backupstore::backup::{BackupMode as StoreMode, BackupOptions, ProgressFn};
use backupstore::{BackupOutcome, BlockSource, Compression, Store};
use tokio_util::sync::CancellationToken;

/// What to back up and how.
#[derive(Clone)]
pub struct Request {
    /// Engine volume name, also the store's volume name.
    pub volume: String,
    /// Store backup name.
    pub backup: String,
    /// Engine snapshot to back up.
    pub snapshot: String,
    /// `spec.backupMode: full`: never diff, and ignore the previous backup's map.
    pub full: bool,
    pub block_size: u64,
    pub compression: Compression,
    pub labels: BTreeMap<String, String>,
    pub workers: usize,
    pub progress: Option<ProgressFn>,
    pub cancel: CancellationToken,
}

/// How the blocks to read were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Every block of the snapshot that may hold data.
    Full,
    /// Only the blocks of the layers above the last backup's snapshot.
    Incremental,
}

impl Kind {
    /// The `kind` label of the backup metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Incremental => "incremental",
        }
    }
}

/// What one backup did.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: BackupOutcome,
    pub kind: Kind,
    /// The snapshot the engine diffed against (`None`: full scan).
    pub base_snapshot: Option<String>,
    /// Why an incremental backup became a full scan (`None`: it did not, or none was tried).
    pub fallback: Option<String>,
    pub snapshot_created_at: jiff::Timestamp,
    /// Size of the volume when the snapshot was taken.
    pub volume_size: u64,
    /// The compression the store used (an existing backup volume keeps its own).
    pub compression: Compression,
    /// Bytes of data the backup holds (map entries × block size).
    pub size: u64,
    pub newly_uploaded: u64,
    pub re_uploaded: u64,
    pub block_size: u64,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "snapshot {snapshot:?} of volume {volume:?} does not exist on this node: name an existing snapshot in spec.snapshotName, or leave it empty to take a new one"
    )]
    SnapshotMissing { volume: String, snapshot: String },
    #[error("volume {volume:?}: {source}")]
    Engine {
        volume: String,
        #[source]
        source: engine::Error,
    },
    #[error(transparent)]
    Store(#[from] backupstore::Error),
    #[error("the backup was cancelled (agent shutting down)")]
    Cancelled,
}

fn source(
    volume: &Arc<engine::Volume>,
    base: Option<&str>,
    snapshot: &str,
) -> Result<Arc<dyn BlockSource>, engine::Error> {
    Ok(Arc::new(volume.backup_source(base, snapshot)?))
}

/// Back up `request.snapshot` of `volume` into `store`.
pub async fn back_up(
    volume: &Arc<engine::Volume>,
    store: &Store,
    request: Request,
) -> Result<Report, DataError> {
    let engine_error = |source| DataError::Engine {
        volume: request.volume.clone(),
        source,
    };
    let info = volume
        .list_snapshots()
        .map_err(engine_error)?
        .into_iter()
        .find(|s| s.name == request.snapshot)
        .ok_or_else(|| DataError::SnapshotMissing {
            volume: request.volume.clone(),
            snapshot: request.snapshot.clone(),
        })?;

    // The base of an incremental backup: the snapshot of the volume's completed last backup.
    let base = if request.full {
        None
    } else {
        store
            .incremental_base(&request.volume)
            .await?
            .map(|(_, snapshot)| snapshot)
    };
    let mut fallback = None;
    let mut diff = None;
    if let Some(base) = &base {
        match source(volume, Some(base), &request.snapshot) {
            Ok(s) => diff = Some(s),
            // The base was merged away, or is no ancestor after a revert (or is this snapshot):
            // a diff would be wrong, a full scan deduplicated by the store is right.
            Err(
                e @ (engine::Error::NotAncestor { .. } | engine::Error::SnapshotNotFound { .. }),
            ) => fallback = Some(format!("cannot diff against snapshot {base:?}: {e}")),
            Err(e) => return Err(engine_error(e)),
        }
    }

    let mode = if request.full {
        StoreMode::Full
    } else {
        StoreMode::Incremental
    };
    let options = |request: &Request| {
        let mut o = BackupOptions::new(request.volume.clone(), request.snapshot.clone());
        o.backup_name = Some(request.backup.clone());
        o.snapshot_created_at = Some(info.created);
        o.mode = mode;
        o.block_size = request.block_size;
        o.compression = request.compression;
        o.workers = request.workers.max(1);
        o.labels = request.labels.clone();
        o.progress = request.progress.clone();
        o.cancel = request.cancel.clone();
        o
    };

    let mut kind = Kind::Full;
    let mut used_base = None;
    let mut outcome = None;
    if let Some(diff) = diff {
        match store.backup(diff, options(&request)).await {
            Ok(o) => {
                kind = Kind::Incremental;
                used_base = base.clone();
                outcome = Some(o);
            }
            // The last backup changed between our question and the store's lock (another
            // backup of the volume finished meanwhile): scan in full.
            Err(e @ backupstore::Error::NoBaseForDiff { .. }) => {
                fallback = Some(e.to_string());
            }
            Err(backupstore::Error::Cancelled) => return Err(DataError::Cancelled),
            Err(e) => return Err(e.into()),
        }
    }
    let outcome = match outcome {
        Some(o) => o,
        None => {
            let full = source(volume, None, &request.snapshot).map_err(engine_error)?;
            match store.backup(full, options(&request)).await {
                Ok(o) => o,
                Err(backupstore::Error::Cancelled) => return Err(DataError::Cancelled),
                Err(e) => return Err(e.into()),
            }
        }
    };

    let counters = outcome.counters;
    // The store splits uploaded bytes between new and re-uploaded blocks the same way.
    let re_uploaded = if counters.blocks_reuploaded > 0 {
        counters.bytes_uploaded * counters.blocks_reuploaded
            / (counters.blocks_new + counters.blocks_reuploaded)
    } else {
        0
    };
    // The store keeps an existing backup volume's compression; ask it which one it used.
    let compression = match store.inspect_volume(&request.volume).await {
        Ok(v) => Compression::parse(&v.compression_method).unwrap_or(request.compression),
        Err(_) => request.compression,
    };
    Ok(Report {
        size: outcome.blocks_in_map as u64 * request.block_size,
        outcome,
        kind,
        base_snapshot: used_base,
        fallback,
        snapshot_created_at: info.created,
        volume_size: info.volume_size,
        compression,
        newly_uploaded: counters.bytes_uploaded - re_uploaded,
        re_uploaded,
        block_size: request.block_size,
    })
}
