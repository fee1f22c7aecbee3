//! StorageClass parameters of `driver.bulwark.io`, as CreateVolume receives them, parsed
//! strictly into what the new Volume gets: every parameter is known or refused with a message
//! naming it and the fix, so a typo never silently changes a volume. Pure: no I/O.

use std::collections::BTreeMap;

use crd_types::common::CompressionMethod;
use recurring::storage_class::{
    self, LegacyRecurringJob, StorageClassError, parse_recurring_job_selector, parse_recurring_jobs,
};

/// Parameters a StorageClass may set.
pub const RECURRING_JOBS: &str = storage_class::RECURRING_JOBS;
pub const RECURRING_JOB_SELECTOR: &str = storage_class::RECURRING_JOB_SELECTOR;
pub const FROM_BACKUP: &str = "fromBackup";
pub const BACKING_IMAGE: &str = "backingImage";
pub const BACKING_IMAGE_CHECKSUM: &str = "backingImageChecksum";
pub const BACKING_IMAGE_DATA_SOURCE_TYPE: &str = "backingImageDataSourceType";
pub const BACKING_IMAGE_DATA_SOURCE_PARAMETERS: &str = "backingImageDataSourceParameters";
pub const BACKUP_COMPRESSION_METHOD: &str = "backupCompressionMethod";
pub const BACKUP_BLOCK_SIZE: &str = "backupBlockSize";
pub const NODE_ID: &str = "nodeID";
pub const BACKUP_TARGET_NAME: &str = "backupTargetName";

const KNOWN: &[&str] = &[
    RECURRING_JOBS,
    RECURRING_JOB_SELECTOR,
    FROM_BACKUP,
    BACKING_IMAGE,
    BACKING_IMAGE_CHECKSUM,
    BACKING_IMAGE_DATA_SOURCE_TYPE,
    BACKING_IMAGE_DATA_SOURCE_PARAMETERS,
    BACKUP_COMPRESSION_METHOD,
    BACKUP_BLOCK_SIZE,
    NODE_ID,
    BACKUP_TARGET_NAME,
];

/// Keys the CSI sidecars add themselves (`--extra-create-metadata`: the PVC's and PV's names).
const SIDECAR_PREFIX: &str = "csi.storage.k8s.io/";

/// Longhorn StorageClass parameters that have no meaning here, with why, so a StorageClass
/// brought over from Longhorn fails with a reason instead of a bare "unknown".
const LONGHORN_ONLY: &[(&str, &str)] = &[
    (
        "numberOfReplicas",
        "a Bulwark volume has one copy on its node; protect it with recurring backups",
    ),
    ("staleReplicaTimeout", "Bulwark volumes have no replicas"),
    (
        "dataLocality",
        "a Bulwark volume's data is always on its node",
    ),
    ("replicaAutoBalance", "Bulwark volumes have no replicas"),
    (
        "diskSelector",
        "a Bulwark volume lives in its agent's data directory",
    ),
    ("nodeSelector", "use nodeID to place a volume on one node"),
    ("dataEngine", "Bulwark has one data engine"),
];

/// The block sizes a volume's backups may use.
const BLOCK_SIZES: &[&str] = &["2Mi", "16Mi", "2097152", "16777216"];

/// What a StorageClass asks of its volumes.
#[derive(Debug, Clone, Default)]
pub struct VolumeParameters {
    /// Jobs of the legacy `recurringJobs` parameter: RecurringJobs to create, each binding the
    /// volume by a label.
    pub recurring_jobs: Vec<LegacyRecurringJob>,
    /// Labels binding the volume to jobs or groups (both parameters).
    pub labels: BTreeMap<String, String>,
    pub from_backup: Option<String>,
    pub backing_image: Option<BackingImageRequest>,
    pub backup_compression_method: Option<CompressionMethod>,
    pub backup_block_size: Option<String>,
    pub node_id: Option<String>,
    pub backup_target_name: Option<String>,
}

/// The backing image a StorageClass names, with what is needed to create it when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingImageRequest {
    pub name: String,
    pub checksum: Option<String>,
    pub data_source_type: Option<String>,
    /// `backingImageDataSourceParameters`: a JSON object of strings.
    pub data_source_parameters: BTreeMap<String, String>,
}

