//! RecurringJob: a snapshot or backup task run on a cron schedule for the volumes that select it.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Time, is_label_name, parse_go_duration};
use crate::validate::{Checker, Validate};

/// Parameters a RecurringJob understands.
pub const KNOWN_PARAMETERS: [&str; 3] =
    ["full-backup-interval", "min-changed-bytes", "force-after"];

pub mod rules {
    //! CEL rules of the RecurringJob schema and their messages; `validate()` checks the same.
    pub const NAME: &str = "self.metadata.name.size() <= 63 && (!has(self.spec.name) || self.spec.name == self.metadata.name)";
    pub const NAME_MSG: &str = "metadata.name must be at most 63 characters (it is part of the label key recurring-job.bulwark.io/<name>) and spec.name, when set, must equal it";
    pub const RETAIN: &str = "!(self.task in ['snapshot', 'snapshot-force-create', 'backup', 'backup-force-create']) || self.retain >= 1";
    pub const RETAIN_MSG: &str = "spec.retain must be at least 1 for snapshot and backup tasks: it is how many of the job's snapshots or backups are kept";
    pub const CRON: &str = "self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9][0-9a-zµ.]*|[^ @]+( +[^ ]+){4})$')";
    pub const CRON_MSG: &str = "spec.cron must be a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. '0 2 * * *') or one of @hourly, @daily, @weekly, @monthly, @yearly, @every <duration>";
    pub const TIME_ZONE: &str = "self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')";
    pub const TIME_ZONE_MSG: &str = "spec.timeZone must be an IANA time zone name such as UTC, Europe/Berlin or America/New_York";
    pub const RETAIN_AGE: &str = "self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')";
    pub const RETAIN_AGE_MSG: &str =
        "spec.retainAge must be a duration such as 72h or 720h (days are written in hours)";
    pub const GROUP: &str = "self.matches('^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$')";
    pub const GROUP_MSG: &str = "spec.groups entries must be label names (letters, digits, '-', '_', '.', at most 63 characters): they become recurring-job-group.bulwark.io/<group> labels";
    pub const PARAMETERS: &str =
        "self.all(k, k in ['full-backup-interval', 'min-changed-bytes', 'force-after'])";
    pub const PARAMETERS_MSG: &str = "spec.parameters accepts only full-backup-interval, min-changed-bytes and force-after: check the spelling";
    pub const CONCURRENCY_MSG: &str = "spec.concurrency must be at least 1";
    pub const RETAIN_NON_NEGATIVE_MSG: &str = "spec.retain must not be negative";
}

/// What a recurring job does on each run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecurringTask {
    /// Take a snapshot unless the volume is unchanged since the job's last one.
    Snapshot,
    /// Take a snapshot every time.
    SnapshotForceCreate,
    /// Delete system-created snapshots (`userCreated: false`) no backup needs.
    SnapshotCleanup,
    /// Delete the volume's snapshots beyond `retain`.
    SnapshotDelete,
    /// Take a backup unless nothing changed since the job's last one.
    Backup,
    /// Take a backup every time.
    BackupForceCreate,
}

impl RecurringTask {
    /// Tasks that create an artifact and so need `retain >= 1`.
    pub fn creates_artifacts(self) -> bool {
        matches!(
            self,
            RecurringTask::Snapshot
                | RecurringTask::SnapshotForceCreate
                | RecurringTask::Backup
                | RecurringTask::BackupForceCreate
        )
    }
}

