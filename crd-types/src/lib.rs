//! The Bulwark API (`bulwark.io/v1beta1`): the custom resource types, their defaults, the
//! admission-time validation rules (OpenAPI schema and CEL) and the same rules as pure Rust
//! `validate()` for objects that predate a rule, plus CRD generation. It holds only types and
//! rules: never a client call, never I/O.

// kube's `printcolumn(...)` repeats keys such as `type_` per column; clippy reads that as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod backing_image;
pub mod backup;
pub mod backup_target;
pub mod backup_volume;
pub mod common;
pub mod crds;
pub mod recurring_job;
pub mod snapshot;
pub mod validate;
pub mod volume;

pub use backing_image::{BackingImage, BackingImageSpec, BackingImageStatus};
pub use backup::{Backup, BackupSpec, BackupStatus};
pub use backup_target::{BackupTarget, BackupTargetSpec, BackupTargetStatus};
pub use backup_volume::{BackupVolume, BackupVolumeSpec, BackupVolumeStatus};
pub use common::{API_GROUP, API_VERSION};
pub use recurring_job::{RecurringJob, RecurringJobSpec, RecurringJobStatus};
pub use snapshot::{Snapshot, SnapshotSpec, SnapshotStatus};
pub use validate::{FieldError, Validate, ValidationErrors};
pub use volume::{Volume, VolumeSpec, VolumeStatus};
