//! The agent's half of skip-if-unchanged (the scheduler's half is in `scheduler`): a Snapshot
//! or Backup a recurring job created with annotation `bulwark.io/skip-if-unchanged:
//! "<min-changed-bytes>"` is checked against the engine at the moment it would be taken, which
//! is the only moment the answer cannot be stale. When unchanged, nothing is created: the
//! object's `Ready` (Snapshot) or `Completed` (Backup) condition turns False with reason
//! `Skipped` and a message starting with the skip reason, and the scheduler deletes it.

use jiff::SignedDuration;
use recurring::{ChangeFacts, SkipDecision, SkipParams, SkipReason, Task, decide_skip};

pub use crate::scheduler::{SKIP_IF_UNCHANGED_ANNOTATION, SKIPPED_REASON};

/// The threshold the object asks to be skipped below, if it asks. An unreadable value means
/// "never skip": taking an artifact too many is safe, skipping one too many is not.
pub fn threshold(annotations: &std::collections::BTreeMap<String, String>) -> Option<u64> {
    annotations
        .get(SKIP_IF_UNCHANGED_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
}

/// Whether to skip, given the bytes written since the newest snapshot and (for backups)
/// whether that snapshot is already backed up.
pub fn decide(
    task: Task,
    changed: u64,
    newest_snapshot_backed_up: bool,
    min: u64,
) -> Option<SkipReason> {
    let facts = ChangeFacts {
        changed_bytes: Some(changed),
        // The scheduler already ruled out a first artifact and `force-after`.
        newest_artifact_age: Some(SignedDuration::ZERO),
        newest_snapshot_backed_up,
    };
    let params = SkipParams {
        min_changed_bytes: min,
        force_after: None,
    };
    match decide_skip(task, &facts, &params) {
        SkipDecision::Skip(reason) => Some(reason),
        SkipDecision::Run(_) => None,
    }
}

/// The condition message: the reason first (the scheduler reads it), then the facts.
pub fn message(reason: SkipReason, changed: u64, min: u64) -> String {
    format!(
        "{}: {changed} bytes written since the newest snapshot (min-changed-bytes {min}); nothing was created",
        reason.as_str()
    )
}

/// Whether the object was already skipped (a skip is final: later writes belong to the next run).
pub fn already_skipped(conditions: Option<&[crate::status::Condition]>, type_: &str) -> bool {
    crate::status::find(conditions, type_).is_some_and(|c| c.reason == SKIPPED_REASON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_skip_when_nothing_or_too_little_was_written() {
        assert_eq!(
            decide(Task::Snapshot, 0, true, 0),
            Some(SkipReason::Unchanged)
        );
        assert_eq!(decide(Task::Snapshot, 4096, true, 0), None);
        assert_eq!(
            decide(Task::Snapshot, 4096, true, 8192),
            Some(SkipReason::BelowThreshold)
        );
        assert_eq!(decide(Task::Snapshot, 8192, true, 8192), None);
    }

    #[test]
    fn backups_run_while_the_newest_snapshot_is_not_backed_up() {
        assert_eq!(
            decide(Task::Backup, 0, true, 0),
            Some(SkipReason::Unchanged)
        );
        assert_eq!(decide(Task::Backup, 0, false, 0), None);
    }

    /// `controllers::testing` checks each mocked request against the RBAC of the component
    /// whose test made it, known from the test thread's name.
    #[test]
    fn agent_tests_run_on_threads_named_after_them() {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        assert!(
            name.starts_with("agent::") || !name.contains("::"),
            "{name}"
        );
    }

    #[test]
    fn thresholds_and_messages() {
        let mut annotations = std::collections::BTreeMap::new();
        assert_eq!(threshold(&annotations), None);
        annotations.insert(SKIP_IF_UNCHANGED_ANNOTATION.to_owned(), "4096".to_owned());
        assert_eq!(threshold(&annotations), Some(4096));
        annotations.insert(SKIP_IF_UNCHANGED_ANNOTATION.to_owned(), "lots".to_owned());
        assert_eq!(threshold(&annotations), None, "unreadable: never skip");
        assert!(message(SkipReason::BelowThreshold, 10, 4096).starts_with("BelowThreshold:"));
    }
}
