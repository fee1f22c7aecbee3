//! The tasks a recurring job can perform (Longhorn's `task` field).

use std::fmt;
use std::str::FromStr;

/// A recurring job's task. The spelling is Longhorn's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Task {
    /// Take a snapshot; skipped when nothing changed (see [`crate::skip`]).
    Snapshot,
    /// Take a snapshot even when nothing changed.
    SnapshotForceCreate,
    /// Purge system-generated and removed-marked snapshots.
    SnapshotCleanup,
    /// Delete the volume's snapshots (of any origin) beyond `retain`, then purge.
    SnapshotDelete,
    /// Take a backup; skipped when nothing changed since the last backup.
    Backup,
    /// Take a backup even when nothing changed.
    BackupForceCreate,
    /// Trim the volume's filesystem (accepted, not yet carried out by the operator).
    FilesystemTrim,
    /// Back up the whole system (accepted, not yet carried out by the operator).
    SystemBackup,
}

impl Task {
    pub const ALL: [Task; 8] = [
        Task::Snapshot,
        Task::SnapshotForceCreate,
        Task::SnapshotCleanup,
        Task::SnapshotDelete,
        Task::Backup,
        Task::BackupForceCreate,
        Task::FilesystemTrim,
        Task::SystemBackup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Task::Snapshot => "snapshot",
            Task::SnapshotForceCreate => "snapshot-force-create",
            Task::SnapshotCleanup => "snapshot-cleanup",
            Task::SnapshotDelete => "snapshot-delete",
            Task::Backup => "backup",
            Task::BackupForceCreate => "backup-force-create",
            Task::FilesystemTrim => "filesystem-trim",
            Task::SystemBackup => "system-backup",
        }
    }

    /// What the task's runs create, if anything.
    pub fn creates(self) -> Option<ArtifactKind> {
        match self {
            Task::Snapshot | Task::SnapshotForceCreate => Some(ArtifactKind::Snapshot),
            Task::Backup | Task::BackupForceCreate => Some(ArtifactKind::Backup),
            Task::SnapshotCleanup
            | Task::SnapshotDelete
            | Task::FilesystemTrim
            | Task::SystemBackup => None,
        }
    }

    /// Whether `retain` means something for this task (it is required and counted for these).
    pub fn uses_retain(self) -> bool {
        self.creates().is_some() || self == Task::SnapshotDelete
    }
}

/// What a job run produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    Snapshot,
    Backup,
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task `{0}`; use one of snapshot, snapshot-force-create, snapshot-cleanup, snapshot-delete, backup, backup-force-create, filesystem-trim, system-backup"
)]
pub struct UnknownTask(pub String);

impl FromStr for Task {
    type Err = UnknownTask;

    fn from_str(text: &str) -> Result<Task, UnknownTask> {
        Task::ALL
            .into_iter()
            .find(|task| task.as_str() == text)
            .ok_or_else(|| UnknownTask(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_unknown_is_rejected() {
        for task in Task::ALL {
            assert_eq!(task.as_str().parse::<Task>(), Ok(task));
        }
        assert_eq!(
            "Snapshot".parse::<Task>(),
            Err(UnknownTask("Snapshot".to_string()))
        );
        assert_eq!(
            "backups".parse::<Task>(),
            Err(UnknownTask("backups".to_string()))
        );
    }
}
