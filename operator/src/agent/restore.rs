//! The data path of volumes created with content: restores from a backup store and clones of a
//! snapshot or of a volume's current data, each into a new engine volume.
//!
//! Crash safety: before the new volume is created, an *incomplete* marker
//! (`<data-dir>/incomplete/<volume>`, fsynced) is written, and it is removed only after the
//! data is complete and flushed. A volume whose marker exists after a restart is half written:
//! the agent deletes it and starts over, and never serves it. Empty volumes need no marker (the
//! engine creates a volume atomically).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backupstore::restore::{RestoreOptions, RestoreProgress, RestoreProgressFn};
use backupstore::target::BackupUrl;
use engine::{Engine, SnapshotReader, Volume, VolumeSink};

/// Sizes of new volumes are rounded up to this (the default backup block size), so a backup of
/// the volume never ends in a partial block.
pub const SIZE_ALIGN: u64 = 2 << 20;
/// Chunk of a clone copy.
const COPY_CHUNK: u64 = 2 << 20;
/// Label on engine snapshots that exist only while a clone copies from them; no Snapshot object
/// is created for them.
pub const TEMPORARY_LABEL: &str = "bulwark.io/temporary";

/// `bytes` rounded up to whole 2 MiB; None on overflow or zero.
pub fn round_size(bytes: u64) -> Option<u64> {
    if bytes == 0 {
        return None;
    }
    bytes.checked_next_multiple_of(SIZE_ALIGN)
}

/// Why creating a volume with content failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("source volume {volume:?} has no data on this node")]
    SourceNotHere { volume: String },
    #[error("snapshot {snapshot:?} of volume {volume:?} does not exist")]
    SnapshotMissing { volume: String, snapshot: String },
    #[error("{0}")]
    Engine(#[from] engine::Error),
    #[error("restore from the backup store failed: {0}")]
    Store(Box<backupstore::Error>),
    #[error("copying data failed: {0}")]
    Copy(#[source] io::Error),
    #[error("cannot record the restore's progress in {path}: {source}")]
    Marker {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the size {0} bytes cannot be rounded up to whole 2 MiB")]
    Size(u64),
    #[error("the data task stopped unexpectedly: {0}")]
    Task(String),
}

impl From<backupstore::Error> for DataError {
    fn from(e: backupstore::Error) -> DataError {
        DataError::Store(Box::new(e))
    }
}

/// Run blocking engine work off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, DataError>
where
    F: FnOnce() -> Result<T, DataError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DataError::Task(e.to_string()))?
}

/// The incomplete markers under a data directory.
#[derive(Debug, Clone)]
pub struct Markers {
    dir: PathBuf,
}

impl Markers {
    pub fn new(data_dir: &Path) -> Markers {
        Markers {
            dir: data_dir.join("incomplete"),
        }
    }

    fn path(&self, volume: &str) -> PathBuf {
        self.dir.join(volume)
    }

    /// Whether `volume`'s data is known to be incomplete.
    pub fn is_set(&self, volume: &str) -> bool {
        self.path(volume).exists()
    }

