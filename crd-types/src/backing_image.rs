//! BackingImage: a read-only base image (downloaded, exported from a volume, …) that volumes
//! use as their bottom layer.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Time};
use crate::validate::{Checker, Validate};

pub mod rules {
    //! CEL rules of the BackingImage schema and their messages; `validate()` checks the same.
    pub const NAME_LEN: &str = "self.metadata.name.size() <= 63";
    pub const NAME_LEN_MSG: &str =
        "metadata.name must be at most 63 characters: it is used as a label value";
    pub const CHECKSUM: &str = "self.matches('^[0-9a-f]{128}$')";
    pub const CHECKSUM_MSG: &str = "spec.checksum must be a SHA-512 digest: 128 lowercase hex characters, as sha512sum prints it";
    pub const DOWNLOAD_URL: &str = "self.sourceType != 'download' || ('url' in self.sourceParameters && self.sourceParameters['url'].matches('^https?://[^/]+'))";
    pub const DOWNLOAD_URL_MSG: &str = "spec.sourceParameters.url is required for sourceType download and must be an http:// or https:// URL";
    pub const EXPORT_VOLUME: &str = "self.sourceType != 'export-from-volume' || ('volume-name' in self.sourceParameters && self.sourceParameters['volume-name'] != '')";
    pub const EXPORT_VOLUME_MSG: &str = "spec.sourceParameters.volume-name is required for sourceType export-from-volume: name the Volume to export";
    pub const EXPORT_TYPE: &str = "!('export-type' in self.sourceParameters) || self.sourceParameters['export-type'] in ['raw', 'qcow2']";
    pub const EXPORT_TYPE_MSG: &str = "spec.sourceParameters.export-type must be raw or qcow2";
    pub const RESTORE_URL: &str = "self.sourceType != 'restore' || ('backup-url' in self.sourceParameters && self.sourceParameters['backup-url'] != '')";
    pub const RESTORE_URL_MSG: &str = "spec.sourceParameters.backup-url is required for sourceType restore: the backing image's URL in the store";
    pub const CLONE_SOURCE: &str = "self.sourceType != 'clone' || ('backing-image' in self.sourceParameters && self.sourceParameters['backing-image'] != '')";
    pub const CLONE_SOURCE_MSG: &str = "spec.sourceParameters.backing-image is required for sourceType clone: name the BackingImage to copy";
    pub const SOURCE_IMMUTABLE: &str = "self.sourceType == oldSelf.sourceType && self.sourceParameters == oldSelf.sourceParameters";
    pub const SOURCE_IMMUTABLE_MSG: &str =
        "spec.sourceType and spec.sourceParameters are immutable: create a new BackingImage";
    pub const CHECKSUM_IMMUTABLE: &str =
        "!has(oldSelf.checksum) || (has(self.checksum) && self.checksum == oldSelf.checksum)";
    pub const CHECKSUM_IMMUTABLE_MSG: &str = "spec.checksum is immutable once set";
}

/// Where a backing image's content comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackingImageSourceType {
    /// `url` (http/https), optional `checksum`.
    Download,
    /// `volume-name`, `export-type` (`raw`|`qcow2`, default raw).
    ExportFromVolume,
    /// Uploaded by a client.
    Upload,
    /// `backup-url` of a backing image in a backup store.
    Restore,
    /// `backing-image` to copy.
    Clone,
}

