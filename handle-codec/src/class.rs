//! The VolumeSnapshotClass side: class `parameters` into a typed request.
//!
//! | parameter | meaning |
//! |---|---|
//! | `type` | `snap` (in-cluster snapshot), `bak` or its legacy spelling `bs` (backup), `bi` (backing image); absent or empty means backup, as in Longhorn |
//! | `backupMode` | backups only: `full` or `incremental` (absent or empty: incremental) |
//! | `export-type` / `exportType` | backing images only: `raw` or `qcow2` (absent or empty: raw); both spellings may be given only with the same value |
//!
//! Other parameters are kept in [`SnapshotClassRequest::other_parameters`] (Longhorn copies every class
//! parameter onto the snapshot as a label). Unlike Longhorn, `backupMode` on a non-backup class and
//! `export-type` on a non-backing-image class are errors rather than silently ignored: a class is
//! written for one driver, and a parameter that does nothing is a mistake worth reporting.

use std::collections::BTreeMap;
use std::fmt;

use crate::backing_image::ExportType;
use crate::error::snippet;
use crate::handle::HandleKind;

/// Class parameter names.
pub mod parameters {
    /// The snapshot type.
    pub const TYPE: &str = "type";
    /// Backup mode.
    pub const BACKUP_MODE: &str = "backupMode";
    /// Export type (Longhorn's spelling).
    pub const EXPORT_TYPE: &str = "export-type";
    /// Export type (camel-case spelling, accepted too).
    pub const EXPORT_TYPE_CAMEL: &str = "exportType";
}

/// Whether a backup copies every block or only the changed ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackupMode {
    /// `incremental` (the default).
    #[default]
    Incremental,
    /// `full`
    Full,
}

impl BackupMode {
    /// The spelling in class parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Incremental => "incremental",
            BackupMode::Full => "full",
        }
    }
}

impl fmt::Display for BackupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a VolumeSnapshot of this class should create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SnapshotRequestKind {
    /// `type: snap`: an in-cluster snapshot; the handle will be `snap://<volume>/<snapshot>`.
    Snapshot,
    /// `type: bak`, `bs` or empty: a backup; the handle will be `bak://<volume>/<backup>`.
    Backup {
        /// `backupMode`
        mode: BackupMode,
    },
    /// `type: bi`: a backing image exported from the volume; the handle will be
    /// `bi://backing?backingImage=<n>&backingImageDataSourceType=export-from-volume&export-type=<t>&volume-name=<v>`.
    BackingImage {
        /// `export-type` / `exportType`
        export_type: ExportType,
    },
}

impl SnapshotRequestKind {
    /// The kind of handle the request will produce.
    pub fn handle_kind(self) -> HandleKind {
        match self {
            SnapshotRequestKind::Snapshot => HandleKind::Snapshot,
            SnapshotRequestKind::Backup { .. } => HandleKind::Backup,
            SnapshotRequestKind::BackingImage { .. } => HandleKind::BackingImage,
        }
    }
}

/// A VolumeSnapshotClass's parameters, interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotClassRequest {
    /// What to create.
    pub kind: SnapshotRequestKind,
    /// Parameters not interpreted here (everything but `type`, `backupMode`, `export-type`, `exportType`).
    pub other_parameters: BTreeMap<String, String>,
}

/// Why class parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassParameterError {
    /// `type` is not one of the known types.
    #[error(
        "invalid CSI snapshot type {found:?} in VolumeSnapshotClass parameter type: must be snap, bak, bs, bi or \"\" (empty means bak)"
    )]
    InvalidType {
        /// The value (cut).
        found: String,
    },
    /// `backupMode` is not `full` or `incremental`.
    #[error(
        "VolumeSnapshotClass parameter backupMode {found:?} is invalid: use full or incremental"
    )]
    InvalidBackupMode {
        /// The value (cut).
        found: String,
    },
    /// `export-type`/`exportType` is not `raw` or `qcow2`.
    #[error(
        "VolumeSnapshotClass parameter {key} {found:?} is invalid: use raw or qcow2 (or leave it out for raw)"
    )]
    InvalidExportType {
        /// Which spelling was used.
        key: &'static str,
        /// The value (cut).
        found: String,
    },
    /// `export-type` and `exportType` both given, with different values.
    #[error(
        "VolumeSnapshotClass parameters export-type {dashed:?} and exportType {camel:?} disagree: keep only one"
    )]
    ConflictingExportType {
        /// `export-type` (cut).
        dashed: String,
        /// `exportType` (cut).
        camel: String,
    },
    /// A parameter that has no effect on this type.
    #[error(
        "VolumeSnapshotClass parameter {key} applies only to type {applies_to}, but the class has type {found:?}: remove it or change the type"
    )]
    ParameterNotForType {
        /// The parameter.
        key: &'static str,
        /// The type it is for.
        applies_to: &'static str,
        /// The class's `type` value (cut).
        found: String,
    },
    /// The same parameter twice (only possible when the input is a list, not a map).
    #[error("VolumeSnapshotClass parameter {key:?} is given twice: keep one")]
    DuplicateParameter {
        /// The parameter (cut).
        key: String,
    },
}

