//! The JSON files of the store (`volume.cfg`, `backup_<name>.cfg`, lock files): exact Go
//! encoding when writing, lenient decoding when reading (pure: no I/O).

pub mod gojson;

use std::collections::BTreeMap;

use serde::Deserialize;

use gojson::{Obj, lenient_double_str, lenient_i64, lenient_str};

/// Default block size (2 MiB), used when a backup does not name one.
pub const DEFAULT_BLOCK_SIZE: u64 = 2 * 1024 * 1024;
/// The only other block size Longhorn allows (16 MiB).
pub const LARGE_BLOCK_SIZE: u64 = 16 * 1024 * 1024;

pub const PARAM_BACKUP_MODE: &str = "backup-mode";
pub const PARAM_BLOCK_SIZE: &str = "backup-block-size";

/// `volume.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeConfig {
    #[serde(deserialize_with = "lenient_str")]
    pub name: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub size: i64,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(deserialize_with = "lenient_str")]
    pub created_time: String,
    #[serde(deserialize_with = "lenient_str")]
    pub last_backup_name: String,
    #[serde(deserialize_with = "lenient_str")]
    pub last_backup_at: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub block_count: i64,
    #[serde(deserialize_with = "lenient_double_str")]
    pub backing_image_name: String,
    #[serde(deserialize_with = "lenient_double_str")]
    pub backing_image_checksum: String,
    #[serde(deserialize_with = "lenient_double_str")]
    pub compression_method: String,
    #[serde(deserialize_with = "lenient_double_str")]
    pub storage_class_name: String,
    #[serde(deserialize_with = "lenient_double_str")]
    pub data_engine: String,
}

impl VolumeConfig {
    /// Go's encoding of the volume, byte for byte.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(400);
        Obj::open(&mut out)
            .str("Name", &self.name)
            .int_as_str("Size", self.size)
            .map("Labels", self.labels.as_ref())
            .str("CreatedTime", &self.created_time)
            .str("LastBackupName", &self.last_backup_name)
            .str("LastBackupAt", &self.last_backup_at)
            .int_as_str("BlockCount", self.block_count)
            .double_str("BackingImageName", &self.backing_image_name)
            .double_str("BackingImageChecksum", &self.backing_image_checksum)
            .double_str("CompressionMethod", &self.compression_method)
            .double_str("StorageClassName", &self.storage_class_name)
            .double_str("DataEngine", &self.data_engine)
            .close();
        out
    }

    pub fn from_json(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// One entry of a backup's block map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockMapping {
    pub offset: i64,
    pub block_checksum: String,
}

/// `SingleFile` of a backup cfg (unused by block backups, kept for round trips).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SingleFile {
    #[serde(deserialize_with = "lenient_str")]
    pub file_path: String,
}

/// `backups/backup_<name>.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BackupConfig {
    #[serde(deserialize_with = "lenient_str")]
    pub name: String,
    #[serde(deserialize_with = "lenient_str")]
    pub volume_name: String,
    #[serde(deserialize_with = "lenient_str")]
    pub snapshot_name: String,
    #[serde(deserialize_with = "lenient_str")]
    pub snapshot_created_at: String,
    /// Empty means the backup is in progress (or was interrupted).
    #[serde(deserialize_with = "lenient_str")]
    pub created_time: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub size: i64,
    pub labels: Option<BTreeMap<String, String>>,
    pub parameters: Option<BTreeMap<String, String>>,
    pub is_incremental: bool,
    /// A plain string here (unlike volume.cfg); read leniently in case it was doubly encoded.
    #[serde(deserialize_with = "lenient_double_str")]
    pub compression_method: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub newly_uploaded_data_size: i64,
    #[serde(deserialize_with = "lenient_i64")]
    pub re_uploaded_data_size: i64,
    /// `{}` when present (full backups), `null` otherwise.
    #[serde(deserialize_with = "present_object")]
    pub processing_blocks: bool,
    #[serde(deserialize_with = "null_as_empty")]
    pub blocks: Vec<BlockMapping>,
    pub single_file: SingleFile,
}

fn present_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<serde::de::IgnoredAny>::deserialize(d)?.is_some())
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BlockMapping>, D::Error> {
    Ok(Option::<Vec<BlockMapping>>::deserialize(d)?.unwrap_or_default())
}