/// Why a StorageClass parameter was refused; every message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error(
        "StorageClass parameter `{0}` is not known to driver.bulwark.io; known parameters are {known}",
        known = KNOWN.join(", ")
    )]
    Unknown(String),
    #[error("StorageClass parameter `{name}` is not supported: {why}; remove it")]
    LonghornOnly { name: String, why: &'static str },
    #[error(transparent)]
    RecurringJobs(#[from] StorageClassError),
    #[error("StorageClass parameter `{name}` is empty; remove it or give a value")]
    Empty { name: &'static str },
    #[error(
        "StorageClass parameter `backupCompressionMethod` is `{0}`; use `none`, `lz4` or `gzip`"
    )]
    CompressionMethod(String),
    #[error("StorageClass parameter `backupBlockSize` is `{0}`; use `2Mi` or `16Mi`")]
    BlockSize(String),
    #[error(
        "StorageClass parameter `{name}` needs `backingImage`: name the backing image it describes"
    )]
    NeedsBackingImage { name: &'static str },
    #[error(
        "StorageClass parameter `backingImageDataSourceParameters` must be a JSON object of strings, e.g. {{\"url\": \"https://...\"}}: {0}"
    )]
    DataSourceParameters(String),
    #[error(
        "StorageClass parameter `{parameter}` is `{value}`; it must be a Kubernetes object name (lowercase letters, digits, `-` and `.`)"
    )]
    NotAName {
        parameter: &'static str,
        value: String,
    },
    #[error("StorageClass parameter `recurringJobs` entry {index} ({name}): {why}")]
    JobTask {
        index: usize,
        name: String,
        why: String,
    },
    #[error(
        "StorageClass parameters `fromBackup` and `backingImage` are exclusive: a volume starts from a backup or from a backing image"
    )]
    BackupAndImage,
}

/// The RecurringJob a `recurringJobs` entry becomes (named after the job, as Longhorn does);
/// `Err` says why it cannot be one.
pub fn recurring_job_object(job: &LegacyRecurringJob) -> Result<crd_types::RecurringJob, String> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
        "metadata": {"name": job.name},
        "spec": {
            "name": job.name,
            "task": job.task.as_str(),
            "cron": job.cron.as_str(),
            "retain": job.retain,
            "labels": job.labels,
        },
    }))
    .map_err(|_| {
        format!(
            "task `{}` is not one a RecurringJob runs; use snapshot, snapshot-force-create, snapshot-cleanup, snapshot-delete, backup or backup-force-create",
            job.task.as_str()
        )
    })
}

/// Parses the parameters of a CreateVolume request (the StorageClass's, plus the sidecars'
/// `csi.storage.k8s.io/…` keys, which are ignored).
pub fn parse<'a, I>(parameters: I) -> Result<VolumeParameters, ParameterError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut given: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, value) in parameters {
        if name.starts_with(SIDECAR_PREFIX) {
            continue;
        }
        if let Some((_, why)) = LONGHORN_ONLY.iter().find(|(known, _)| *known == name) {
            return Err(ParameterError::LonghornOnly {
                name: name.to_owned(),
                why,
            });
        }
        if !KNOWN.contains(&name) {
            return Err(ParameterError::Unknown(name.to_owned()));
        }
        given.insert(name, value);
    }
    let text = |name: &'static str| -> Result<Option<&str>, ParameterError> {
        match given.get(name) {
            None => Ok(None),
            Some(value) if value.trim().is_empty() => Err(ParameterError::Empty { name }),
            Some(value) => Ok(Some(value.trim())),
        }
    };
    let object_name = |parameter: &'static str| -> Result<Option<String>, ParameterError> {
        text(parameter)?
            .map(|value| {
                if is_object_name(value) {
                    Ok(value.to_owned())
                } else {
                    Err(ParameterError::NotAName {
                        parameter,
                        value: value.to_owned(),
                    })
                }
            })
            .transpose()
    };

    let mut result = VolumeParameters::default();
    if let Some(jobs) = text(RECURRING_JOBS)? {
        result.recurring_jobs = parse_recurring_jobs(jobs)?;
        for (index, job) in result.recurring_jobs.iter().enumerate() {
            recurring_job_object(job).map_err(|why| ParameterError::JobTask {
                index,
                name: job.name.clone(),
                why,
            })?;
        }
        result
            .labels
            .extend(result.recurring_jobs.iter().map(|job| job.volume_label()));
    }
    if let Some(selector) = text(RECURRING_JOB_SELECTOR)? {
        result.labels.extend(
            parse_recurring_job_selector(selector)?
                .iter()
                .map(|entry| entry.volume_label()),
        );
    }
    result.from_backup = text(FROM_BACKUP)?.map(str::to_owned);
    result.backing_image = match object_name(BACKING_IMAGE)? {
        Some(name) => Some(BackingImageRequest {
            name,
            checksum: text(BACKING_IMAGE_CHECKSUM)?.map(str::to_owned),
            data_source_type: text(BACKING_IMAGE_DATA_SOURCE_TYPE)?.map(str::to_owned),
            data_source_parameters: match text(BACKING_IMAGE_DATA_SOURCE_PARAMETERS)? {
                Some(json) => serde_json::from_str(json)
                    .map_err(|e| ParameterError::DataSourceParameters(e.to_string()))?,
                None => BTreeMap::new(),
            },
        }),
        None => {
            for name in [
                BACKING_IMAGE_CHECKSUM,
                BACKING_IMAGE_DATA_SOURCE_TYPE,
                BACKING_IMAGE_DATA_SOURCE_PARAMETERS,
            ] {
                if given.contains_key(name) {
                    return Err(ParameterError::NeedsBackingImage { name });
                }
            }
            None
        }
    };
    if result.from_backup.is_some() && result.backing_image.is_some() {
        return Err(ParameterError::BackupAndImage);
    }
    result.backup_compression_method = text(BACKUP_COMPRESSION_METHOD)?
        .map(|value| match value {
            "none" => Ok(CompressionMethod::None),
            "lz4" => Ok(CompressionMethod::Lz4),
            "gzip" => Ok(CompressionMethod::Gzip),
            other => Err(ParameterError::CompressionMethod(other.to_owned())),
        })
        .transpose()?;
    result.backup_block_size = text(BACKUP_BLOCK_SIZE)?
        .map(|value| {
            if BLOCK_SIZES.contains(&value) {
                Ok(value.to_owned())
            } else {
                Err(ParameterError::BlockSize(value.to_owned()))
            }
        })
        .transpose()?;
    result.node_id = object_name(NODE_ID)?;
    result.backup_target_name = object_name(BACKUP_TARGET_NAME)?;
    Ok(result)
}

