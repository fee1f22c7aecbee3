//! Deduplicated incremental block backups in Longhorn's backupstore layout, to `file://`, `nfs://`
//! and `s3://` targets. It knows nothing of Kubernetes; it never writes metadata before it holds
//! the store's lock, and never lets a completed backup reference a block that is not stored.

pub mod source;
pub mod target;
#[cfg(feature = "test-support")]
pub mod testing;