/// Interprets VolumeSnapshotClass `parameters`.
///
/// ```
/// use std::collections::BTreeMap;
/// use handle_codec::{BackupMode, SnapshotRequestKind, parse_snapshot_class_parameters};
/// let params = BTreeMap::from([("type".to_string(), "bs".to_string()), ("backupMode".to_string(), "full".to_string())]);
/// let request = parse_snapshot_class_parameters(&params).unwrap();
/// assert_eq!(request.kind, SnapshotRequestKind::Backup { mode: BackupMode::Full });
/// assert!(parse_snapshot_class_parameters([("type", "nfs")]).is_err());
/// ```
pub fn parse_snapshot_class_parameters<I, K, V>(
    params: I,
) -> Result<SnapshotClassRequest, ClassParameterError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut collected: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in params {
        let key = key.as_ref();
        if collected
            .insert(key.to_owned(), value.as_ref().to_owned())
            .is_some()
        {
            return Err(ClassParameterError::DuplicateParameter { key: snippet(key) });
        }
    }

    let type_text = collected.remove(parameters::TYPE).unwrap_or_default();
    let backup_mode = collected
        .remove(parameters::BACKUP_MODE)
        .filter(|v| !v.is_empty());
    let dashed = collected
        .remove(parameters::EXPORT_TYPE)
        .filter(|v| !v.is_empty());
    let camel = collected
        .remove(parameters::EXPORT_TYPE_CAMEL)
        .filter(|v| !v.is_empty());

    let kind = match type_text.as_str() {
        "snap" => SnapshotRequestKind::Snapshot,
        "bak" | "bs" | "" => SnapshotRequestKind::Backup {
            mode: BackupMode::default(),
        },
        "bi" => SnapshotRequestKind::BackingImage {
            export_type: ExportType::default(),
        },
        other => {
            return Err(ClassParameterError::InvalidType {
                found: snippet(other),
            });
        }
    };

    let kind = match kind {
        SnapshotRequestKind::Backup { .. } => SnapshotRequestKind::Backup {
            mode: match backup_mode.as_deref() {
                None | Some("incremental") => BackupMode::Incremental,
                Some("full") => BackupMode::Full,
                Some(other) => {
                    return Err(ClassParameterError::InvalidBackupMode {
                        found: snippet(other),
                    });
                }
            },
        },
        SnapshotRequestKind::BackingImage { .. } => SnapshotRequestKind::BackingImage {
            export_type: export_type(dashed.as_deref(), camel.as_deref())?,
        },
        SnapshotRequestKind::Snapshot => SnapshotRequestKind::Snapshot,
    };

    let not_for_type = |key: &'static str, applies_to: &'static str| {
        Err(ClassParameterError::ParameterNotForType {
            key,
            applies_to,
            found: snippet(&type_text),
        })
    };
    if backup_mode.is_some() && !matches!(kind, SnapshotRequestKind::Backup { .. }) {
        return not_for_type(parameters::BACKUP_MODE, "bak (or bs, or empty)");
    }
    if !matches!(kind, SnapshotRequestKind::BackingImage { .. }) {
        if dashed.is_some() {
            return not_for_type(parameters::EXPORT_TYPE, "bi");
        }
        if camel.is_some() {
            return not_for_type(parameters::EXPORT_TYPE_CAMEL, "bi");
        }
    }

    Ok(SnapshotClassRequest {
        kind,
        other_parameters: collected,
    })
}

fn export_type(
    dashed: Option<&str>,
    camel: Option<&str>,
) -> Result<ExportType, ClassParameterError> {
    let parse = |key: &'static str, text: &str| {
        ExportType::parse(text).ok_or_else(|| ClassParameterError::InvalidExportType {
            key,
            found: snippet(text),
        })
    };
    match (dashed, camel) {
        (None, None) => Ok(ExportType::default()),
        (Some(text), None) => parse(parameters::EXPORT_TYPE, text),
        (None, Some(text)) => parse(parameters::EXPORT_TYPE_CAMEL, text),
        (Some(d), Some(c)) => {
            let dashed_type = parse(parameters::EXPORT_TYPE, d)?;
            let camel_type = parse(parameters::EXPORT_TYPE_CAMEL, c)?;
            if dashed_type == camel_type {
                Ok(dashed_type)
            } else {
                Err(ClassParameterError::ConflictingExportType {
                    dashed: snippet(d),
                    camel: snippet(c),
                })
            }
        }
    }
}
