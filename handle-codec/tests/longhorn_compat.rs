//! Compatibility with Longhorn in both directions, checked against a re-implementation of Longhorn's
//! decoder and encoder (tests/common/longhorn.rs).
//!
//! Case count: `PROPTEST_CASES` (default 256); see the README for a long run.

mod common;

use std::collections::BTreeMap;

use common::longhorn;
use handle_codec::{
    BackingImageHandle, BackingImageSource, ExportType, Name, ObjectName, SnapshotHandle, decode,
    keys,
};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;

/// Unreserved characters are the ones our path escaping leaves alone.
fn is_unreserved(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn unescaped(part: &str) -> String {
    percent_decode_str(part)
        .decode_utf8()
        .map(|text| text.into_owned())
        .unwrap_or_else(|_| panic!("{part:?} is not escaped UTF-8"))
}

/// Checks what Longhorn's decoder makes of our encoding of `handle`.
fn assert_longhorn_reads_ours(handle: &SnapshotHandle) {
    let encoded = handle.encode();
    match handle {
        SnapshotHandle::Snapshot { volume, snapshot } => {
            assert_longhorn_path(&encoded, "snap", volume, snapshot)
        }
        SnapshotHandle::Backup { volume, backup } => {
            assert_longhorn_path(&encoded, "bak", volume, backup)
        }
        SnapshotHandle::BackingImage(image) => {
            let (snapshot_type, _, _) = longhorn::decode_snapshot_id(&encoded);
            assert_eq!(snapshot_type, "bi", "{encoded}");
            let url = longhorn::go_url_parse(&encoded)
                .unwrap_or_else(|e| panic!("Go url.Parse refuses {encoded:?}: {e}"));
            let (values, error) = longhorn::go_parse_query(&url.raw_query);
            assert_eq!(
                error, None,
                "Go ParseQuery reports an error for {encoded:?}"
            );
            let expected: longhorn::GoValues = common::flat_parameters(image)
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), vec![v.into_bytes()]))
                .collect();
            assert_eq!(values, expected, "{encoded}");
            // Longhorn's own acceptance test for a bi handle:
            let params = longhorn::decode_snapshot_backing_image_id(&encoded);
            assert!(!params[keys::BACKING_IMAGE.as_bytes()].is_empty());
            assert!(!params[keys::DATA_SOURCE_TYPE.as_bytes()].is_empty());
        }
    }
}

fn assert_longhorn_path(encoded: &str, expected_type: &str, volume: &Name, id: &Name) {
    let (snapshot_type, lh_volume, lh_id) = longhorn::decode_snapshot_id(encoded);
    assert_eq!(snapshot_type, expected_type, "{encoded}");
    assert_eq!(unescaped(&lh_volume), volume.as_str(), "{encoded}");
    assert_eq!(unescaped(&lh_id), id.as_str(), "{encoded}");
    if is_unreserved(volume.as_str()) {
        assert_eq!(
            lh_volume,
            volume.as_str(),
            "Longhorn names must pass through verbatim"
        );
    }
    if is_unreserved(id.as_str()) {
        assert_eq!(
            lh_id,
            id.as_str(),
            "Longhorn names must pass through verbatim"
        );
    }
}

/// Names as Longhorn writes them: volume names `[a-z0-9][a-z0-9_.-]+`, CSI snapshot names
/// `snapshot-<uuid>`, backup names `backup-<16 hex>`.
fn longhorn_volume_name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_.-]{1,39}"
}
fn longhorn_snapshot_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "snapshot-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[a-z0-9][a-z0-9_.-]{1,39}",
    ]
}
fn longhorn_backup_name() -> impl Strategy<Value = String> {
    "backup-[0-9a-f]{16}"
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Our encoder's output is accepted by Longhorn's decoder and means the same thing.
    #[test]
    fn longhorn_reads_our_encoding(handle in common::handle()) {
        assert_longhorn_reads_ours(&handle);
    }

    /// Longhorn's snap/bak/bs strings decode to the expected values, and we write them back byte for byte
    /// (bs:// is normalised to bak://, as Longhorn itself does).
    #[test]
    fn we_read_longhorn_path_handles(
        volume in longhorn_volume_name(),
        snapshot in longhorn_snapshot_name(),
        backup in longhorn_backup_name(),
    ) {
        let snap = longhorn::encode_snapshot_id("snap", &volume, &snapshot);
        let expected = SnapshotHandle::Snapshot { volume: name(&volume), snapshot: name(&snapshot) };
        prop_assert_eq!(decode(&snap), Ok(expected.clone()));
        prop_assert_eq!(expected.encode(), snap);

        let expected = SnapshotHandle::Backup { volume: name(&volume), backup: name(&backup) };
        for text in [
            longhorn::encode_snapshot_id("bak", &volume, &backup),
            longhorn::encode_snapshot_id("bs", &volume, &backup),
            longhorn::encode_legacy_backup_id(&volume, &backup),
        ] {
            prop_assert_eq!(decode(&text), Ok(expected.clone()));
        }
        prop_assert_eq!(expected.encode(), longhorn::encode_snapshot_id("bak", &volume, &backup));
    }

    /// Longhorn's bi strings decode to the expected values, and we write them back byte for byte.
    #[test]
    fn we_read_longhorn_backing_image_handles(
        image_name in common::object_name(),
        volume in longhorn_volume_name(),
        export_type in common::export_type(),
    ) {
        let text = longhorn::encode_snapshot_backing_image_id(image_name.as_str(), export_type.as_str(), &volume);
        let expected = SnapshotHandle::BackingImage(BackingImageHandle::new(
            image_name,
            BackingImageSource::ExportFromVolume { volume_name: name(&volume), export_type },
        ));
        prop_assert_eq!(decode(&text), Ok(expected.clone()));
        prop_assert_eq!(expected.encode(), text);
    }

    /// Wherever we accept a string, Longhorn reads the same thing from it (see `assert_longhorn_agrees`).
    #[test]
    fn where_we_accept_longhorn_agrees(text in common::handle_like_text()) {
        assert_longhorn_agrees(&text)?;
    }

    /// The same on hand-written spellings of valid handles, which we always accept.
    #[test]
    fn on_hand_written_handles_longhorn_agrees(handle in common::handle(), seed in any::<u64>()) {
        let text = common::hand_written(&handle, seed);
        prop_assert_eq!(decode(&text), Ok(handle), "{}", text);
        assert_longhorn_agrees(&text)?;
    }
}

