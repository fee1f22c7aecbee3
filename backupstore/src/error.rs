//! Every failure the store reports, each naming the target and the object it concerns.

use std::io;

/// A failure of a backup-store operation. Messages name the target and the object and, where the
/// user can act, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid {kind} name {name:?}: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$ (letters, digits, '_', '.', '-'; at least two characters)"
    )]
    InvalidName { kind: &'static str, name: String },

    #[error("{target}: object {object} does not exist")]
    NotFound { target: String, object: String },

    #[error("{target}: access to {object} was refused ({source}); check the target's credentials")]
    AccessDenied {
        target: String,
        object: String,
        #[source]
        source: object_store::Error,
    },

    #[error("{target}: request for {object} failed: {source}")]
    Storage {
        target: String,
        object: String,
        #[source]
        source: object_store::Error,
    },

    #[error("{target}: {object} is not a valid backup-store file: {reason}")]
    InvalidMetadata {
        target: String,
        object: String,
        reason: String,
    },

    #[error("{target}: block {object} is corrupt: {reason}")]
    CorruptBlock {
        target: String,
        object: String,
        reason: String,
    },

    #[error("{target}: backup volume {volume} does not exist")]
    VolumeNotFound { target: String, volume: String },

    #[error("{target}: volume {volume} has no backup {backup}")]
    BackupNotFound {
        target: String,
        volume: String,
        backup: String,
    },

    #[error(
        "{target}: backup {backup} of volume {volume} is in progress or was interrupted (its CreatedTime is empty); it cannot be restored"
    )]
    BackupInProgress {
        target: String,
        volume: String,
        backup: String,
    },

    #[error(
        "{target}: volume {volume} is backed up with {existing}-byte blocks; a {requested}-byte block size cannot be mixed in (use {existing})"
    )]
    BlockSizeMismatch {
        target: String,
        volume: String,
        existing: u64,
        requested: u64,
    },

    #[error("invalid block size {0}: use 2097152 (2 MiB) or 16777216 (16 MiB)")]
    InvalidBlockSize(u64),

    #[error("unsupported compression method {0:?}: use none, gzip or lz4")]
    UnsupportedCompression(String),

    #[error(
        "{target}: could not lock volume {volume} for {purpose}: lock {holder} of another kind is held; retry later"
    )]
    LockBusy {
        target: String,
        volume: String,
        purpose: &'static str,
        holder: String,
    },

    #[error(
        "{target}: the lock on volume {volume} was lost (its file vanished or could not be refreshed)"
    )]
    LockLost { target: String, volume: String },

    #[error("operation cancelled")]
    Cancelled,

    #[error("reading the source at offset {offset}: {source}")]
    SourceRead {
        offset: u64,
        #[source]
        source: io::Error,
    },

    #[error("writing the restore target at offset {offset}: {source}")]
    SinkWrite {
        offset: u64,
        #[source]
        source: io::Error,
    },

    #[error("block-source error: {0}")]
    Source(String),

    #[error(
        "{target}: the block list of backup {backup} is invalid: {reason}; the backup cannot be used"
    )]
    InvalidBlockMap {
        target: String,
        backup: String,
        reason: String,
    },

    #[error(
        "{target}: volume {volume} has no completed last backup of snapshot {base:?} to lay this diff over (last backup: {last:?}); back up the whole snapshot instead"
    )]
    NoBaseForDiff {
        target: String,
        volume: String,
        base: String,
        last: String,
    },

    #[error("internal task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for failures that a retry cannot fix (missing objects, refused credentials, bad
    /// input), as opposed to transient network or server trouble.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Error::Storage { source, .. } if is_transient(source))
    }
}

/// Whether an object-store error may go away on retry.
pub(crate) fn is_transient(err: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        err,
        E::NotFound { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::AlreadyExists { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}
