//! Test hook: make a structural operation fail at a chosen point, as a crash there would. After
//! an injected failure the volume is poisoned; the test drops it and reopens the data directory,
//! which must show the chain before or after the operation.

/// Points inside structural operations where a test can inject a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// Snapshot: new head file created, metadata not yet switched.
    SnapshotBeforeCommit,
    /// Metadata write: the new file is written and synced but not yet renamed into place.
    MetadataBeforeRename,
    /// Delete snapshot: merge intent recorded, nothing copied yet.
    MergeAfterIntent,
    /// Delete snapshot: part of the sectors copied into the child.
    MergeMidCopy,
    /// Delete snapshot: all copied, metadata not yet switched.
    MergeBeforeCommit,
    /// Restore swap: staged layer complete and synced, metadata not yet switched.
    SwapBeforeCommit,
    /// Restore swap: the swap is committed, the fold of the staged layer has not started.
    SwapAfterCommit,
    /// Restore swap: part of the staged layer folded into the head.
    SwapMidFold,
    /// Revert: new head created, metadata not yet switched.
    RevertBeforeCommit,
}