/// If we accept `text`, Longhorn reads the same thing from it. Differences are by design and listed:
/// `%XX` in snap/bak names (Longhorn does not unescape paths; its names never hold `%`), empty optional
/// parameters (absent for both), an absent export-type (raw for both), and numbers written
/// non-canonically (compared as numbers).
fn assert_longhorn_agrees(text: &str) -> Result<(), TestCaseError> {
    let Ok(handle) = decode(text) else {
        return Ok(());
    };
    match &handle {
        SnapshotHandle::Snapshot {
            volume,
            snapshot: id,
        }
        | SnapshotHandle::Backup { volume, backup: id } => {
            if !text.contains('%') {
                let (snapshot_type, lh_volume, lh_id) = longhorn::decode_snapshot_id(text);
                prop_assert_eq!(snapshot_type, handle.kind().scheme());
                prop_assert_eq!(lh_volume, volume.as_str());
                prop_assert_eq!(lh_id, id.as_str());
            }
        }
        SnapshotHandle::BackingImage(image) => {
            let longhorn_view = longhorn::decode_snapshot_backing_image_id(text);
            prop_assert!(
                !longhorn_view.is_empty(),
                "Longhorn cannot parse {:?}",
                text
            );
            let ours: BTreeMap<Vec<u8>, Vec<u8>> = common::flat_parameters(image)
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v.into_bytes()))
                .collect();
            let as_number = |v: &[u8]| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<u32>().ok())
            };
            for (key, value) in &longhorn_view {
                if value.is_empty() {
                    continue;
                }
                let mine = ours.get(key);
                if key == keys::CONCURRENT_LIMIT.as_bytes() {
                    prop_assert_eq!(mine.and_then(|m| as_number(m)), as_number(value));
                } else {
                    prop_assert_eq!(
                        mine,
                        Some(value),
                        "key {:?} in {:?}",
                        String::from_utf8_lossy(key),
                        text
                    );
                }
            }
            for (key, value) in &ours {
                let defaulted_export_type = key == keys::EXPORT_TYPE.as_bytes() && value == b"raw";
                if !defaulted_export_type {
                    prop_assert!(
                        longhorn_view.contains_key(key),
                        "Longhorn lacks {:?} in {:?}",
                        String::from_utf8_lossy(key),
                        text
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn the_longhorn_model_matches_longhorn_on_known_cases() {
    // Cases whose Longhorn result follows from reading its source; they keep the model honest.
    assert_eq!(
        longhorn::decode_snapshot_id("snap://vol/snap/extra"),
        ("snap".into(), "vol".into(), "snap".into())
    );
    assert_eq!(
        longhorn::decode_snapshot_id("bs://vol/backup-1"),
        ("bak".into(), "vol".into(), "backup-1".into())
    );
    assert_eq!(
        longhorn::decode_snapshot_id("vol/backup-1"),
        (String::new(), String::new(), String::new())
    );
    assert_eq!(
        longhorn::decode_snapshot_id("snap://vol"),
        (String::new(), String::new(), String::new())
    );
    let params = longhorn::decode_snapshot_backing_image_id(
        "bi://backing?backingImage=a&x=1;y=2&url=https%3A%2F%2Fh%2F&bad=%zz&backingImage=second#frag",
    );
    let as_text: BTreeMap<String, String> = params
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        as_text,
        BTreeMap::from([
            ("backingImage".to_owned(), "a".to_owned()),
            ("url".to_owned(), "https://h/".to_owned()),
        ])
    );
    assert!(longhorn::decode_snapshot_backing_image_id("bi://backing?a=1\n").is_empty());
    assert!(longhorn::decode_snapshot_backing_image_id("bi://backing?a=1#%zz").is_empty());
}

#[test]
fn longhorn_encoder_output_for_the_seed_export_is_ours_too() {
    let text = longhorn::encode_snapshot_backing_image_id("test-bi", "qcow2", "vol-export-src");
    let image = BackingImageHandle::new(
        ObjectName::new("test-bi").unwrap_or_else(|e| panic!("{e}")),
        BackingImageSource::ExportFromVolume {
            volume_name: name("vol-export-src"),
            export_type: ExportType::Qcow2,
        },
    );
    assert_eq!(image.encode(), text);
    assert_eq!(decode(&text), Ok(SnapshotHandle::BackingImage(image)));
}
