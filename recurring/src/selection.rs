//! Which volumes a job applies to, and how a PVC's job labels reach its volume.
//!
//! A volume is bound to job `J` by the label `recurring-job.bulwark.io/J: enabled` and to group
//! `G` by `recurring-job-group.bulwark.io/G: enabled`. A volume with no such label belongs to the
//! group `default`. Only the value `enabled` binds; a label with any other value (e.g.
//! `disabled`) is ignored entirely, as in Longhorn, so it neither binds nor opts out of `default`.
//! The job name `source` is reserved: `recurring-job.bulwark.io/source` is the PVC source label.

use std::collections::{BTreeMap, BTreeSet};

/// Label key prefix binding a volume to one job.
pub const JOB_LABEL_PREFIX: &str = "recurring-job.bulwark.io/";
/// Label key prefix binding a volume to a group of jobs.
pub const GROUP_LABEL_PREFIX: &str = "recurring-job-group.bulwark.io/";
/// PVC label that makes the PVC the source of its volume's job labels.
pub const SOURCE_LABEL: &str = "recurring-job.bulwark.io/source";
/// The value every binding label (and the source label) must have.
pub const ENABLED: &str = "enabled";
/// The group of volumes without any binding label.
pub const DEFAULT_GROUP: &str = "default";

/// Label key binding a volume to `job`.
pub fn job_label_key(job: &str) -> String {
    format!("{JOB_LABEL_PREFIX}{job}")
}

/// Label key binding a volume to `group`.
pub fn group_label_key(group: &str) -> String {
    format!("{GROUP_LABEL_PREFIX}{group}")
}

/// What the operator knows about a volume (no Kubernetes types).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeFacts {
    pub labels: BTreeMap<String, String>,
    pub attached: bool,
    /// A DR volume (`standby: true`).
    pub standby: bool,
    /// Being restored from a backup.
    pub restoring: bool,
}

/// The jobs and groups a volume is bound to by its labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bindings {
    pub jobs: BTreeSet<String>,
    /// Contains `default` when the volume has no binding label at all.
    pub groups: BTreeSet<String>,
}

/// Reads a volume's bindings from its labels.
pub fn bindings(labels: &BTreeMap<String, String>) -> Bindings {
    let mut found = Bindings::default();
    for (key, value) in labels {
        if value != ENABLED {
            continue;
        }
        if let Some(job) = key
            .strip_prefix(JOB_LABEL_PREFIX)
            .filter(|job| !job.is_empty() && *job != "source")
        {
            found.jobs.insert(job.to_string());
        } else if let Some(group) = key
            .strip_prefix(GROUP_LABEL_PREFIX)
            .filter(|group| !group.is_empty())
        {
            found.groups.insert(group.to_string());
        }
    }
    if found.jobs.is_empty() && found.groups.is_empty() {
        found.groups.insert(DEFAULT_GROUP.to_string());
    }
    found
}

/// Why a bound volume is left out of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusion {
    /// DR volumes cannot be snapshotted or backed up.
    Standby,
    /// A restore is writing the volume.
    Restoring,
    /// Detached, and the setting `allow-recurring-job-while-volume-detached` is off.
    Detached,
}

/// Whether a job runs on a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applicability {
    Applies,
    /// No label binds the volume to the job or one of its groups.
    NotBound,
    /// Bound, but excluded for now.
    Excluded(Exclusion),
}

/// Decides whether job `job_name` (member of `job_groups`) runs on `volume`.
pub fn job_applies(
    job_name: &str,
    job_groups: &[String],
    volume: &VolumeFacts,
    allow_detached: bool,
) -> Applicability {
    let bound = bindings(&volume.labels);
    let is_bound = bound.jobs.contains(job_name)
        || job_groups.iter().any(|group| bound.groups.contains(group));
    if !is_bound {
        Applicability::NotBound
    } else if volume.standby {
        Applicability::Excluded(Exclusion::Standby)
    } else if volume.restoring {
        Applicability::Excluded(Exclusion::Restoring)
    } else if !volume.attached && !allow_detached {
        Applicability::Excluded(Exclusion::Detached)
    } else {
        Applicability::Applies
    }
}

/// Label changes to apply to a volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelChanges {
    pub set: BTreeMap<String, String>,
    pub remove: BTreeSet<String>,
}

impl LabelChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

fn is_binding_key(key: &str) -> bool {
    (key.starts_with(JOB_LABEL_PREFIX) && key != SOURCE_LABEL)
        || key.starts_with(GROUP_LABEL_PREFIX)
}

