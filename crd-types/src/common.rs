//! Types and constants shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const API_GROUP: &str = "bulwark.io";
pub const API_VERSION: &str = "v1beta1";

/// The backup target a volume uses when it names none.
pub const DEFAULT_BACKUP_TARGET: &str = "default";

/// Serde default of `backupTargetName` fields.
pub fn default_backup_target() -> String {
    DEFAULT_BACKUP_TARGET.to_owned()
}

/// Label key that binds a volume to one recurring job: `recurring-job.bulwark.io/<job>: enabled`.
pub const RECURRING_JOB_LABEL_PREFIX: &str = "recurring-job.bulwark.io/";
/// Label key that binds a volume to a group of jobs: `recurring-job-group.bulwark.io/<group>: enabled`.
pub const RECURRING_JOB_GROUP_LABEL_PREFIX: &str = "recurring-job-group.bulwark.io/";
/// Label put on every snapshot and backup a recurring job creates (value: the job's name).
pub const RECURRING_JOB_ARTIFACT_LABEL: &str = "RecurringJob";

/// Compression of backup blocks in the store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionMethod {
    None,
    Lz4,
    Gzip,
}

impl CompressionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionMethod::None => "none",
            CompressionMethod::Lz4 => "lz4",
            CompressionMethod::Gzip => "gzip",
        }
    }
}

/// Whether a backup reads the whole volume or only what changed since the last backup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    Full,
    #[default]
    Incremental,
}

/// Schema of a small string map whose values CEL rules inspect: bounded, so that the API
/// server can price the rules within its cost budget.
pub fn bounded_string_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 32,
        "additionalProperties": { "type": "string", "maxLength": 4096 }
    })
}

/// Upper bound of Kubernetes label values and of the name part of label keys.
pub const MAX_LABEL_NAME_LEN: usize = 63;

/// A name Kubernetes accepts as the name part of a label key and as a label value
/// (`[a-z0-9A-Z]` at both ends, `-_.` and alphanumerics between, at most 63 characters).
pub fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_NAME_LEN
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Bytes of a Kubernetes quantity such as `10Gi`, `2Mi`, `16777216` or `1G`.
/// Fractions and the `m` (milli) suffix are not byte counts and are refused.
pub fn parse_quantity_bytes(s: &str) -> Option<u64> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(digits_end);
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// The OpenAPI pattern of a byte quantity (what [`parse_quantity_bytes`] accepts).
pub const BYTE_QUANTITY_PATTERN: &str = r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$";

/// Go's `time.ParseDuration` syntax, as used by Kubernetes (`30s`, `5m`, `1h30m`, `0`).
pub fn parse_go_duration(s: &str) -> Option<std::time::Duration> {
    // kube's parser reads "" as zero; Go's (the reference) refuses it.
    if s.is_empty() {
        return None;
    }
    let parsed: kube::core::Duration = s.parse().ok()?;
    if parsed.is_negative() {
        return None;
    }
    Some(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(parse_quantity_bytes("2Mi"), Some(2 * 1024 * 1024));
        assert_eq!(parse_quantity_bytes("16777216"), Some(16 * 1024 * 1024));
        assert_eq!(parse_quantity_bytes("10Gi"), Some(10 << 30));
        assert_eq!(parse_quantity_bytes("1G"), Some(1_000_000_000));
        for bad in [
            "",
            "Gi",
            "1.5Gi",
            "100m",
            "-1",
            "1 Gi",
            "99999999999999999999999",
            "16Ei",
        ] {
            assert_eq!(parse_quantity_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_go_duration("5m"),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_go_duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(parse_go_duration("0"), Some(std::time::Duration::ZERO));
        for bad in ["", "5", "-5m", "5 minutes", "m"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn label_names() {
        assert!(is_label_name("daily-backup"));
        assert!(is_label_name(&"a".repeat(63)));
        assert!(!is_label_name(&"a".repeat(64)));
        assert!(!is_label_name("-x"));
        assert!(!is_label_name("x/y"));
        assert!(!is_label_name(""));
    }
}
