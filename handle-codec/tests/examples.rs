//! Table tests: the issue's seed examples and hand-written handles decode to exactly these values.

use handle_codec::{
    BackingImageHandle, BackingImageSource, BackupUrl, CloneEncryption, ExportType,
    ExtraParameters, HttpUrl, Name, ObjectName, Sha512Checksum, SnapshotHandle, decode,
};

const SEED_CHECKSUM: &str = "bd79ab9e6d45abf4f3f0adf552a868074dd235c4698ce7258d521160e0ad79ffe555b94e7d4007add6e1a25f4526885eb25c53ce38f7d344dd4925b9f2cb5d3b";

fn name(text: &str) -> Name {
    Name::new(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}
fn object(text: &str) -> ObjectName {
    ObjectName::new(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}
fn url(text: &str) -> HttpUrl {
    HttpUrl::new(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}
fn checksum(text: &str) -> Sha512Checksum {
    Sha512Checksum::new(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}
fn extra(pairs: &[(&str, &str)]) -> ExtraParameters {
    let mut extra = ExtraParameters::new();
    for (k, v) in pairs {
        extra.push(*k, *v).unwrap_or_else(|e| panic!("{e}"));
    }
    extra
}
fn snap(volume: &str, snapshot: &str) -> SnapshotHandle {
    SnapshotHandle::Snapshot {
        volume: name(volume),
        snapshot: name(snapshot),
    }
}
fn bak(volume: &str, backup: &str) -> SnapshotHandle {
    SnapshotHandle::Backup {
        volume: name(volume),
        backup: name(backup),
    }
}
fn bi(
    image: &str,
    source: BackingImageSource,
    image_checksum: Option<&str>,
    extra_pairs: &[(&str, &str)],
) -> SnapshotHandle {
    SnapshotHandle::BackingImage(BackingImageHandle {
        name: object(image),
        source,
        checksum: image_checksum.map(checksum),
        extra: extra(extra_pairs),
    })
}
fn export(volume: &str, export_type: ExportType) -> BackingImageSource {
    BackingImageSource::ExportFromVolume {
        volume_name: name(volume),
        export_type,
    }
}

/// (handle, expected value, expected canonical encoding)
fn table() -> Vec<(String, SnapshotHandle, String)> {
    let seed_download = format!(
        "bi://backing?backingImageDataSourceType=download&backingImage=test-bi&url=https%3A%2F%2Flonghorn-backing-image.s3-us-west-1.amazonaws.com%2Fparrot.qcow2&backingImageChecksum={SEED_CHECKSUM}"
    );
    let download_value = bi(
        "test-bi",
        BackingImageSource::Download {
            url: url("https://longhorn-backing-image.s3-us-west-1.amazonaws.com/parrot.qcow2"),
            checksum: None,
        },
        Some(SEED_CHECKSUM),
        &[],
    );
    let download_canonical = format!(
        "bi://backing?backingImage=test-bi&backingImageDataSourceType=download&url=https%3A%2F%2Flonghorn-backing-image.s3-us-west-1.amazonaws.com%2Fparrot.qcow2&backingImageChecksum={SEED_CHECKSUM}"
    );
    vec![
        // --- seed examples from the issue ---
        (seed_download, download_value, download_canonical),
        (
            "bi://backing?backingImageDataSourceType=export-from-volume&backingImage=test-bi&volume-name=vol-export-src&export-type=qcow2".into(),
            bi("test-bi", export("vol-export-src", ExportType::Qcow2), None, &[]),
            "bi://backing?backingImage=test-bi&backingImageDataSourceType=export-from-volume&export-type=qcow2&volume-name=vol-export-src".into(),
        ),
        (
            "bs://test-vol/backup-625159fb469e492e".into(),
            bak("test-vol", "backup-625159fb469e492e"),
            "bak://test-vol/backup-625159fb469e492e".into(),
        ),
        // --- Longhorn encoder shapes ---
        (
            "snap://pvc-0a1b2c/snapshot-4d3c2b1a-0000-4000-8000-123456789abc".into(),
            snap("pvc-0a1b2c", "snapshot-4d3c2b1a-0000-4000-8000-123456789abc"),
            "snap://pvc-0a1b2c/snapshot-4d3c2b1a-0000-4000-8000-123456789abc".into(),
        ),
        (
            "bak://pvc-0a1b2c/backup-0123456789abcdef".into(),
            bak("pvc-0a1b2c", "backup-0123456789abcdef"),
            "bak://pvc-0a1b2c/backup-0123456789abcdef".into(),
        ),
        (
            "snap://vol_with_underscore.v2/s".into(),
            snap("vol_with_underscore.v2", "s"),
            "snap://vol_with_underscore.v2/s".into(),
        ),
        // --- escaping in names ---
        (
            "snap://my%20vol/a%2Fb%3Fc%26d%3De%25f%2Bg".into(),
            snap("my vol", "a/b?c&d=e%f+g"),
            "snap://my%20vol/a%2Fb%3Fc%26d%3De%25f%2Bg".into(),
        ),
        (
            // '+' in a path is a plus sign; lowercase hex escapes are read, uppercase written.
            "bak://v+1/%c3%a9t%C3%A9".into(),
            bak("v+1", "été"),
            "bak://v%2B1/%C3%A9t%C3%A9".into(),
        ),
        (
            // Longhorn reads unescaped names literally, so do we (apart from %XX).
            "snap://vol/name with space?and=query".into(),
            snap("vol", "name with space?and=query"),
            "snap://vol/name%20with%20space%3Fand%3Dquery".into(),
        ),
        // --- backing images: defaults, empties, extras, every source ---
        (
            "bi://backing?backingImage=bi1&backingImageDataSourceType=export-from-volume&volume-name=v".into(),
            bi("bi1", export("v", ExportType::Raw), None, &[]),
            "bi://backing?backingImage=bi1&backingImageDataSourceType=export-from-volume&export-type=raw&volume-name=v".into(),
        ),
        (
            "bi://backing?backingImage=bi1&backingImageDataSourceType=export-from-volume&export-type=&volume-name=v&backingImageChecksum=".into(),
            bi("bi1", export("v", ExportType::Raw), None, &[]),
            "bi://backing?backingImage=bi1&backingImageDataSourceType=export-from-volume&export-type=raw&volume-name=v".into(),
        ),
        (
            "bi://backing?data-engine=v2&backingImage=bi1&&backingImageDataSourceType=upload&file-type=qcow2&note=a+b%26c&flag&".into(),
            bi("bi1", BackingImageSource::Upload, None, &[("data-engine", "v2"), ("file-type", "qcow2"), ("note", "a b&c"), ("flag", "")]),
            "bi://backing?backingImage=bi1&backingImageDataSourceType=upload&data-engine=v2&file-type=qcow2&note=a+b%26c&flag=".into(),
        ),
        (
            format!("bi://backing?backingImage=d&backingImageDataSourceType=download&url=http://h.example/i.raw&checksum={SEED_CHECKSUM}"),
            bi("d", BackingImageSource::Download { url: url("http://h.example/i.raw"), checksum: Some(checksum(SEED_CHECKSUM)) }, None, &[]),
            format!("bi://backing?backingImage=d&backingImageDataSourceType=download&url=http%3A%2F%2Fh.example%2Fi.raw&checksum={SEED_CHECKSUM}"),
        ),
        (
            "bi://backing?backingImage=r&backingImageDataSourceType=restore&backup-url=s3%3A%2F%2Fb%40us-east-1%2F%3Fbackup%3Dbackup-1%26volume%3Dv&concurrent-limit=4".into(),
            bi("r", BackingImageSource::Restore { backup_url: BackupUrl::new("s3://b@us-east-1/?backup=backup-1&volume=v").unwrap_or_else(|e| panic!("{e}")), concurrent_limit: Some(4) }, None, &[]),
            "bi://backing?backingImage=r&backingImageDataSourceType=restore&backup-url=s3%3A%2F%2Fb%40us-east-1%2F%3Fbackup%3Dbackup-1%26volume%3Dv&concurrent-limit=4".into(),
        ),
        (
            "bi://backing?backingImage=c&backingImageDataSourceType=clone&backing-image=src&encryption=encrypt&secret=key&secret-namespace=longhorn-system".into(),
            bi("c", BackingImageSource::Clone { backing_image: object("src"), encryption: Some(CloneEncryption::Encrypt), secret: Some(object("key")), secret_namespace: Some(object("longhorn-system")) }, None, &[]),
            "bi://backing?backingImage=c&backingImageDataSourceType=clone&backing-image=src&encryption=encrypt&secret=key&secret-namespace=longhorn-system".into(),
        ),
        (
            "bi://backing?backingImage=c&backingImageDataSourceType=clone&backing-image=src&secret=".into(),
            bi("c", BackingImageSource::Clone { backing_image: object("src"), encryption: None, secret: None, secret_namespace: None }, None, &[]),
            "bi://backing?backingImage=c&backingImageDataSourceType=clone&backing-image=src".into(),
        ),
    ]
}

#[test]
fn table_decodes_exactly_and_encodes_canonically() {
    for (text, expected, canonical) in table() {
        assert_eq!(decode(&text), Ok(expected.clone()), "decoding {text}");
        assert_eq!(expected.encode(), canonical, "encoding {expected:?}");
        assert_eq!(decode(&canonical), Ok(expected), "decoding {canonical}");
    }
}

#[test]
fn legacy_bs_and_bak_are_the_same_value() {
    assert_eq!(decode("bs://v/b"), decode("bak://v/b"));
    assert!(decode("bs://v/b").is_ok());
}
