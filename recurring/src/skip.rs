//! Skip-if-unchanged: whether a `snapshot` or `backup` run creates an artifact.
//!
//! Our rule (SEMANTICS.md): `snapshot` and `backup` skip unchanged volumes, the `*-force-create`
//! tasks never skip, `min-changed-bytes` treats tiny changes (a mounted filesystem dirties a few
//! KiB per snapshot) as unchanged, and `force-after` takes an artifact anyway once the newest one
//! is that old. A skip consumes no retention slot and is always reported with its reason.

use std::collections::BTreeMap;

use jiff::SignedDuration;

use crate::duration::{DurationError, parse_go_duration};
use crate::quantity::{QuantityError, parse_byte_quantity};
use crate::task::Task;

/// Job parameter names.
pub const MIN_CHANGED_BYTES: &str = "min-changed-bytes";
pub const FORCE_AFTER: &str = "force-after";

/// What the operator knows about the volume when a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeFacts {
    /// Bytes written since the job's newest artifact (for a backup: since the snapshot the last
    /// backup was taken from). `None` when the engine cannot tell.
    pub changed_bytes: Option<u64>,
    /// Age of the job's newest successful artifact; `None` when it has none.
    pub newest_artifact_age: Option<SignedDuration>,
    /// Backups only: the newest snapshot has already been backed up. When it has not, a backup
    /// has data to carry even if the volume head is clean.
    pub newest_snapshot_backed_up: bool,
}

/// The job's skip parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SkipParams {
    /// Changes below this many bytes count as unchanged (default 0: any change runs).
    pub min_changed_bytes: u64,
    /// Take an artifact anyway when the newest is at least this old.
    pub force_after: Option<SignedDuration>,
}

/// Why a job parameter was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterError {
    #[error("parameter `min-changed-bytes`: {0}")]
    MinChangedBytes(#[source] QuantityError),
    #[error("parameter `force-after`: {0}")]
    ForceAfter(#[source] DurationError),
    #[error("parameter `force-after` is `{0}`; it must be longer than 0 (e.g. `24h`)")]
    ForceAfterNotPositive(String),
}

impl SkipParams {
    /// Reads `min-changed-bytes` and `force-after` from a job's `parameters`; other keys are the
    /// business of other parts (e.g. `full-backup-interval`).
    pub fn from_parameters(
        parameters: &BTreeMap<String, String>,
    ) -> Result<SkipParams, ParameterError> {
        let min_changed_bytes = match parameters.get(MIN_CHANGED_BYTES) {
            Some(text) => {
                parse_byte_quantity(text.trim()).map_err(ParameterError::MinChangedBytes)?
            }
            None => 0,
        };
        let force_after = match parameters.get(FORCE_AFTER) {
            Some(text) => {
                let duration =
                    parse_go_duration(text.trim()).map_err(ParameterError::ForceAfter)?;
                if duration <= SignedDuration::ZERO {
                    return Err(ParameterError::ForceAfterNotPositive(text.clone()));
                }
                Some(duration)
            }
            None => None,
        };
        Ok(SkipParams {
            min_changed_bytes,
            force_after,
        })
    }
}

/// Why a run creates an artifact (or runs at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunReason {
    /// `snapshot-force-create` / `backup-force-create`.
    ForceCreate,
    /// The job has no artifact yet.
    FirstArtifact,
    /// The newest artifact is at least `force-after` old.
    ForceAfterElapsed,
    /// At least `min-changed-bytes` (and more than 0) bytes changed.
    Changed,
    /// The engine could not say what changed: run rather than risk a missing artifact.
    ChangeUnknown,
    /// Backup: the newest snapshot is not backed up yet.
    NewestSnapshotNotBackedUp,
    /// The task creates nothing, so skip-if-unchanged does not apply (cleanup, delete, trim, ...).
    NotApplicable,
}

/// Why a run creates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Not a single byte changed.
    Unchanged,
    /// Some bytes changed, fewer than `min-changed-bytes`.
    BelowThreshold,
}

