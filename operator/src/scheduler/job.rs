//! Pure parts of scheduling one RecurringJob: spec → validated job, whether the persisted
//! watermark still belongs to the current schedule, status conditions with the scheduler's clock,
//! and the summary of a finished run.

use std::collections::BTreeMap;

use crd_types::RecurringJob;
use crd_types::common::Condition;
use crd_types::recurring_job::{RecurringJobStatus, RecurringTask, RunResult, RunVolumeCounts};
use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use recurring::{JobSpecInput, Task, ValidatedJob};

/// Job parameter: every Nth backup of a volume is a full backup (0 or absent: never).
pub const FULL_BACKUP_INTERVAL: &str = "full-backup-interval";

/// Condition types the scheduler owns on a RecurringJob.
pub const VALID: &str = "Valid";
pub const RUNNING: &str = "Running";

/// The one conversion between the CRD's task and the pure crate's (they are duplicates).
pub fn task(task: RecurringTask) -> Task {
    match task {
        RecurringTask::Snapshot => Task::Snapshot,
        RecurringTask::SnapshotForceCreate => Task::SnapshotForceCreate,
        RecurringTask::SnapshotCleanup => Task::SnapshotCleanup,
        RecurringTask::SnapshotDelete => Task::SnapshotDelete,
        RecurringTask::Backup => Task::Backup,
        RecurringTask::BackupForceCreate => Task::BackupForceCreate,
    }
}

/// A job whose spec passed every check.
#[derive(Debug, Clone)]
pub struct Spec {
    pub job: ValidatedJob,
    /// `full-backup-interval`; 0 = never force a full backup.
    pub full_backup_interval: u64,
    pub suspend: bool,
}

/// Validates a RecurringJob in code (objects created before a CEL rule existed pass here too).
/// The error message starts with the field path.
pub fn validate(job: &RecurringJob) -> Result<Spec, String> {
    let spec = &job.spec;
    let input = JobSpecInput {
        name: job.name_any(),
        task: task(spec.task).as_str().to_owned(),
        cron: spec.cron.clone(),
        time_zone: Some(spec.time_zone.clone()),
        retain: i64::from(spec.retain),
        retain_age: spec.retain_age.clone(),
        concurrency: Some(i64::from(spec.concurrency)),
        groups: spec.groups.iter().map(|g| g.0.clone()).collect(),
        labels: spec.labels.clone(),
        parameters: spec.parameters.clone(),
    };
    if let Some(name) = spec.name.as_deref().filter(|n| *n != input.name) {
        return Err(format!(
            "spec.name `{name}` differs from metadata.name `{}`: remove spec.name or make it equal",
            input.name
        ));
    }
    let validated = recurring::validate_job(&input).map_err(|e| e.to_string())?;
    let full_backup_interval = match spec.parameters.get(FULL_BACKUP_INTERVAL) {
        None => 0,
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            format!(
                "spec.parameters: parameter `{FULL_BACKUP_INTERVAL}` is `{text}`; it must be a whole number (e.g. `5`: every 5th backup is full; `0`: never)"
            )
        })?,
    };
    Ok(Spec {
        job: validated,
        full_backup_interval,
        suspend: spec.suspend,
    })
}