/// A backing image: content that volumes start from.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "BackingImage",
    namespaced,
    status = "BackingImageStatus",
    shortname = "bwbi",
    category = "bulwark",
    derive = "PartialEq",
    doc = "A read-only base image that Volumes use as their bottom layer.",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.sourceType"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Progress", type_ = "integer", json_path = ".status.progress"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(name = "Checksum", type_ = "string", json_path = ".status.checksum", priority = "1"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(rules::NAME_LEN).message(rules::NAME_LEN_MSG)
)]
#[x_kube(validation = Rule::new(rules::DOWNLOAD_URL).message(rules::DOWNLOAD_URL_MSG))]
#[x_kube(validation = Rule::new(rules::EXPORT_VOLUME).message(rules::EXPORT_VOLUME_MSG))]
#[x_kube(validation = Rule::new(rules::EXPORT_TYPE).message(rules::EXPORT_TYPE_MSG))]
#[x_kube(validation = Rule::new(rules::RESTORE_URL).message(rules::RESTORE_URL_MSG))]
#[x_kube(validation = Rule::new(rules::CLONE_SOURCE).message(rules::CLONE_SOURCE_MSG))]
#[x_kube(validation = Rule::new(rules::SOURCE_IMMUTABLE).message(rules::SOURCE_IMMUTABLE_MSG))]
#[x_kube(validation = Rule::new(rules::CHECKSUM_IMMUTABLE).message(rules::CHECKSUM_IMMUTABLE_MSG))]
#[serde(rename_all = "camelCase")]
pub struct BackingImageSpec {
    pub source_type: BackingImageSourceType,
    /// Parameters of the source type (see `sourceType`).
    #[serde(default)]
    #[schemars(schema_with = "crate::common::bounded_string_map")]
    pub source_parameters: BTreeMap<String, String>,
    /// Expected SHA-512 of the image content (128 lowercase hex); verified when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(rules::CHECKSUM).message(rules::CHECKSUM_MSG))]
    pub checksum: Option<String>,
}

/// Lifecycle of a backing image (Longhorn's spelling).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackingImageState {
    Pending,
    Starting,
    InProgress,
    Ready,
    Failed,
    Unknown,
}

/// The image's copy on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackingImageNodeCopy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BackingImageState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackingImageStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BackingImageState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,
    /// SHA-512 of the content, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Bytes of the raw image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Node whose agent prepares the first copy.
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// Copies on nodes, by node name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<BTreeMap<String, BackingImageNodeCopy>>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
}

fn is_sha512_hex(s: &str) -> bool {
    s.len() == 128
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Validate for BackingImage {
    fn check(&self, c: &mut Checker) {
        let spec = &self.spec;
        let param = |key: &str| spec.source_parameters.get(key).map(String::as_str);
        let present = |key: &str| param(key).is_some_and(|v| !v.is_empty());
        let name_len = self.metadata.name.as_deref().map_or(0, str::len);
        c.check(name_len <= 63, "metadata.name", rules::NAME_LEN_MSG);
        if let Some(sum) = &spec.checksum {
            c.check(is_sha512_hex(sum), "spec.checksum", rules::CHECKSUM_MSG);
        }
        let params = "spec.sourceParameters";
        match spec.source_type {
            BackingImageSourceType::Download => {
                let url_ok = param("url").is_some_and(|u| {
                    u.strip_prefix("https://")
                        .or_else(|| u.strip_prefix("http://"))
                        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
                });
                c.check(url_ok, params, rules::DOWNLOAD_URL_MSG);
            }
            BackingImageSourceType::ExportFromVolume => {
                c.check(present("volume-name"), params, rules::EXPORT_VOLUME_MSG)
            }
            BackingImageSourceType::Restore => {
                c.check(present("backup-url"), params, rules::RESTORE_URL_MSG)
            }
            BackingImageSourceType::Clone => {
                c.check(present("backing-image"), params, rules::CLONE_SOURCE_MSG)
            }
            BackingImageSourceType::Upload => {}
        }
        c.check(
            param("export-type").is_none_or(|t| t == "raw" || t == "qcow2"),
            params,
            rules::EXPORT_TYPE_MSG,
        );
    }

    fn check_update(&self, old: &Self, c: &mut Checker) {
        c.check(
            self.spec.source_type == old.spec.source_type
                && self.spec.source_parameters == old.spec.source_parameters,
            "spec",
            rules::SOURCE_IMMUTABLE_MSG,
        );
        c.check(
            old.spec.checksum.is_none() || self.spec.checksum == old.spec.checksum,
            "spec",
            rules::CHECKSUM_IMMUTABLE_MSG,
        );
    }
}
