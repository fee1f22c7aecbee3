//! Property and fuzz tests of the target and backup URL parsers.
//! `PROPTEST_CASES=100000 cargo test -p backupstore --test target_url` runs a long fuzz.

// A failed unwrap is the test failure report.
#![allow(clippy::unwrap_used)]

use backupstore::target::{BackupUrl, TargetKind, TargetUrl};
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    // Includes characters that need percent-encoding (space, '%', 'é', '?', '#').
    "[a-zA-Z0-9_.~ %é?#-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9-]{1,8}){0,3}",
        (0u8..=255, 0u8..=255, 0u8..=255, 0u8..=255)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        Just("[fd00::1]".to_string()),
    ]
}

/// A valid target URL and the kind it must parse into.
fn target() -> impl Strategy<Value = (String, TargetKind)> {
    let segments = || prop::collection::vec(segment(), 1..4);
    prop_oneof![
        (segments(), any::<bool>()).prop_map(|(segs, slash)| {
            let url = format!(
                "file:///{}{}",
                segs.iter()
                    .map(|s| encode_segment(s))
                    .collect::<Vec<_>>()
                    .join("/"),
                if slash { "/" } else { "" }
            );
            let path = format!("/{}", segs.join("/"));
            (url, TargetKind::File { path: path.into() })
        }),
        (
            host(),
            segments(),
            prop::option::of(
                "[a-z]{1,6}(=[0-9]{1,3})?(,[a-z]{1,6}(=[0-9]{1,3})?){0,3}".prop_map(String::from)
            )
        )
            .prop_map(|(host, segs, opts)| {
                let mut url = format!(
                    "nfs://{host}:/{}",
                    segs.iter()
                        .map(|s| encode_segment(s))
                        .collect::<Vec<_>>()
                        .join("/")
                );
                if let Some(opts) = &opts {
                    url.push_str("?nfsOptions=");
                    url.push_str(opts);
                }
                let kind = TargetKind::Nfs {
                    host,
                    export: format!("/{}", segs.join("/")),
                    nfs_options: opts,
                };
                (url, kind)
            }),
        (
            "[a-z0-9][a-z0-9.-]{1,20}",
            prop::option::of("[a-z]{2}-[a-z]{4,9}-[1-9]"),
            prop::collection::vec(segment(), 0..4)
        )
            .prop_map(|(bucket, region, segs)| {
                let authority = match &region {
                    Some(region) => format!("{bucket}@{region}"),
                    None => bucket.clone(),
                };
                let url = format!(
                    "s3://{authority}/{}{}",
                    segs.iter()
                        .map(|s| encode_segment(s))
                        .collect::<Vec<_>>()
                        .join("/"),
                    if segs.is_empty() { "" } else { "/" }
                );
                let kind = TargetKind::S3 {
                    bucket,
                    region,
                    prefix: segs.join("/"),
                };
                (url, kind)
            }),
    ]
}

proptest! {
    #[test]
    fn valid_targets_parse_into_their_parts((url, kind) in target()) {
        let parsed = TargetUrl::parse(&url).map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        prop_assert_eq!(parsed.kind(), &kind);
        // The canonical form is a fixed point.
        let again = TargetUrl::parse(parsed.as_str()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again, &parsed);
    }

    #[test]
    fn backup_urls_round_trip((url, _) in target(), backup in "\\PC{1,20}", volume in "\\PC{1,20}") {
        let target = TargetUrl::parse(&url).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let backup_url = target.backup_url(&backup, &volume).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = backup_url.to_string();
        let parsed = BackupUrl::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &backup_url);
        prop_assert_eq!(parsed.to_string(), text);
    }

    #[test]
    fn arbitrary_text_never_panics(input in "\\PC{0,80}") {
        if let Ok(url) = TargetUrl::parse(&input) {
            let again = TargetUrl::parse(url.as_str());
            prop_assert_eq!(again.as_ref().ok(), Some(&url));
        }
        if let Ok(url) = BackupUrl::parse(&input) {
            prop_assert_eq!(BackupUrl::parse(&url.to_string()).ok(), Some(url));
        }
    }

    #[test]
    fn url_shaped_noise_never_panics(
        scheme in prop::sample::select(vec!["file", "nfs", "s3", "S3", "cifs", "azblob", "x"]),
        rest in "[a-zA-Z0-9:/@?&=%,$.#\\[\\] +-]{0,60}",
    ) {
        let input = format!("{scheme}://{rest}");
        if let Ok(url) = TargetUrl::parse(&input) {
            prop_assert_eq!(TargetUrl::parse(url.as_str()).ok(), Some(url));
        }
        if let Ok(url) = BackupUrl::parse(&input) {
            prop_assert_eq!(BackupUrl::parse(&url.to_string()).ok(), Some(url));
        }
    }
}