/// The persisted watermark to hand to `decide_run`: `None` when the spec changed since it was
/// written (`observedGeneration` differs) AND it does not fit the current schedule, i.e. it is
/// not one of its slots, or it lies in the future but is not the very next slot (a stale
/// watermark of an edited `cron`/`timeZone` would otherwise delay the new schedule). Without a
/// spec change it is kept as is, so a clock jumping back never repeats a slot.
pub fn watermark(job: &RecurringJob, spec: &Spec, now: Timestamp) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    let recorded = status.next_run_at.as_ref()?.0;
    if status.observed_generation.is_some() && status.observed_generation == job.metadata.generation
    {
        return Some(recorded);
    }
    let schedule = &spec.job.schedule;
    let zone = &spec.job.time_zone;
    let is_slot =
        schedule.next_after(recorded - SignedDuration::from_nanos(1), zone) == Some(recorded);
    let is_next = recorded <= now || schedule.next_after(now, zone) == Some(recorded);
    (is_slot && is_next).then_some(recorded)
}

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` while the status holds
/// (times come from the scheduler's clock, so tests can assert exact status bodies).
pub fn set_condition(
    conditions: &mut Option<Vec<Condition>>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let list = conditions.get_or_insert_with(Vec::new);
    let condition = crate::status::condition_at(
        Some(list),
        type_,
        ok,
        reason,
        message,
        observed_generation,
        now,
    );
    let position = list.iter().position(|c| c.type_ == type_);
    match position {
        Some(i) => list[i] = condition,
        None => list.push(condition),
    }
}

/// Whether the job's status says a run was started and not finished (the `Running` condition):
/// the slot it was for, to be resumed.
pub fn unfinished_run(status: Option<&RecurringJobStatus>) -> Option<Timestamp> {
    let status = status?;
    let running = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == RUNNING && c.status == "True");
    running.then(|| status.last_run_slot.as_ref().map(|t| t.0))?
}

/// The per-volume outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeOutcome {
    Succeeded,
    Failed(String),
    /// Skipped, with the reason's CamelCase name (`Unchanged`, `BelowThreshold`, `Standby`, ...).
    Skipped(String),
}

/// Counts per-volume outcomes.
pub fn count(outcomes: &[(String, VolumeOutcome)]) -> RunVolumeCounts {
    let mut counts = RunVolumeCounts::default();
    let mut by_reason: BTreeMap<String, i32> = BTreeMap::new();
    for (_, outcome) in outcomes {
        match outcome {
            VolumeOutcome::Succeeded => counts.succeeded += 1,
            VolumeOutcome::Failed(_) => counts.failed += 1,
            VolumeOutcome::Skipped(reason) => {
                counts.skipped += 1;
                *by_reason.entry(reason.clone()).or_default() += 1;
            }
        }
    }
    counts.skipped_by_reason = by_reason;
    counts
}

/// A run's result: any failure with any success is `PartiallyFailed`; failures only `Failed`;
/// successes without failures `Succeeded`; nothing done at all (every volume skipped, or none
/// selected) `Skipped`.
pub fn result(counts: &RunVolumeCounts, run_error: bool) -> RunResult {
    match (counts.succeeded > 0, counts.failed > 0 || run_error) {
        (true, true) => RunResult::PartiallyFailed,
        (false, true) => RunResult::Failed,
        (true, false) => RunResult::Succeeded,
        (false, false) => RunResult::Skipped,
    }
}

pub fn result_str(result: RunResult) -> &'static str {
    match result {
        RunResult::Succeeded => "Succeeded",
        RunResult::PartiallyFailed => "PartiallyFailed",
        RunResult::Failed => "Failed",
        RunResult::Skipped => "Skipped",
    }
}

/// RFC 3339 in UTC, second precision, as the API server writes times.
pub fn rfc3339(at: Timestamp) -> String {
    at.round(jiff::Unit::Second).unwrap_or(at).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    fn job(cron: &str, generation: i64, observed: Option<i64>, next: &str) -> RecurringJob {
        let mut job: RecurringJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
            "metadata": {"name": "nightly", "generation": generation},
            "spec": {"task": "snapshot", "cron": cron, "retain": 1},
        }))
        .unwrap();
        job.status = Some(RecurringJobStatus {
            next_run_at: Some(crd_types::common::Time(next.parse().unwrap())),
            observed_generation: observed,
            ..Default::default()
        });
        job
    }

    #[test]
    fn watermark_of_an_edited_schedule_is_dropped_only_when_it_does_not_fit() {
        let now: Timestamp = "2024-01-01T10:20:00Z".parse().unwrap();
        // Unchanged spec: kept as is, even far in the future (clock jumped back).
        let kept = job("0 2 * * *", 1, Some(1), "2024-01-05T02:00:00Z");
        let spec = validate(&kept).unwrap();
        assert!(watermark(&kept, &spec, now).is_some());
        // Edited from daily to hourly: tomorrow 02:00 is an hourly slot but not the next one.
        let edited = job("0 * * * *", 2, Some(1), "2024-01-02T02:00:00Z");
        let spec = validate(&edited).unwrap();
        assert_eq!(watermark(&edited, &spec, now), None);
        // Edited, and the watermark is the next slot of the new schedule too: kept.
        let fits = job("0 * * * *", 2, Some(1), "2024-01-01T11:00:00Z");
        assert!(watermark(&fits, &spec, now).is_some());
        // Edited while the operator was down: a past watermark that is no slot is dropped.
        let past = job("0 * * * *", 2, Some(1), "2024-01-01T09:30:00Z");
        assert_eq!(watermark(&past, &spec, now), None);
    }

    #[test]
    fn results() {
        let counts = |succeeded, failed, skipped| RunVolumeCounts {
            succeeded,
            failed,
            skipped,
            skipped_by_reason: BTreeMap::new(),
        };
        assert_eq!(result(&counts(1, 1, 0), false), RunResult::PartiallyFailed);
        assert_eq!(result(&counts(0, 1, 3), false), RunResult::Failed);
        assert_eq!(result(&counts(2, 0, 3), false), RunResult::Succeeded);
        assert_eq!(result(&counts(0, 0, 3), false), RunResult::Skipped);
        assert_eq!(result(&counts(0, 0, 0), true), RunResult::Failed);
    }

    #[test]
    fn every_crd_task_converts() {
        for (crd, name) in [
            (RecurringTask::Snapshot, "snapshot"),
            (RecurringTask::SnapshotForceCreate, "snapshot-force-create"),
            (RecurringTask::SnapshotCleanup, "snapshot-cleanup"),
            (RecurringTask::SnapshotDelete, "snapshot-delete"),
            (RecurringTask::Backup, "backup"),
            (RecurringTask::BackupForceCreate, "backup-force-create"),
        ] {
            assert_eq!(task(crd).as_str(), name);
            assert_eq!(serde_json::to_value(crd).unwrap(), name);
        }
    }
}