/// A DNS-1123 subdomain: what names of nodes and of our objects must be.
fn is_object_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(pairs: &[(&str, &str)]) -> Result<VolumeParameters, ParameterError> {
        parse(pairs.iter().copied())
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        parsed(pairs).expect_err("refused").to_string()
    }

    #[test]
    fn legacy_jobs_become_recurring_jobs_named_after_them_or_are_refused_by_entry() {
        let p = parsed(&[(
            RECURRING_JOBS,
            r#"[{"name":"snap","task":"snapshot","cron":"*/5 * * * *","retain":3,"labels":{"tier":"gold"}},
                {"name":"bak","task":"backup","cron":"@daily","retain":7}]"#,
        )])
        .expect("valid");
        let jobs: Vec<crd_types::RecurringJob> = p
            .recurring_jobs
            .iter()
            .map(|job| recurring_job_object(job).expect("a RecurringJob"))
            .collect();
        assert_eq!(jobs[0].metadata.name.as_deref(), Some("snap"));
        assert_eq!(jobs[0].spec.name.as_deref(), Some("snap"));
        assert_eq!(
            jobs[0].spec.task,
            crd_types::recurring_job::RecurringTask::Snapshot
        );
        assert_eq!(jobs[0].spec.cron, "*/5 * * * *");
        assert_eq!(jobs[0].spec.retain, 3);
        assert_eq!(
            jobs[0].spec.labels,
            BTreeMap::from([("tier".into(), "gold".into())])
        );
        assert_eq!(
            jobs[1].spec.task,
            crd_types::recurring_job::RecurringTask::Backup
        );
        assert_eq!(jobs[1].spec.cron, "@daily");
        assert_eq!(
            refused(&[(
                RECURRING_JOBS,
                r#"[{"name":"ok","task":"snapshot","cron":"@daily","retain":1},
                    {"name":"trim","task":"filesystem-trim","cron":"@daily","retain":1}]"#,
            )]),
            "StorageClass parameter `recurringJobs` entry 1 (trim): task `filesystem-trim` is not one a RecurringJob runs; use snapshot, snapshot-force-create, snapshot-cleanup, snapshot-delete, backup or backup-force-create"
        );
    }

    #[test]
    fn a_full_storage_class_becomes_volume_settings() {
        let p = parsed(&[
            (
                RECURRING_JOBS,
                r#"[{"name":"snap","task":"snapshot","cron":"*/5 * * * *","retain":3}]"#,
            ),
            (
                RECURRING_JOB_SELECTOR,
                r#"[{"name":"nightly","isGroup":true},{"name":"weekly","isGroup":false}]"#,
            ),
            (BACKUP_COMPRESSION_METHOD, "gzip"),
            (BACKUP_BLOCK_SIZE, "16Mi"),
            (NODE_ID, "worker-1"),
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "apps"),
        ])
        .expect("valid");
        assert_eq!(p.recurring_jobs.len(), 1);
        assert_eq!(
            p.labels,
            BTreeMap::from([
                ("recurring-job.bulwark.io/snap".into(), "enabled".into()),
                ("recurring-job.bulwark.io/weekly".into(), "enabled".into()),
                (
                    "recurring-job-group.bulwark.io/nightly".into(),
                    "enabled".into()
                ),
            ])
        );
        assert_eq!(p.backup_compression_method, Some(CompressionMethod::Gzip));
        assert_eq!(p.backup_block_size.as_deref(), Some("16Mi"));
        assert_eq!(p.node_id.as_deref(), Some("worker-1"));
        assert!(p.from_backup.is_none() && p.backing_image.is_none());
    }

    #[test]
    fn a_backing_image_comes_with_its_source() {
        let p = parsed(&[
            (BACKING_IMAGE, "ubuntu"),
            (BACKING_IMAGE_CHECKSUM, "abc"),
            (BACKING_IMAGE_DATA_SOURCE_TYPE, "download"),
            (
                BACKING_IMAGE_DATA_SOURCE_PARAMETERS,
                r#"{"url":"https://example.com/u.img"}"#,
            ),
        ])
        .expect("valid");
        assert_eq!(
            p.backing_image,
            Some(BackingImageRequest {
                name: "ubuntu".into(),
                checksum: Some("abc".into()),
                data_source_type: Some("download".into()),
                data_source_parameters: BTreeMap::from([(
                    "url".into(),
                    "https://example.com/u.img".into()
                )]),
            })
        );
    }

    #[test]
    fn every_refusal_names_the_parameter_and_the_fix() {
        for (pairs, expected) in [
            (
                &[("replicas", "3")][..],
                "parameter `replicas` is not known to driver.bulwark.io; known parameters are recurringJobs",
            ),
            (
                &[("numberOfReplicas", "3")][..],
                "`numberOfReplicas` is not supported: a Bulwark volume has one copy",
            ),
            (
                &[(BACKUP_COMPRESSION_METHOD, "zstd")][..],
                "`backupCompressionMethod` is `zstd`; use `none`, `lz4` or `gzip`",
            ),
            (
                &[(BACKUP_BLOCK_SIZE, "4Mi")][..],
                "`backupBlockSize` is `4Mi`; use `2Mi` or `16Mi`",
            ),
            (&[(FROM_BACKUP, " ")][..], "`fromBackup` is empty"),
            (
                &[(BACKING_IMAGE_CHECKSUM, "abc")][..],
                "`backingImageChecksum` needs `backingImage`",
            ),
            (
                &[
                    (BACKING_IMAGE, "img"),
                    (BACKING_IMAGE_DATA_SOURCE_PARAMETERS, "[1]"),
                ][..],
                "`backingImageDataSourceParameters` must be a JSON object of strings",
            ),
            (&[(NODE_ID, "Worker_1")][..], "`nodeID` is `Worker_1`"),
            (
                &[
                    (FROM_BACKUP, "s3://b@r/p?backup=x&volume=v"),
                    (BACKING_IMAGE, "img"),
                ][..],
                "`fromBackup` and `backingImage` are exclusive",
            ),
            (
                &[(
                    RECURRING_JOBS,
                    r#"[{"name":"a","task":"snapshot","cron":"* * *","retain":1}]"#,
                )][..],
                "StorageClass parameter `recurringJobs` entry 0 (`a`): field `cron`",
            ),
            (
                &[(RECURRING_JOB_SELECTOR, "nightly")][..],
                "StorageClass parameter `recurringJobSelector` is not valid JSON",
            ),
        ] {
            let message = refused(pairs);
            assert!(message.contains(expected), "{pairs:?}: {message}");
        }
    }

    #[test]
    fn no_parameters_mean_a_plain_volume() {
        let p = parsed(&[]).expect("valid");
        assert!(p.labels.is_empty() && p.recurring_jobs.is_empty());
        assert!(p.node_id.is_none() && p.backup_compression_method.is_none());
    }
}
