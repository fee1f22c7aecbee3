//! BackupTarget: where backups are stored (`s3://`, `nfs://`, `file://`, …) and how to reach it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Time, parse_go_duration};
use crate::validate::{Checker, Validate};

pub mod rules {
    //! CEL rules of the BackupTarget schema and their messages; `validate()` checks the same.
    pub const SCHEME: &str = "self == '' || self.matches('^(s3|nfs|cifs|azblob|file)://')";
    pub const SCHEME_MSG: &str = "spec.backupTargetURL must start with s3://, nfs://, cifs://, azblob:// or file://, e.g. s3://bucket@us-east-1/backups/ (empty means no target)";
    pub const PATH_CHARS: &str = "!self.matches('^[^?]*[$,]')";
    pub const PATH_CHARS_MSG: &str =
        "spec.backupTargetURL must not contain '$' or ',' in its path: rename the folder";
    pub const S3_SHAPE: &str =
        "!self.startsWith('s3://') || self.matches('^s3://[^@/?]+(@[^/?]+)?/')";
    pub const S3_SHAPE_MSG: &str =
        "spec.backupTargetURL for S3 is s3://<bucket>@<region>/<path>/ or s3://<bucket>/<path>/";
    pub const NFS_SHAPE: &str = "!self.startsWith('nfs://') || self.matches('^nfs://[^/:?]+:/')";
    pub const NFS_SHAPE_MSG: &str =
        "spec.backupTargetURL for NFS is nfs://<host>:/<export path>[?nfsOptions=...]";
    pub const FILE_SHAPE: &str = "!self.startsWith('file://') || self.matches('^file:///[^?]*$')";
    pub const FILE_SHAPE_MSG: &str =
        "spec.backupTargetURL for a local directory is file:///<absolute path> (three slashes)";
    pub const POLL_INTERVAL: &str =
        "self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')";
    pub const POLL_INTERVAL_MSG: &str =
        "spec.pollInterval must be a duration such as 300s, 5m or 1h30m; 0 disables polling";
}

/// A backup store the volumes back up to. The one named `default` is used by volumes that
/// name none.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "BackupTarget",
    namespaced,
    status = "BackupTargetStatus",
    shortname = "bwbt",
    category = "bulwark",
    derive = "PartialEq",
    doc = "A backup store (S3 bucket, NFS export or local directory) and its credentials.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.backupTargetURL"),
    printcolumn(
        name = "Credential",
        type_ = "string",
        json_path = ".spec.credentialSecret"
    ),
    printcolumn(name = "Interval", type_ = "string", json_path = ".spec.pollInterval"),
    printcolumn(name = "Available", type_ = "boolean", json_path = ".status.available"),
    printcolumn(
        name = "Last Synced",
        type_ = "date",
        json_path = ".status.lastSyncedAt"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupTargetSpec {
    /// `s3://<bucket>@<region>/<path>/`, `nfs://<host>:/<path>`, `file:///<path>`, or empty.
    #[serde(default, rename = "backupTargetURL")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new(rules::SCHEME).message(rules::SCHEME_MSG))]
    #[x_kube(validation = Rule::new(rules::PATH_CHARS).message(rules::PATH_CHARS_MSG))]
    #[x_kube(validation = Rule::new(rules::S3_SHAPE).message(rules::S3_SHAPE_MSG))]
    #[x_kube(validation = Rule::new(rules::NFS_SHAPE).message(rules::NFS_SHAPE_MSG))]
    #[x_kube(validation = Rule::new(rules::FILE_SHAPE).message(rules::FILE_SHAPE_MSG))]
    pub backup_target_url: String,
    /// Secret (in the BackupTarget's namespace) with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ENDPOINTS`, `AWS_CERT`, `VIRTUAL_HOSTED_STYLE`, `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret: Option<String>,
    /// How often to re-read the store (Go duration, default `300s`; `0` disables).
    #[serde(default = "default_poll_interval")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(rules::POLL_INTERVAL).message(rules::POLL_INTERVAL_MSG))]
    pub poll_interval: String,
    /// Ask for a sync now: the operator syncs when this is newer than `status.lastSyncedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_requested_at: Option<Time>,
}

pub fn default_poll_interval() -> String {
    "300s".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTargetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl BackupTargetSpec {
    /// The poll interval; `None` when polling is disabled (`0`) or the value is invalid.
    pub fn poll_interval(&self) -> Option<std::time::Duration> {
        parse_go_duration(&self.poll_interval).filter(|d| !d.is_zero())
    }
}

/// Check a backup target URL as the BackupTarget schema does (`Ok` for an empty URL).
pub fn validate_target_url(url: &str) -> Result<(), crate::ValidationErrors> {
    let mut c = Checker::default();
    url_problems(url, &mut c);
    c.finish()
}

fn url_problems(url: &str, c: &mut Checker) {
    const FIELD: &str = "spec.backupTargetURL";
    if url.is_empty() {
        return;
    }
    let scheme = url.split_once("://").map(|(s, _)| s);
    c.check(
        matches!(scheme, Some("s3" | "nfs" | "cifs" | "azblob" | "file")),
        FIELD,
        rules::SCHEME_MSG,
    );
    let path = url.split('?').next().unwrap_or_default();
    c.check(!path.contains(['$', ',']), FIELD, rules::PATH_CHARS_MSG);
    if let Some(rest) = url.strip_prefix("s3://") {
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let (bucket, region) = host.split_once('@').unwrap_or((host, "x"));
        let shaped =
            !bucket.is_empty() && !region.is_empty() && rest[host.len()..].starts_with('/');
        c.check(shaped, FIELD, rules::S3_SHAPE_MSG);
    }
    if let Some(rest) = url.strip_prefix("nfs://") {
        let shaped = rest
            .split_once(":/")
            .is_some_and(|(host, _)| !host.is_empty() && !host.contains(['/', '?', ':']));
        c.check(shaped, FIELD, rules::NFS_SHAPE_MSG);
    }
    if let Some(rest) = url.strip_prefix("file://") {
        c.check(
            rest.starts_with('/') && !rest.contains('?'),
            FIELD,
            rules::FILE_SHAPE_MSG,
        );
    }
}

impl Validate for BackupTarget {
    fn check(&self, c: &mut Checker) {
        url_problems(&self.spec.backup_target_url, c);
        c.check(
            parse_go_duration(&self.spec.poll_interval).is_some(),
            "spec.pollInterval",
            rules::POLL_INTERVAL_MSG,
        );
    }
}