impl BackupConfig {
    /// An in-progress placeholder: only the names and the compression method are set.
    pub fn placeholder(name: &str, volume: &str, compression_method: &str) -> BackupConfig {
        BackupConfig {
            name: name.to_string(),
            volume_name: volume.to_string(),
            compression_method: compression_method.to_string(),
            ..BackupConfig::default()
        }
    }

    /// Whether the backup is still in progress or was interrupted.
    pub fn in_progress(&self) -> bool {
        self.created_time.is_empty()
    }

    /// Go's encoding of the backup, byte for byte.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(200 + self.blocks.len() * 100);
        let mut obj = Obj::open(&mut out);
        obj.str("Name", &self.name)
            .str("VolumeName", &self.volume_name)
            .str("SnapshotName", &self.snapshot_name)
            .str("SnapshotCreatedAt", &self.snapshot_created_at)
            .str("CreatedTime", &self.created_time)
            .int_as_str("Size", self.size)
            .map("Labels", self.labels.as_ref())
            .map("Parameters", self.parameters.as_ref())
            .bool("IsIncremental", self.is_incremental)
            .str("CompressionMethod", &self.compression_method)
            .int_as_str("NewlyUploadedDataSize", self.newly_uploaded_data_size)
            .int_as_str("ReUploadedDataSize", self.re_uploaded_data_size)
            .raw("ProcessingBlocks", |o| {
                o.push_str(if self.processing_blocks { "{}" } else { "null" })
            });
        if !self.blocks.is_empty() {
            obj.raw("Blocks", |o| {
                o.push('[');
                for (i, b) in self.blocks.iter().enumerate() {
                    if i > 0 {
                        o.push(',');
                    }
                    Obj::open(o)
                        .int("Offset", b.offset)
                        .str("BlockChecksum", &b.block_checksum)
                        .close();
                }
                o.push(']');
            });
        }
        obj.raw("SingleFile", |o| {
            Obj::open(o)
                .str("FilePath", &self.single_file.file_path)
                .close()
        });
        obj.close();
        out
    }

    pub fn from_json(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }

    /// The block size this backup was taken with (`backup-block-size`, default 2 MiB).
    /// `Err` carries the unparsable value.
    pub fn block_size(&self) -> Result<u64, String> {
        match self
            .parameters
            .as_ref()
            .and_then(|p| p.get(PARAM_BLOCK_SIZE))
        {
            None => Ok(DEFAULT_BLOCK_SIZE),
            Some(q) => parse_quantity(q).ok_or_else(|| q.clone()),
        }
    }
}

/// A lock file: `{"Name":"lock-<16hex>","Type":1|2,"Acquired":bool}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LockFile {
    #[serde(deserialize_with = "lenient_str")]
    pub name: String,
    #[serde(rename = "Type")]
    pub lock_type: i64,
    pub acquired: bool,
}

