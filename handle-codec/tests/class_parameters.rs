//! VolumeSnapshotClass parameters into typed requests.

use std::collections::BTreeMap;

use handle_codec::{
    BackupMode, ClassParameterError, ExportType, HandleKind, SnapshotRequestKind,
    parse_snapshot_class_parameters,
};

/// Class parameters as written in a test table.
type Pairs = &'static [(&'static str, &'static str)];

fn parse(pairs: &[(&str, &str)]) -> Result<SnapshotRequestKind, ClassParameterError> {
    parse_snapshot_class_parameters(pairs.iter().copied()).map(|request| request.kind)
}

#[test]
fn types_and_their_options() {
    use SnapshotRequestKind::*;
    let incremental = Backup {
        mode: BackupMode::Incremental,
    };
    let table: Vec<(&[(&str, &str)], SnapshotRequestKind)> = vec![
        (&[], incremental),
        (&[("type", "")], incremental),
        (&[("type", "bak")], incremental),
        (&[("type", "bs")], incremental),
        (
            &[("type", "bak"), ("backupMode", "incremental")],
            incremental,
        ),
        (&[("type", "bak"), ("backupMode", "")], incremental),
        (
            &[("backupMode", "full")],
            Backup {
                mode: BackupMode::Full,
            },
        ),
        (&[("type", "snap")], Snapshot),
        (
            &[("type", "bi")],
            BackingImage {
                export_type: ExportType::Raw,
            },
        ),
        (
            &[("type", "bi"), ("export-type", "qcow2")],
            BackingImage {
                export_type: ExportType::Qcow2,
            },
        ),
        (
            &[("type", "bi"), ("exportType", "qcow2")],
            BackingImage {
                export_type: ExportType::Qcow2,
            },
        ),
        (
            &[
                ("type", "bi"),
                ("exportType", "raw"),
                ("export-type", "raw"),
            ],
            BackingImage {
                export_type: ExportType::Raw,
            },
        ),
        (
            &[("type", "bi"), ("export-type", "")],
            BackingImage {
                export_type: ExportType::Raw,
            },
        ),
    ];
    for (pairs, expected) in table {
        assert_eq!(parse(pairs), Ok(expected), "{pairs:?}");
    }
}

#[test]
fn handle_kind_follows_the_type() {
    assert_eq!(
        parse(&[("type", "bs")]).map(SnapshotRequestKind::handle_kind),
        Ok(HandleKind::Backup)
    );
    assert_eq!(
        parse(&[("type", "bi")]).map(|k| k.handle_kind().scheme()),
        Ok("bi")
    );
}

#[test]
fn other_parameters_are_kept() {
    let params = BTreeMap::from([
        ("type".to_owned(), "snap".to_owned()),
        ("team".to_owned(), "storage".to_owned()),
    ]);
    let request = parse_snapshot_class_parameters(&params).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        request.other_parameters,
        BTreeMap::from([("team".to_owned(), "storage".to_owned())])
    );
}

#[test]
fn errors_name_the_parameter_and_the_fix() {
    use ClassParameterError::*;
    let table: Vec<(Pairs, ClassParameterError, &[&str])> = vec![
        (
            &[("type", "nfs")],
            InvalidType {
                found: "nfs".into(),
            },
            &["invalid CSI snapshot type", "\"nfs\"", "snap, bak, bs, bi"],
        ),
        (
            &[("type", "Snap")],
            InvalidType {
                found: "Snap".into(),
            },
            &["invalid CSI snapshot type"],
        ),
        (
            &[("backupMode", "differential")],
            InvalidBackupMode {
                found: "differential".into(),
            },
            &["backupMode", "full or incremental"],
        ),
        (
            &[("type", "bi"), ("export-type", "vmdk")],
            InvalidExportType {
                key: "export-type",
                found: "vmdk".into(),
            },
            &["export-type", "raw or qcow2"],
        ),
        (
            &[("type", "bi"), ("exportType", "img")],
            InvalidExportType {
                key: "exportType",
                found: "img".into(),
            },
            &["exportType"],
        ),
        (
            &[
                ("type", "bi"),
                ("exportType", "raw"),
                ("export-type", "qcow2"),
            ],
            ConflictingExportType {
                dashed: "qcow2".into(),
                camel: "raw".into(),
            },
            &["disagree", "keep only one"],
        ),
        (
            &[("type", "snap"), ("backupMode", "full")],
            ParameterNotForType {
                key: "backupMode",
                applies_to: "bak (or bs, or empty)",
                found: "snap".into(),
            },
            &["backupMode", "remove it"],
        ),
        (
            &[("type", "bak"), ("export-type", "raw")],
            ParameterNotForType {
                key: "export-type",
                applies_to: "bi",
                found: "bak".into(),
            },
            &["export-type", "bi"],
        ),
        (
            &[("type", "snap"), ("type", "bak")],
            DuplicateParameter { key: "type".into() },
            &["twice"],
        ),
    ];
    for (pairs, expected, words) in table {
        let error = match parse(pairs) {
            Err(error) => error,
            Ok(kind) => panic!("{pairs:?} parsed to {kind:?}"),
        };
        assert_eq!(error, expected, "{pairs:?}");
        let message = error.to_string();
        for word in words {
            assert!(message.contains(word), "{message:?} lacks {word:?}");
        }
    }
}
