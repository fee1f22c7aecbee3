//! Deduplicated incremental block backups in Longhorn's backupstore layout, to `file://`, `nfs://`
//! and `s3://` targets. It knows nothing of Kubernetes; it never writes metadata before it holds
//! the store's lock, and never lets a completed backup reference a block that is not stored.
//!
//! # Operations (all async methods of [`Store`], one handle per target)
//! - [`Store::list_volumes`], [`Store::list_backups`], [`Store::list_backup_names`],
//!   [`Store::inspect_volume`], [`Store::inspect_backup`]: read-only, no lock.
//! - [`Store::backup`]`(source, BackupOptions)` → [`BackupOutcome`] (name, counters): full or
//!   incremental (`backup-mode`), parallel workers, progress callback, cancellation token.
//! - [`Store::restore`]`(volume, backup, sink, RestoreOptions)` and
//!   [`Store::restore_incremental`]`(volume, from, to, sink, opts)` → [`RestoreProgress`]
//!   (blocks and bytes fetched); [`Store::restore_size`] sizes the sink. In-progress backups are
//!   refused; every block is hash-checked.
//! - [`Store::delete_backup`] (mark-and-sweep GC) → [`DeleteOutcome`]; [`Store::delete_volume`].
//! - [`Store::verify`] → [`VerifyReport`] (missing/corrupt blocks and the backups they break).
//! - [`FileSource`] / [`FileSink`]: [`BlockSource`] / [`BlockSink`] for sparse files and devices.

pub mod backup;
pub mod blockmap;
pub mod catalog;
pub mod compress;
pub mod delete;
pub mod direct;
pub mod error;
pub mod file;
pub mod format;
pub mod lock;
pub mod names;
pub mod restore;
pub mod source;
pub mod store;
pub mod target;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod verify;

pub use backup::{BackupCounters, BackupMode, BackupOptions, BackupOutcome, BackupProgress};
pub use catalog::BackupEntry;
pub use compress::Compression;
pub use delete::{DeleteOutcome, SweepSkipped};
pub use error::{Error, Result};
pub use file::{FileSink, FileSource};
pub use restore::{RestoreOptions, RestoreProgress};
pub use source::{BlockSink, BlockSource, Extent};
pub use store::Store;
pub use verify::{BlockProblem, DamagedBlock, VerifyReport};