impl LockFile {
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        Obj::open(&mut out)
            .str("Name", &self.name)
            .int("Type", self.lock_type)
            .bool("Acquired", self.acquired)
            .close();
        out
    }

    pub fn from_json(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// Parses a Kubernetes quantity as used for `backup-block-size` (`2097152`, `2Mi`, `16Mi`,
/// `1Gi`, `2M`). `None` if it is not a non-negative whole number of bytes.
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (digits, suffix) = q.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats a timestamp the way Longhorn does (RFC 3339, UTC, whole seconds).
pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_encodes_zero_values() {
        let p = BackupConfig::placeholder("backup-1", "vol", "lz4");
        assert_eq!(
            p.to_json(),
            r#"{"Name":"backup-1","VolumeName":"vol","SnapshotName":"","SnapshotCreatedAt":"","CreatedTime":"","Size":"0","Labels":null,"Parameters":null,"IsIncremental":false,"CompressionMethod":"lz4","NewlyUploadedDataSize":"0","ReUploadedDataSize":"0","ProcessingBlocks":null,"SingleFile":{"FilePath":""}}"#
        );
        let back = BackupConfig::from_json(p.to_json().as_bytes()).expect("parse");
        assert_eq!(back, p);
        assert!(back.in_progress());
    }

    #[test]
    fn lenient_reading_accepts_plain_forms() {
        let v = VolumeConfig::from_json(
            br#"{"Name":"v","Size":4194304,"BlockCount":"2","CompressionMethod":"lz4","DataEngine":"\"v1\"","Extra":1}"#,
        )
        .expect("parse");
        assert_eq!(v.size, 4194304);
        assert_eq!(v.block_count, 2);
        assert_eq!(v.compression_method, "lz4");
        assert_eq!(v.data_engine, "v1");
        assert_eq!(v.labels, None);
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_quantity("2097152"), Some(2097152));
        assert_eq!(parse_quantity("16Mi"), Some(16 << 20));
        assert_eq!(parse_quantity("2Mi"), Some(2 << 20));
        assert_eq!(parse_quantity("x"), None);
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity("1.5Mi"), None);
    }

    #[test]
    fn times_are_whole_seconds_utc() {
        let ts: jiff::Timestamp = "2026-11-22T02:22:29.123456Z".parse().expect("ts");
        assert_eq!(format_time(ts), "2026-11-22T02:22:29Z");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_.-]{0,12}",
            any::<String>(),
            Just("<&>\"\\\u{2028}\n".to_string()),
        ]
    }

    fn labels() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
        proptest::option::of(proptest::collection::btree_map(text(), text(), 0..4))
    }

    proptest! {
        /// Whatever we write, we (and any JSON reader) read back the same content.
        #[test]
        fn backup_cfg_round_trips(
            name in text(), snap in text(), size in any::<i64>(), labels in labels(),
            params in labels(), inc in any::<bool>(),
            // A method that is itself a JSON string literal is read as doubly encoded (the
            // deliberate leniency of `lenient_double_str`), so it cannot round-trip.
            method in text().prop_filter("quoted method", |m| !m.starts_with('"')),
            pb in any::<bool>(),
            offsets in proptest::collection::btree_set(0i64..1_000_000, 0..20),
            newly in any::<i64>(), path in text(),
        ) {
            let cfg = BackupConfig {
                name: name.clone(), volume_name: name, snapshot_name: snap.clone(),
                snapshot_created_at: snap.clone(), created_time: snap, size, labels,
                parameters: params, is_incremental: inc, compression_method: method,
                newly_uploaded_data_size: newly, re_uploaded_data_size: -newly.saturating_abs(),
                processing_blocks: pb,
                blocks: offsets.into_iter().map(|o| BlockMapping {
                    offset: o, block_checksum: crate::names::h(&o.to_le_bytes()) }).collect(),
                single_file: SingleFile { file_path: path },
            };
            let json = cfg.to_json();
            prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
            let back = BackupConfig::from_json(json.as_bytes()).expect("parse our own output");
            prop_assert_eq!(back, cfg);
        }

        #[test]
        fn volume_cfg_round_trips(
            name in text(), size in any::<i64>(), labels in labels(), a in text(), b in text(),
            count in any::<i64>(),
        ) {
            let v = VolumeConfig {
                name: name.clone(), size, labels, created_time: a.clone(),
                last_backup_name: b.clone(), last_backup_at: a.clone(), block_count: count,
                backing_image_name: b.clone(), backing_image_checksum: a.clone(),
                compression_method: b.clone(), storage_class_name: a, data_engine: name,
            };
            let back = VolumeConfig::from_json(v.to_json().as_bytes()).expect("parse");
            prop_assert_eq!(back, v);
        }

        /// Hostile input never panics the readers (it may fail to parse).
        #[test]
        fn readers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400),
                               json in "\\{(\"[A-Za-z]{1,20}\":(null|\"[^\"]{0,8}\"|[0-9]{1,25}|\\{\\}|\\[\\]|true),?){0,8}\\}") {
            let _ = BackupConfig::from_json(&data);
            let _ = VolumeConfig::from_json(&data);
            let _ = LockFile::from_json(&data);
            if let Ok(cfg) = BackupConfig::from_json(json.as_bytes()) {
                let _ = cfg.block_size();
                let _ = crate::blockmap::validate(&cfg.blocks, DEFAULT_BLOCK_SIZE);
            }
            let _ = VolumeConfig::from_json(json.as_bytes());
        }
    }
}
