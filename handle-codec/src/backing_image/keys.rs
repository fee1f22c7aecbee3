//! Query keys of backing-image handles, spelled as Longhorn spells them.

/// Name of the backing image (required).
pub const BACKING_IMAGE: &str = "backingImage";
/// Source type (required): `download`, `export-from-volume`, `upload`, `restore`, `clone`.
pub const DATA_SOURCE_TYPE: &str = "backingImageDataSourceType";
/// Expected SHA-512 of the whole image (optional).
pub const CHECKSUM: &str = "backingImageChecksum";
/// `download`: the http(s) URL (required).
pub const URL: &str = "url";
/// `download`: expected SHA-512 of the downloaded file (optional).
pub const DOWNLOAD_CHECKSUM: &str = "checksum";
/// `export-from-volume`: the volume to export (required).
pub const VOLUME_NAME: &str = "volume-name";
/// `export-from-volume`: `raw` or `qcow2` (optional, default `raw`).
pub const EXPORT_TYPE: &str = "export-type";
/// `restore`: the backup URL (required).
pub const BACKUP_URL: &str = "backup-url";
/// `restore`: how many blocks to fetch at once (optional).
pub const CONCURRENT_LIMIT: &str = "concurrent-limit";
/// `clone`: the source backing image (required).
pub const CLONE_BACKING_IMAGE: &str = "backing-image";
/// `clone`: `encrypt`, `decrypt` or `ignore` (optional).
pub const ENCRYPTION: &str = "encryption";
/// `clone`: the secret holding the encryption key (optional).
pub const SECRET: &str = "secret";
/// `clone`: the namespace of that secret (optional).
pub const SECRET_NAMESPACE: &str = "secret-namespace";

/// Every key this crate interprets; [`super::ExtraParameters`] may not use them.
pub const RESERVED: [&str; 13] = [
    BACKING_IMAGE,
    DATA_SOURCE_TYPE,
    CHECKSUM,
    URL,
    DOWNLOAD_CHECKSUM,
    VOLUME_NAME,
    EXPORT_TYPE,
    BACKUP_URL,
    CONCURRENT_LIMIT,
    CLONE_BACKING_IMAGE,
    ENCRYPTION,
    SECRET,
    SECRET_NAMESPACE,
];
