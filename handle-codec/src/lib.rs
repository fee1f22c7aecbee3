//! Decodes CSI snapshot handles (`snap://`, `bak://`, legacy `bs://`, `bi://backing?...`) into typed
//! values and encodes them back, compatible with the handles Longhorn writes; also interprets
//! VolumeSnapshotClass parameters. It must never do I/O, know Kubernetes types, or panic on any input:
//! every string decodes to a value or to a [`DecodeError`] that names the wrong part and the fix.
//!
//! ```
//! use handle_codec::{SnapshotHandle, decode};
//! let handle = decode("snap://pvc-1/snapshot-2").unwrap();
//! assert!(matches!(&handle, SnapshotHandle::Snapshot { volume, snapshot }
//!     if volume.as_str() == "pvc-1" && snapshot.as_str() == "snapshot-2"));
//! assert_eq!(handle.encode(), "snap://pvc-1/snapshot-2");
//! ```
//!
//! The grammar of every form is in the crate README and on [`SnapshotHandle`] and
//! [`BackingImageHandle`].

mod backing_image;
mod class;
mod error;
mod escape;
mod handle;
mod name;
mod query;
mod values;

pub use backing_image::{
    BackingImageHandle, BackingImageSource, CloneEncryption, ExportType, ExtraParameterError,
    ExtraParameters, SourceType, keys,
};
pub use class::{
    BackupMode, ClassParameterError, SnapshotClassRequest, SnapshotRequestKind,
    parameters as class_parameters, parse_snapshot_class_parameters,
};
pub use error::{DecodeError, PathScheme, SNIPPET_CHARS};
pub use handle::{HandleKind, SnapshotHandle};
pub use name::{MAX_NAME_BYTES, Name, NameError, ObjectName};
pub use values::{BackupUrl, ChecksumError, HttpUrl, Sha512Checksum, UrlError};

/// Decodes a snapshot handle; same as [`SnapshotHandle::decode`].
pub fn decode(handle: &str) -> Result<SnapshotHandle, DecodeError> {
    SnapshotHandle::decode(handle)
}

/// Decodes a snapshot handle given as bytes; same as [`SnapshotHandle::decode_bytes`].
pub fn decode_bytes(handle: &[u8]) -> Result<SnapshotHandle, DecodeError> {
    SnapshotHandle::decode_bytes(handle)
}

/// Encodes a snapshot handle; same as [`SnapshotHandle::encode`].
pub fn encode(handle: &SnapshotHandle) -> String {
    handle.encode()
}