/// PVC → volume propagation. When the PVC carries `recurring-job.bulwark.io/source: enabled`, the
/// volume's binding labels become exactly the PVC's (added, changed and removed); other labels
/// are untouched and the source label itself is not copied. Without it nothing changes.
pub fn propagate_pvc_labels(
    pvc_labels: &BTreeMap<String, String>,
    volume_labels: &BTreeMap<String, String>,
) -> LabelChanges {
    let mut changes = LabelChanges::default();
    if pvc_labels.get(SOURCE_LABEL).map(String::as_str) != Some(ENABLED) {
        return changes;
    }
    for (key, value) in pvc_labels.iter().filter(|(key, _)| is_binding_key(key)) {
        if volume_labels.get(key) != Some(value) {
            changes.set.insert(key.clone(), value.clone());
        }
    }
    for key in volume_labels.keys().filter(|key| is_binding_key(key)) {
        if !pvc_labels.contains_key(key) {
            changes.remove.insert(key.clone());
        }
    }
    changes
}

/// Applies `changes` to a label map (what the operator's patch will do).
pub fn apply_label_changes(
    labels: &BTreeMap<String, String>,
    changes: &LabelChanges,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for key in &changes.remove {
        out.remove(key);
    }
    out.extend(changes.set.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn volume(pairs: &[(&str, &str)]) -> VolumeFacts {
        VolumeFacts {
            labels: labels(pairs),
            attached: true,
            standby: false,
            restoring: false,
        }
    }

    #[test]
    fn bindings_and_the_default_group() {
        let unlabelled = bindings(&labels(&[("app", "db")]));
        assert_eq!(unlabelled.groups, BTreeSet::from(["default".to_string()]));
        assert!(unlabelled.jobs.is_empty());

        let bound = bindings(&labels(&[
            ("recurring-job.bulwark.io/nightly", "enabled"),
            ("recurring-job-group.bulwark.io/gold", "enabled"),
            ("recurring-job.bulwark.io/off", "disabled"),
        ]));
        assert_eq!(bound.jobs, BTreeSet::from(["nightly".to_string()]));
        assert_eq!(bound.groups, BTreeSet::from(["gold".to_string()]));

        // Only `disabled` labels: still in `default`.
        let disabled = bindings(&labels(&[("recurring-job.bulwark.io/off", "disabled")]));
        assert!(disabled.groups.contains("default"));
    }

    #[test]
    fn applicability_and_exclusions() {
        let groups = vec!["default".to_string()];
        assert_eq!(
            job_applies("hourly", &groups, &volume(&[]), false),
            Applicability::Applies
        );
        let gold = volume(&[("recurring-job-group.bulwark.io/gold", "enabled")]);
        assert_eq!(
            job_applies("hourly", &groups, &gold, false),
            Applicability::NotBound
        );
        assert_eq!(
            job_applies("hourly", &["gold".to_string()], &gold, false),
            Applicability::Applies
        );
        let direct = volume(&[("recurring-job.bulwark.io/hourly", "enabled")]);
        assert_eq!(
            job_applies("hourly", &[], &direct, false),
            Applicability::Applies
        );

        let mut standby = volume(&[]);
        standby.standby = true;
        standby.restoring = true;
        assert_eq!(
            job_applies("hourly", &groups, &standby, true),
            Applicability::Excluded(Exclusion::Standby)
        );
        let mut restoring = volume(&[]);
        restoring.restoring = true;
        assert_eq!(
            job_applies("hourly", &groups, &restoring, true),
            Applicability::Excluded(Exclusion::Restoring)
        );
        let mut detached = volume(&[]);
        detached.attached = false;
        assert_eq!(
            job_applies("hourly", &groups, &detached, false),
            Applicability::Excluded(Exclusion::Detached)
        );
        assert_eq!(
            job_applies("hourly", &groups, &detached, true),
            Applicability::Applies
        );
    }

    #[test]
    fn pvc_propagation() {
        let volume_labels = labels(&[
            ("recurring-job.bulwark.io/old", "enabled"),
            ("recurring-job-group.bulwark.io/gold", "disabled"),
            ("longhornvolume", "pvc-1"),
        ]);
        let pvc_without_source = labels(&[("recurring-job.bulwark.io/new", "enabled")]);
        assert!(propagate_pvc_labels(&pvc_without_source, &volume_labels).is_empty());

        let pvc = labels(&[
            ("recurring-job.bulwark.io/source", "enabled"),
            ("recurring-job.bulwark.io/new", "enabled"),
            ("recurring-job-group.bulwark.io/gold", "enabled"),
            ("app", "db"),
        ]);
        let changes = propagate_pvc_labels(&pvc, &volume_labels);
        assert_eq!(
            changes.set,
            labels(&[
                ("recurring-job.bulwark.io/new", "enabled"),
                ("recurring-job-group.bulwark.io/gold", "enabled")
            ])
        );
        assert_eq!(
            changes.remove,
            BTreeSet::from(["recurring-job.bulwark.io/old".to_string()])
        );
        let result = apply_label_changes(&volume_labels, &changes);
        assert_eq!(
            result,
            labels(&[
                ("recurring-job.bulwark.io/new", "enabled"),
                ("recurring-job-group.bulwark.io/gold", "enabled"),
                ("longhornvolume", "pvc-1"),
            ])
        );
        // Idempotent: once applied, nothing left to change.
        assert!(propagate_pvc_labels(&pvc, &result).is_empty());
    }
}
