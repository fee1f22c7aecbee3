//! Which of a job's artifacts to delete: count (`retain`) and age (`retainAge`) rules plus the
//! safety rules that no setting can override.
//!
//! An artifact survives if ANY of these keeps it: it has no creation time (we cannot reason
//! about it), it is still being created, it is in use (a snapshot an unfinished backup reads, a
//! backup a standby volume restores from), it is pinned, it is the newest successful one, it is
//! among the newest `retain` successful ones, or it is younger than `retainAge`. Failed artifacts
//! take no count slot. Skipped runs create nothing and so take no slot either. The plan depends
//! only on the set of artifacts, never on their order.

use jiff::{SignedDuration, Timestamp};

/// How far a job run's artifact got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactState {
    Completed,
    InProgress,
    Failed,
}

/// One snapshot or backup labelled with the job's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact<Id> {
    pub id: Id,
    pub created_at: Option<Timestamp>,
    pub state: ArtifactState,
    /// Needed by something else right now (never deleted).
    pub in_use: bool,
    /// Pinned by the user (never deleted by retention).
    pub pinned: bool,
}

/// The job's retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the newest `retain` successful artifacts. Longhorn requires at least 1.
    pub retain: u32,
    /// Also keep every successful artifact younger than this.
    pub retain_age: Option<SignedDuration>,
}

/// Why an artifact survives; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeepReason {
    NoTimestamp,
    InProgress,
    InUse,
    Pinned,
    NewestSuccessful,
    WithinCount,
    WithinAge,
}

/// The outcome: every input artifact is in exactly one of the two lists, each sorted by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan<Id> {
    pub keep: Vec<(Id, KeepReason)>,
    pub delete: Vec<Id>,
}

/// Plans retention for one job's artifacts at time `now`. Ids should be unique; ties in creation
/// time are broken by id so the result never depends on input order.
pub fn plan_retention<Id: Ord + Clone>(
    policy: &RetentionPolicy,
    artifacts: &[Artifact<Id>],
    now: Timestamp,
) -> RetentionPlan<Id> {
    // Successful artifacts with a time, newest first.
    let mut successful: Vec<(&Timestamp, &Id)> = artifacts
        .iter()
        .filter(|a| a.state == ArtifactState::Completed)
        .filter_map(|a| a.created_at.as_ref().map(|at| (at, &a.id)))
        .collect();
    successful.sort_by(|a, b| b.cmp(a));
    let newest = successful.first().map(|(_, id)| *id);
    let within_count: Vec<&Id> = successful
        .iter()
        .take(policy.retain as usize)
        .map(|(_, id)| *id)
        .collect();

    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for artifact in artifacts {
        let reason = if artifact.created_at.is_none() {
            Some(KeepReason::NoTimestamp)
        } else if artifact.state == ArtifactState::InProgress {
            Some(KeepReason::InProgress)
        } else if artifact.in_use {
            Some(KeepReason::InUse)
        } else if artifact.pinned {
            Some(KeepReason::Pinned)
        } else if artifact.state != ArtifactState::Completed {
            None
        } else if newest == Some(&artifact.id) {
            Some(KeepReason::NewestSuccessful)
        } else if within_count.contains(&&artifact.id) {
            Some(KeepReason::WithinCount)
        } else if within_age(policy, artifact.created_at, now) {
            Some(KeepReason::WithinAge)
        } else {
            None
        };
        match reason {
            Some(reason) => keep.push((artifact.id.clone(), reason)),
            None => delete.push(artifact.id.clone()),
        }
    }
    keep.sort();
    delete.sort();
    RetentionPlan { keep, delete }
}

fn within_age(policy: &RetentionPolicy, created_at: Option<Timestamp>, now: Timestamp) -> bool {
    match (policy.retain_age, created_at) {
        // A creation time in the future (clock skew) has age < 0 and is kept.
        (Some(max_age), Some(created_at)) => created_at.duration_until(now) < max_age,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn done(id: u32, at: &str) -> Artifact<u32> {
        Artifact {
            id,
            created_at: Some(ts(at)),
            state: ArtifactState::Completed,
            in_use: false,
            pinned: false,
        }
    }

    #[test]
    fn count_and_age_rules() {
        let artifacts = vec![
            done(1, "2024-01-01T00:00:00Z"),
            done(2, "2024-01-02T00:00:00Z"),
            done(3, "2024-01-03T00:00:00Z"),
            done(4, "2024-01-04T00:00:00Z"),
            done(5, "2024-01-05T00:00:00Z"),
        ];
        let now = ts("2024-01-05T12:00:00Z");
        let count_only = RetentionPolicy {
            retain: 2,
            retain_age: None,
        };
        let plan = plan_retention(&count_only, &artifacts, now);
        assert_eq!(plan.delete, [1, 2, 3]);
        assert_eq!(
            plan.keep,
            [
                (4, KeepReason::WithinCount),
                (5, KeepReason::NewestSuccessful)
            ]
        );

        // Age 3 days keeps 3 (2.5 days old) as well; either rule suffices.
        let both = RetentionPolicy {
            retain: 2,
            retain_age: Some(SignedDuration::from_hours(72)),
        };
        let plan = plan_retention(&both, &artifacts, now);
        assert_eq!(plan.delete, [1, 2]);
        assert!(plan.keep.contains(&(3, KeepReason::WithinAge)));
    }

    #[test]
    fn safety_rules_override_count() {
        let mut artifacts = vec![
            done(1, "2024-01-01T00:00:00Z"),
            done(2, "2024-01-02T00:00:00Z"),
            done(3, "2024-01-03T00:00:00Z"),
        ];
        artifacts[0].in_use = true;
        artifacts[1].pinned = true;
        artifacts.push(Artifact {
            id: 4,
            created_at: None,
            state: ArtifactState::Completed,
            in_use: false,
            pinned: false,
        });
        artifacts.push(Artifact {
            id: 5,
            created_at: Some(ts("2024-01-04T00:00:00Z")),
            state: ArtifactState::Failed,
            in_use: false,
            pinned: false,
        });
        artifacts.push(Artifact {
            id: 6,
            created_at: Some(ts("2024-01-05T00:00:00Z")),
            state: ArtifactState::InProgress,
            in_use: false,
            pinned: false,
        });
        let policy = RetentionPolicy {
            retain: 1,
            retain_age: None,
        };
        let plan = plan_retention(&policy, &artifacts, ts("2024-02-01T00:00:00Z"));
        assert_eq!(plan.delete, [5]);
        assert_eq!(
            plan.keep,
            [
                (1, KeepReason::InUse),
                (2, KeepReason::Pinned),
                (3, KeepReason::NewestSuccessful),
                (4, KeepReason::NoTimestamp),
                (6, KeepReason::InProgress)
            ]
        );
    }
}
