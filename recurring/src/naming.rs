//! Names and labels of the artifacts a job run creates (Longhorn's scheme), with the randomness
//! passed in so names are reproducible in tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Label every artifact of a job carries; its value is the job name.
pub const RECURRING_JOB_LABEL: &str = "RecurringJob";

/// Snapshot name: the first 8 characters of `"<job>-c"`, a dash, and a version-4 UUID made from
/// `random` (e.g. job `nightly` → `nightly--1b4e28ba-2fa1-41d2-883f-0016d3cca427`).
pub fn snapshot_name(job: &str, random: [u8; 16]) -> String {
    let prefix: String = format!("{job}-c").chars().take(8).collect();
    format!("{prefix}-{}", uuid_v4(random))
}

/// Backup name: `backup-` and 16 lowercase hex digits from `random`.
pub fn backup_name(random: [u8; 8]) -> String {
    let mut name = String::from("backup-");
    for byte in random {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

/// Formats 16 random bytes as a version-4, variant-1 UUID (the version and variant bits are set).
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (index, byte) in bytes.iter().enumerate() {
        if matches!(index, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Labels for an artifact of `job`: the job's own `labels` plus `RecurringJob: <job>`, which
/// wins over a job label of the same key (retention finds artifacts by it).
pub fn artifact_labels(
    job: &str,
    job_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = job_labels.clone();
    labels.insert(RECURRING_JOB_LABEL.to_string(), job.to_string());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_follow_longhorn() {
        let random = [
            0x1b, 0x4e, 0x28, 0xba, 0x2f, 0xa1, 0x11, 0xd2, 0x08, 0x3f, 0x00, 0x16, 0xd3, 0xcc,
            0xa4, 0x27,
        ];
        // Version nibble forced to 4, variant bits to 10.
        assert_eq!(uuid_v4(random), "1b4e28ba-2fa1-41d2-883f-0016d3cca427");
        assert_eq!(
            snapshot_name("nightly", random),
            "nightly--1b4e28ba-2fa1-41d2-883f-0016d3cca427"
        );
        assert_eq!(
            snapshot_name("snap", random),
            "snap-c-1b4e28ba-2fa1-41d2-883f-0016d3cca427"
        );
        assert_eq!(
            snapshot_name("verylongjobname", random),
            "verylong-1b4e28ba-2fa1-41d2-883f-0016d3cca427"
        );
        assert_eq!(
            snapshot_name("a", [0; 16]),
            "a-c-00000000-0000-4000-8000-000000000000"
        );
    }

    #[test]
    fn backup_names_are_16_hex() {
        assert_eq!(
            backup_name([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 0xff]),
            "backup-deadbeef000102ff"
        );
    }

    #[test]
    fn labels_carry_the_job() {
        let mut job_labels = BTreeMap::new();
        job_labels.insert("team".to_string(), "db".to_string());
        job_labels.insert(RECURRING_JOB_LABEL.to_string(), "spoofed".to_string());
        let labels = artifact_labels("nightly", &job_labels);
        assert_eq!(
            labels.get(RECURRING_JOB_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("db"));
        assert_eq!(labels.len(), 2);
    }

    proptest::proptest! {
        #[test]
        fn names_have_the_documented_shape(job in "[a-z0-9-]{1,40}", random: [u8; 16], eight: [u8; 8]) {
            let name = snapshot_name(&job, random);
            let (prefix, uuid) = name.split_at(name.len() - 37);
            let full_prefix = format!("{job}-c");
            proptest::prop_assert!(full_prefix.starts_with(prefix));
            proptest::prop_assert!(prefix.chars().count() == 8 || prefix == full_prefix);
            proptest::prop_assert_eq!(uuid.len(), 37);
            proptest::prop_assert_eq!(&uuid[15..16], "4");
            let backup = backup_name(eight);
            proptest::prop_assert_eq!(backup.len(), 23);
            proptest::prop_assert!(backup[7..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }
}
