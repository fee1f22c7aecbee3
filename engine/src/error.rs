//! Every failure the engine reports, one variant per distinct cause.

use std::io;
use std::path::PathBuf;

use crate::failpoint::FailPoint;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "volume name {name:?} is invalid: {reason}; use 1-63 characters from a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.'"
    )]
    InvalidVolumeName { name: String, reason: &'static str },
    #[error(
        "snapshot name {name:?} is invalid: {reason}; use 1-63 characters from a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.'"
    )]
    InvalidSnapshotName { name: String, reason: &'static str },
    #[error("volume size {size} bytes is invalid: it must be a positive multiple of 4096 bytes")]
    InvalidSize { size: u64 },
    #[error("block size {block_size} is invalid: it must be a positive multiple of 4096 bytes")]
    InvalidBlockSize { block_size: u64 },
    #[error("volume {name:?} already exists under {dir}; pick another name or delete it first")]
    VolumeExists { name: String, dir: PathBuf },
    #[error("volume {name:?} not found under {dir}")]
    VolumeNotFound { name: String, dir: PathBuf },
    #[error("volume {name:?} is open in this process; drop every handle to it before deleting it")]
    VolumeInUse { name: String },
    #[error(
        "volume {name:?} is locked by another process (lock file {path}); stop that process first"
    )]
    VolumeLocked { name: String, path: PathBuf },
    #[error("snapshot {snapshot:?} already exists in volume {volume:?}; choose another name")]
    SnapshotExists { volume: String, snapshot: String },
    #[error("snapshot {snapshot:?} not found in volume {volume:?}")]
    SnapshotNotFound { volume: String, snapshot: String },
    #[error(
        "snapshot {from:?} is not an ancestor of {to:?} in volume {volume:?} (a revert or merge happened between them), so no exact diff exists; take a full backup deduplicated against the store instead"
    )]
    NotAncestor {
        volume: String,
        from: String,
        to: String,
    },
    #[error(
        "cannot shrink volume {volume:?} from {size} to {requested} bytes; only expansion is supported"
    )]
    ShrinkNotSupported {
        volume: String,
        size: u64,
        requested: u64,
    },
    #[error(
        "range at offset {offset} of {len} bytes lies outside volume {volume:?} of {size} bytes"
    )]
    OutOfRange {
        volume: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("backing image {path}: {reason}")]
    InvalidBacking { path: PathBuf, reason: String },
    #[error(
        "the filesystem under {path} cannot track 4 KiB sectors exactly ({detail}); put the data directory on ext4/xfs with 4 KiB blocks or on tmpfs without huge pages"
    )]
    UnsupportedFilesystem { path: PathBuf, detail: String },
    #[error("metadata {path} is corrupt: {reason}; restore it from a copy or recreate the volume")]
    CorruptMetadata { path: PathBuf, reason: String },
    #[error(
        "volume {volume:?} was written, reverted or snapshotted while a restore was staged on it; stage the restore again"
    )]
    StagedRestoreConflict { volume: String },
    #[error(
        "volume {volume:?} had a failed metadata operation and must be reopened (the chain on disk is consistent)"
    )]
    Poisoned { volume: String },
    #[error("injected failure at {0:?} (test hook)")]
    InjectedFailure(FailPoint),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::OutOfRange { .. }
            | Error::InvalidSize { .. }
            | Error::InvalidBlockSize { .. }
            | Error::InvalidVolumeName { .. }
            | Error::InvalidSnapshotName { .. } => io::ErrorKind::InvalidInput,
            Error::VolumeNotFound { .. } | Error::SnapshotNotFound { .. } => {
                io::ErrorKind::NotFound
            }
            Error::VolumeExists { .. } | Error::SnapshotExists { .. } => {
                io::ErrorKind::AlreadyExists
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
