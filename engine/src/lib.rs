//! Node-local volumes: a chain of sparse 4 KiB-sector layer files (head, snapshots, optional
//! backing image), instant snapshots, exact change tracking from allocated extents, restores and
//! a FUSE file frontend. No Kubernetes types; every metadata change is crash-safe; a discard
//! never punches a hole over older data, and a diff is never computed across a revert.
//!
//! # API (contract with the frontend and image modules)
//! - [`Engine::open`]`(data_dir)`; [`Engine::create_volume`]`(name, size, Option<`[`BackingLayer`]`>)`
//!   (backing = a raw sparse file), [`Engine::open_volume`], [`Engine::delete_volume`],
//!   [`Engine::list_volumes`].
//! - [`Volume`] (`Arc`, `Send + Sync`) implements [`io::VolumeIo`] (size, read_at, write_at,
//!   discard, flush) and offers [`Volume::snapshot`], [`Volume::list_snapshots`],
//!   [`Volume::revert`], [`Volume::delete_snapshot`] (merge into child), [`Volume::expand`],
//!   [`Volume::head_changed_bytes`], [`Volume::actual_size`], [`Volume::changed_extents`],
//!   [`Volume::snapshot_reader`]
//!   ([`SnapshotReader`]: read_at + allocated_extents, for export).
//! - Backups: [`Volume::backup_source`] → [`SnapshotSource`] (`backupstore::source::BlockSource`,
//!   full or incremental; incremental only when `from` is an ancestor of `to`, else
//!   [`Error::NotAncestor`]). Restores: [`VolumeSink`] (a new volume) and
//!   [`Volume::stage_restore`] → [`StagedRestore`] (`BlockSink`, then `commit` swaps atomically).

pub mod frontend;
pub mod image;
pub mod io;

mod chain;
mod changes;
mod engine;
mod error;
mod extent_cache;
mod failpoint;
mod layer;
mod meta;
mod restore;
mod sector;
mod volume;

pub use changes::{SnapshotReader, SnapshotSource};
pub use engine::{BackingLayer, Engine};
pub use error::{Error, Result};
pub use failpoint::FailPoint;
pub use restore::{StagedRestore, VolumeSink};
pub use sector::SECTOR;
pub use volume::{SnapshotInfo, Volume};