impl SkipReason {
    /// Stable CamelCase name for status fields, Events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Unchanged => "Unchanged",
            SkipReason::BelowThreshold => "BelowThreshold",
        }
    }
}

impl RunReason {
    /// Stable CamelCase name for status fields, Events and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RunReason::ForceCreate => "ForceCreate",
            RunReason::FirstArtifact => "FirstArtifact",
            RunReason::ForceAfterElapsed => "ForceAfterElapsed",
            RunReason::Changed => "Changed",
            RunReason::ChangeUnknown => "ChangeUnknown",
            RunReason::NewestSnapshotNotBackedUp => "NewestSnapshotNotBackedUp",
            RunReason::NotApplicable => "NotApplicable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipDecision {
    Run(RunReason),
    Skip(SkipReason),
}

/// Decides whether this run of `task` creates an artifact. Checks in order: task kind, first
/// artifact, `force-after`, unknown change, backup freshness, then bytes changed.
pub fn decide_skip(task: Task, facts: &ChangeFacts, params: &SkipParams) -> SkipDecision {
    match task {
        Task::SnapshotForceCreate | Task::BackupForceCreate => {
            return SkipDecision::Run(RunReason::ForceCreate);
        }
        Task::Snapshot | Task::Backup => {}
        Task::SnapshotCleanup
        | Task::SnapshotDelete
        | Task::FilesystemTrim
        | Task::SystemBackup => {
            return SkipDecision::Run(RunReason::NotApplicable);
        }
    }
    let Some(age) = facts.newest_artifact_age else {
        return SkipDecision::Run(RunReason::FirstArtifact);
    };
    if params
        .force_after
        .is_some_and(|force_after| age >= force_after)
    {
        return SkipDecision::Run(RunReason::ForceAfterElapsed);
    }
    let Some(changed) = facts.changed_bytes else {
        return SkipDecision::Run(RunReason::ChangeUnknown);
    };
    if task == Task::Backup && !facts.newest_snapshot_backed_up {
        return SkipDecision::Run(RunReason::NewestSnapshotNotBackedUp);
    }
    if changed == 0 {
        SkipDecision::Skip(SkipReason::Unchanged)
    } else if changed < params.min_changed_bytes {
        SkipDecision::Skip(SkipReason::BelowThreshold)
    } else {
        SkipDecision::Run(RunReason::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    fn facts(changed: Option<u64>, age: Option<SignedDuration>, backed_up: bool) -> ChangeFacts {
        ChangeFacts {
            changed_bytes: changed,
            newest_artifact_age: age,
            newest_snapshot_backed_up: backed_up,
        }
    }

    #[test]
    fn decision_table() {
        let none = SkipParams::default();
        let threshold = SkipParams {
            min_changed_bytes: 4096,
            force_after: Some(HOUR * 24),
        };
        use RunReason::*;
        use SkipDecision::{Run, Skip};
        use SkipReason::*;
        let table = [
            (
                Task::SnapshotForceCreate,
                facts(Some(0), Some(HOUR), true),
                none,
                Run(ForceCreate),
            ),
            (
                Task::BackupForceCreate,
                facts(Some(0), Some(HOUR), true),
                none,
                Run(ForceCreate),
            ),
            (
                Task::SnapshotCleanup,
                facts(Some(0), Some(HOUR), true),
                none,
                Run(NotApplicable),
            ),
            (
                Task::SnapshotDelete,
                facts(Some(0), Some(HOUR), true),
                none,
                Run(NotApplicable),
            ),
            (
                Task::Snapshot,
                facts(Some(0), None, true),
                none,
                Run(FirstArtifact),
            ),
            (
                Task::Snapshot,
                facts(Some(0), Some(HOUR), true),
                none,
                Skip(Unchanged),
            ),
            (
                Task::Snapshot,
                facts(Some(1), Some(HOUR), true),
                none,
                Run(Changed),
            ),
            (
                Task::Snapshot,
                facts(None, Some(HOUR), true),
                none,
                Run(ChangeUnknown),
            ),
            (
                Task::Snapshot,
                facts(Some(0), Some(HOUR), true),
                threshold,
                Skip(Unchanged),
            ),
            (
                Task::Snapshot,
                facts(Some(4095), Some(HOUR), true),
                threshold,
                Skip(BelowThreshold),
            ),
            (
                Task::Snapshot,
                facts(Some(4096), Some(HOUR), true),
                threshold,
                Run(Changed),
            ),
            (
                Task::Snapshot,
                facts(Some(0), Some(HOUR * 24), true),
                threshold,
                Run(ForceAfterElapsed),
            ),
            (
                Task::Snapshot,
                facts(Some(0), Some(HOUR * 23), true),
                threshold,
                Skip(Unchanged),
            ),
            (
                Task::Backup,
                facts(Some(0), Some(HOUR), true),
                none,
                Skip(Unchanged),
            ),
            (
                Task::Backup,
                facts(Some(0), Some(HOUR), false),
                none,
                Run(NewestSnapshotNotBackedUp),
            ),
            (
                Task::Backup,
                facts(Some(10), Some(HOUR), true),
                threshold,
                Skip(BelowThreshold),
            ),
            (
                Task::Backup,
                facts(Some(1 << 20), Some(HOUR), true),
                threshold,
                Run(Changed),
            ),
        ];
        for (task, facts, params, expected) in table {
            assert_eq!(
                decide_skip(task, &facts, &params),
                expected,
                "{task} {facts:?} {params:?}"
            );
        }
    }

    #[test]
    fn parameters_parse_and_name_the_bad_one() {
        let mut parameters = BTreeMap::new();
        assert_eq!(
            SkipParams::from_parameters(&parameters),
            Ok(SkipParams::default())
        );
        parameters.insert(MIN_CHANGED_BYTES.to_string(), "64Ki".to_string());
        parameters.insert(FORCE_AFTER.to_string(), "24h".to_string());
        parameters.insert("full-backup-interval".to_string(), "5".to_string());
        assert_eq!(
            SkipParams::from_parameters(&parameters),
            Ok(SkipParams {
                min_changed_bytes: 65536,
                force_after: Some(HOUR * 24)
            })
        );
        parameters.insert(FORCE_AFTER.to_string(), "1d".to_string());
        let error = SkipParams::from_parameters(&parameters).unwrap_err();
        assert!(matches!(error, ParameterError::ForceAfter(_)));
        assert!(error.to_string().starts_with("parameter `force-after`"));
        parameters.insert(FORCE_AFTER.to_string(), "0s".to_string());
        assert!(matches!(
            SkipParams::from_parameters(&parameters),
            Err(ParameterError::ForceAfterNotPositive(_))
        ));
        parameters.insert(FORCE_AFTER.to_string(), "1h".to_string());
        parameters.insert(MIN_CHANGED_BYTES.to_string(), "4KB".to_string());
        let error = SkipParams::from_parameters(&parameters).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("parameter `min-changed-bytes`")
        );
    }

    proptest::proptest! {
        #[test]
        fn force_create_never_skips_and_threshold_is_monotone(
            changed in proptest::option::of(0u64..10_000),
            age_secs in proptest::option::of(0i64..200_000),
            backed_up: bool,
            min in 0u64..10_000,
        ) {
            let facts = facts(changed, age_secs.map(SignedDuration::from_secs), backed_up);
            let params = SkipParams { min_changed_bytes: min, force_after: None };
            for task in [Task::SnapshotForceCreate, Task::BackupForceCreate] {
                proptest::prop_assert_eq!(decide_skip(task, &facts, &params), SkipDecision::Run(RunReason::ForceCreate));
            }
            // Raising the threshold never turns a skip into a run.
            let higher = SkipParams { min_changed_bytes: min + 1, force_after: None };
            for task in [Task::Snapshot, Task::Backup] {
                if matches!(decide_skip(task, &facts, &params), SkipDecision::Skip(_)) {
                    proptest::prop_assert!(matches!(decide_skip(task, &facts, &higher), SkipDecision::Skip(_)));
                }
            }
        }
    }
}