/// A scheduled snapshot or backup task.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulwark.io",
    version = "v1beta1",
    kind = "RecurringJob",
    namespaced,
    status = "RecurringJobStatus",
    shortname = "bwrj",
    category = "bulwark",
    derive = "PartialEq",
    doc = "A snapshot or backup task run on a cron schedule for the Volumes that select it.",
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.task"),
    printcolumn(name = "Cron", type_ = "string", json_path = ".spec.cron"),
    printcolumn(name = "Time Zone", type_ = "string", json_path = ".spec.timeZone", priority = "1"),
    printcolumn(name = "Retain", type_ = "integer", json_path = ".spec.retain"),
    printcolumn(name = "Concurrency", type_ = "integer", json_path = ".spec.concurrency", priority = "1"),
    printcolumn(name = "Groups", type_ = "string", json_path = ".spec.groups", priority = "1"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    // The scheduler's `Valid` condition: `False` when the job is not scheduled (invalid cron or
    // time zone, a schedule that never fires again), `True` once it is; the reason says why.
    printcolumn(name = "Valid", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Valid\")].reason", priority = "1"),
    printcolumn(name = "Last Result", type_ = "string", json_path = ".status.lastResult"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRunAt"),
    printcolumn(name = "Next Run", type_ = "string", json_path = ".status.nextRunAt"),
    validation = Rule::new(rules::NAME).message(rules::NAME_MSG)
)]
#[x_kube(validation = Rule::new(rules::RETAIN).message(rules::RETAIN_MSG))]
#[serde(rename_all = "camelCase")]
pub struct RecurringJobSpec {
    /// Longhorn compatibility: the job's name; when set it must equal `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Groups the job belongs to; volumes select it by `recurring-job-group.bulwark.io/<group>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.all(g, {})", rules::GROUP.replacen("self", "g", 1))).message(rules::GROUP_MSG))]
    pub groups: Vec<GroupName>,
    pub task: RecurringTask,
    /// Standard 5-field cron, or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@every <duration>`.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(rules::CRON).message(rules::CRON_MSG))]
    pub cron: String,
    /// IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default = "default_time_zone")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(rules::TIME_ZONE).message(rules::TIME_ZONE_MSG))]
    pub time_zone: String,
    /// How many of the job's artifacts to keep.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub retain: i32,
    /// Also keep artifacts younger than this (Go duration, e.g. `168h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(rules::RETAIN_AGE).message(rules::RETAIN_AGE_MSG))]
    pub retain_age: Option<String>,
    /// Volumes processed at once in one run.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1))]
    pub concurrency: i32,
    /// Labels put on every artifact the job creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `full-backup-interval`, `min-changed-bytes`, `force-after`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::common::bounded_string_map")]
    #[x_kube(validation = Rule::new(rules::PARAMETERS).message(rules::PARAMETERS_MSG))]
    pub parameters: BTreeMap<String, String>,
    /// Stop starting new runs.
    #[serde(default)]
    pub suspend: bool,
}

/// A group name (bounded so the API server can price the CEL rule over the list).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct GroupName(#[schemars(length(max = 63))] pub String);

fn default_time_zone() -> String {
    "UTC".to_owned()
}

fn default_concurrency() -> i32 {
    10
}

/// Outcome of one run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunResult {
    Succeeded,
    PartiallyFailed,
    Failed,
    /// Every volume was skipped (unchanged, or none selected).
    Skipped,
}

/// What one run did per volume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunVolumeCounts {
    pub succeeded: i32,
    pub failed: i32,
    pub skipped: i32,
    /// Skipped volumes by reason (`Unchanged`, `BelowThreshold`, `Standby`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_by_reason: BTreeMap<String, i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecurringJobStatus {
    /// The next slot, written before waiting for it so a restart neither loses nor repeats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Time>,
    /// The slot the last run was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_slot: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<RunResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_volumes: Option<RunVolumeCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i32>,
    /// Merged by `type` under server-side apply, so the controller and the agent each own theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn is_cron_shape(s: &str) -> bool {
    const DESCRIPTORS: [&str; 7] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    if let Some(duration) = s.strip_prefix("@every ") {
        return duration.starts_with(|c: char| c.is_ascii_digit());
    }
    if s.starts_with('@') {
        return DESCRIPTORS.contains(&s);
    }
    !s.starts_with(' ') && !s.ends_with(' ') && s.split(' ').filter(|f| !f.is_empty()).count() == 5
}

fn is_time_zone_shape(s: &str) -> bool {
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-');
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.split('/')
            .all(|part| !part.is_empty() && part.chars().all(name_char))
}

impl Validate for RecurringJob {
    fn check(&self, c: &mut Checker) {
        let spec = &self.spec;
        let name = self.metadata.name.as_deref().unwrap_or_default();
        c.check(
            name.len() <= 63 && spec.name.as_deref().is_none_or(|n| n == name),
            "metadata.name",
            rules::NAME_MSG,
        );
        c.check(
            !spec.task.creates_artifacts() || spec.retain >= 1,
            "spec.retain",
            rules::RETAIN_MSG,
        );
        c.check(
            spec.retain >= 0,
            "spec.retain",
            rules::RETAIN_NON_NEGATIVE_MSG,
        );
        c.check(
            spec.concurrency >= 1,
            "spec.concurrency",
            rules::CONCURRENCY_MSG,
        );
        c.check(is_cron_shape(&spec.cron), "spec.cron", rules::CRON_MSG);
        c.check(
            is_time_zone_shape(&spec.time_zone),
            "spec.timeZone",
            rules::TIME_ZONE_MSG,
        );
        if let Some(age) = &spec.retain_age {
            c.check(
                age != "0" && parse_go_duration(age).is_some(),
                "spec.retainAge",
                rules::RETAIN_AGE_MSG,
            );
        }
        c.check(
            spec.groups.iter().all(|g| is_label_name(&g.0)),
            "spec.groups",
            rules::GROUP_MSG,
        );
        c.check(
            spec.parameters
                .keys()
                .all(|k| KNOWN_PARAMETERS.contains(&k.as_str())),
            "spec.parameters",
            rules::PARAMETERS_MSG,
        );
    }
}
