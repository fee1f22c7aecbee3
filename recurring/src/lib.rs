//! Pure decisions for Bulwark's recurring snapshot and backup jobs: cron schedules in IANA time
//! zones, missed-run handling, which volumes a job applies to, skip-if-unchanged, retention,
//! artifact names and the StorageClass parameters that create jobs.
//! It must never do I/O, read the clock, spawn tasks or know Kubernetes types: time, randomness
//! and facts come in as parameters, so every decision is reproducible in a test.

pub mod duration;
pub mod job;
pub mod missed;
pub mod naming;
pub mod quantity;
pub mod retention;
pub mod schedule;
pub mod selection;
pub mod skip;
pub mod snapshot_tasks;
pub mod storage_class;
pub mod task;

pub use job::{JobError, JobSpecInput, ValidatedJob, validate_job};
pub use missed::{MissedSlots, RunDecision, decide_run};
pub use retention::{
    Artifact, ArtifactState, KeepReason, RetentionPlan, RetentionPolicy, plan_retention,
};
pub use schedule::{
    CronField, FieldProblem, Schedule, ScheduleError, TimeZoneError, resolve_time_zone,
};
pub use skip::{ChangeFacts, RunReason, SkipDecision, SkipParams, SkipReason, decide_skip};
pub use task::Task;