    /// Record (durably) that `volume` is being written; `what` says by what.
    pub fn set(&self, volume: &str, what: &str) -> Result<(), DataError> {
        let marker = |source| DataError::Marker {
            path: self.path(volume),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(marker)?;
        let path = self.path(volume);
        let file = std::fs::File::create(&path).map_err(marker)?;
        io::Write::write_all(&mut &file, what.as_bytes()).map_err(marker)?;
        file.sync_all().map_err(marker)?;
        sync_dir(&self.dir).map_err(marker)
    }

    /// Record (durably) that `volume`'s data is complete (or gone).
    pub fn clear(&self, volume: &str) -> Result<(), DataError> {
        let marker = |source| DataError::Marker {
            path: self.path(volume),
            source,
        };
        match std::fs::remove_file(self.path(volume)) {
            Ok(()) => sync_dir(&self.dir).map_err(marker),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(marker(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Delete `volume`'s engine data, if any, and its marker: what a half-done create leaves.
pub fn discard(engine: &Engine, markers: &Markers, volume: &str) -> Result<(), DataError> {
    match engine.delete_volume(volume) {
        Ok(()) | Err(engine::Error::VolumeNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    markers.clear(volume)
}

/// Restore the backup `url` into a new engine volume `name` of at least `min_size` bytes
/// (larger when the backup's volume is larger). `progress` sees the store's running totals;
/// `cancel` stops the restore (its half-written volume is removed).
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    engine: Arc<Engine>,
    markers: Markers,
    store: &backupstore::Store,
    url: &BackupUrl,
    name: &str,
    min_size: u64,
    progress: Option<RestoreProgressFn>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<RestoreProgress, DataError> {
    let backup_size = store.restore_size(&url.volume, &url.backup).await?;
    let wanted = backup_size.max(min_size);
    let size = round_size(wanted).ok_or(DataError::Size(wanted))?;
    let volume = {
        let (engine, markers, name, what) = (
            engine.clone(),
            markers.clone(),
            name.to_owned(),
            url.to_string(),
        );
        blocking(move || {
            markers.set(&name, &format!("restore {what}\n"))?;
            Ok(engine.create_volume(&name, size, None)?)
        })
        .await?
    };
    let sink = Arc::new(VolumeSink::new(volume.clone()));
    let options = RestoreOptions {
        progress,
        cancel,
        ..RestoreOptions::default()
    };
    let restored = store
        .restore(&url.volume, &url.backup, sink.clone(), options)
        .await;
    drop(sink);
    let finished = match restored {
        Ok(p) => {
            let flushed = volume.clone();
            blocking(move || flushed.flush().map_err(DataError::Copy))
                .await
                .map(|()| p)
        }
        Err(e) => Err(e.into()),
    };
    drop(volume);
    finish(engine, markers, name, finished).await
}

/// How a standby volume was brought to a newer backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Followed {
    pub progress: RestoreProgress,
    /// False when the backup the volume held was gone from the store and the whole backup was
    /// restored instead.
    pub incremental: bool,
}

/// Bring the standby volume `name`, which holds backup `from` of the store volume `url_volume`,
/// to backup `to`: only blocks whose checksum differs are fetched, vanished blocks read as zeros.
/// When `from` is gone from the store, `to` is restored in full. Everything is written into a
/// staged layer that replaces the volume's data in one crash-safe step, so readers (after
/// activation) and a crash in the middle never see a half-applied restore: an interrupted run
/// leaves the volume at `from`, and running it again finishes the job.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    engine: Arc<Engine>,
    store: &backupstore::Store,
    url_volume: &str,
    from: &str,
    to: &str,
    name: &str,
    progress: Option<RestoreProgressFn>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<Followed, DataError> {
    let wanted = store.restore_size(url_volume, to).await?;
    let size = round_size(wanted).ok_or(DataError::Size(wanted))?;
    let staged = {
        let name = name.to_owned();
        blocking(move || {
            let volume = engine.open_volume(&name)?;
            // A backup of a grown volume restores into a grown standby.
            if size > volume.size() {
                volume.expand(size)?;
            }
            Ok(volume.stage_restore()?)
        })
        .await?
    };
    let sink = Arc::new(staged);
    let options = RestoreOptions {
        progress,
        cancel,
        ..RestoreOptions::default()
    };
    let incremental = store
        .restore_incremental(url_volume, from, to, sink.clone(), options.clone())
        .await;
    let (restored, incremental) = match incremental {
        Err(backupstore::Error::BackupNotFound { backup, .. }) if backup == from => (
            store.restore(url_volume, to, sink.clone(), options).await,
            false,
        ),
        other => (other, true),
    };
    let progress = restored?;
    let staged = Arc::try_unwrap(sink)
        .map_err(|_| DataError::Task("the staged restore is still in use".into()))?;
    blocking(move || {
        backupstore::BlockSink::flush(&staged).map_err(DataError::Copy)?;
        Ok(staged.commit()?)
    })
    .await?;
    Ok(Followed {
        progress,
        incremental,
    })
}

/// Clone snapshot `snapshot` of the local volume `source` into a new volume `name` of at least
/// `min_size` bytes. Returns the bytes copied.
pub async fn clone_snapshot(
    engine: Arc<Engine>,
    markers: Markers,
    source: &str,
    snapshot: &str,
    name: &str,
    min_size: u64,
) -> Result<u64, DataError> {
    let (e, m, src, snap, dest) = (
        engine.clone(),
        markers.clone(),
        source.to_owned(),
        snapshot.to_owned(),
        name.to_owned(),
    );
    let copied = blocking(move || {
        let source = open_source(&e, &src)?;
        let reader = read_snapshot(&source, &snap)?;
        copy_into_new(&e, &m, &reader, &dest, min_size)
    })
    .await;
    finish(engine, markers, name, copied).await
}

/// Clone the current data of the local volume `source` into a new volume `name` (through a
/// temporary snapshot, deleted afterwards). Returns the bytes copied.
pub async fn clone_volume(
    engine: Arc<Engine>,
    markers: Markers,
    source: &str,
    name: &str,
    min_size: u64,
) -> Result<u64, DataError> {
    let (e, m, src, dest) = (
        engine.clone(),
        markers.clone(),
        source.to_owned(),
        name.to_owned(),
    );
    let copied = blocking(move || {
        let source = open_source(&e, &src)?;
        let temporary = temporary_snapshot_name(&dest);
        // A leftover of an interrupted clone: merge it away first.
        match source.delete_snapshot(&temporary) {
            Ok(()) | Err(engine::Error::SnapshotNotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let labels = [(TEMPORARY_LABEL.to_owned(), "true".to_owned())].into();
        source.snapshot(&temporary, labels)?;
        let copied = read_snapshot(&source, &temporary)
            .and_then(|reader| copy_into_new(&e, &m, &reader, &dest, min_size));
        let deleted = source.delete_snapshot(&temporary);
        let copied = copied?;
        deleted?;
        Ok(copied)
    })
    .await;
    finish(engine, markers, name, copied).await
}

/// The temporary snapshot a clone of the volume into `target` takes (at most 63 characters).
pub fn temporary_snapshot_name(target: &str) -> String {
    let mut name = format!("clone-for-{target}");
    name.truncate(63);
    name
}

fn open_source(engine: &Engine, source: &str) -> Result<Arc<Volume>, DataError> {
    engine.open_volume(source).map_err(|e| match e {
        engine::Error::VolumeNotFound { .. } | engine::Error::InvalidVolumeName { .. } => {
            DataError::SourceNotHere {
                volume: source.to_owned(),
            }
        }
        e => e.into(),
    })
}

fn read_snapshot(source: &Arc<Volume>, snapshot: &str) -> Result<SnapshotReader, DataError> {
    source.snapshot_reader(snapshot).map_err(|e| match e {
        engine::Error::SnapshotNotFound { .. } | engine::Error::InvalidSnapshotName { .. } => {
            DataError::SnapshotMissing {
                volume: source.name().to_owned(),
                snapshot: snapshot.to_owned(),
            }
        }
        e => e.into(),
    })
}

/// Runs of 4 KiB sectors of `buf` holding anything but zeros, as byte ranges.
pub fn nonzero_runs(buf: &[u8]) -> Vec<(usize, usize)> {
    let sector = engine::SECTOR as usize;
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, chunk) in buf.chunks(sector).enumerate() {
        if chunk.iter().all(|b| *b == 0) {
            continue;
        }
        let (start, end) = (i * sector, i * sector + chunk.len());
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

/// Copy every non-zero sector the snapshot view holds into a new volume (a fresh volume reads
/// zeros everywhere, so zeros need no write and the clone stays as sparse as its source).
fn copy_into_new(
    engine: &Engine,
    markers: &Markers,
    reader: &SnapshotReader,
    name: &str,
    min_size: u64,
) -> Result<u64, DataError> {
    let wanted = reader.size().max(min_size);
    let size = round_size(wanted).ok_or(DataError::Size(wanted))?;
    markers.set(name, &format!("clone {}\n", reader.snapshot()))?;
    let dest = engine.create_volume(name, size, None)?;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    let mut copied = 0u64;
    for extent in reader.allocated_extents(COPY_CHUNK)? {
        let mut pos = extent.offset;
        while pos < extent.end() {
            let n = (extent.end() - pos).min(COPY_CHUNK) as usize;
            reader
                .read_at(pos, &mut buf[..n])
                .map_err(DataError::Copy)?;
            for (start, end) in nonzero_runs(&buf[..n]) {
                dest.write_at(pos + start as u64, &buf[start..end])
                    .map_err(DataError::Copy)?;
                copied += (end - start) as u64;
            }
            pos += n as u64;
        }
    }
    dest.flush().map_err(DataError::Copy)?;
    Ok(copied)
}

/// Success: clear the marker (the data is complete). Failure: remove the half-written volume.
async fn finish<T: Send + 'static>(
    engine: Arc<Engine>,
    markers: Markers,
    name: &str,
    result: Result<T, DataError>,
) -> Result<T, DataError> {
    let name = name.to_owned();
    match result {
        Ok(value) => {
            blocking(move || markers.clear(&name)).await?;
            Ok(value)
        }
        Err(error) => {
            // A volume that existed before (a name clash) is not ours to delete: only the
            // marker set for the failed create goes.
            let existed = matches!(error, DataError::Engine(engine::Error::VolumeExists { .. }));
            let cleanup = blocking(move || {
                if existed {
                    markers.clear(&name)
                } else {
                    discard(&engine, &markers, &name)
                }
            })
            .await;
            if let Err(cleanup) = cleanup {
                tracing::warn!(%cleanup, "cannot remove a half-created volume; it is retried");
            }
            Err(error)
        }
    }
}

/// Percent of a restore done (0–100).
pub fn percent(progress: &RestoreProgress) -> i32 {
    if progress.blocks_total == 0 {
        return 0;
    }
    let p = progress.blocks_done.saturating_mul(100) / progress.blocks_total;
    p.min(100) as i32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tests_restore.rs"]
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "tests_dr.rs"]
mod tests_dr;
