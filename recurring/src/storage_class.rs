//! StorageClass parameters `recurringJobs` (Longhorn 1.1, a JSON list of jobs) and
//! `recurringJobSelector` (newer Longhorn, a JSON list of `{name, isGroup}`), parsed strictly:
//! every invalid entry is an error naming the parameter, the entry (index and name) and the
//! field; nothing is skipped.
//!
//! Decisions: a job name must be a DNS-1123 label of at most 63 characters (it becomes a
//! RecurringJob object name and the last part of a label key); Longhorn 1.1's limit of 8 is not
//! kept because snapshot names take only the first 8 characters anyway. `source` is reserved.
//! Unknown fields are rejected (a typo such as `retian` must not silently change a job).
//! Longhorn 1.1's limit of 50 for the sum of `retain` is kept.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::schedule::{Schedule, ScheduleError};
use crate::selection::{ENABLED, group_label_key, job_label_key};
use crate::task::{Task, UnknownTask};

/// StorageClass parameter names.
pub const RECURRING_JOBS: &str = "recurringJobs";
pub const RECURRING_JOB_SELECTOR: &str = "recurringJobSelector";

/// Longhorn 1.1: the `retain` values of one StorageClass may add up to at most this.
pub const MAX_TOTAL_RETAIN: u64 = 50;
/// Longest job or group name: the name part of a label key.
pub const MAX_NAME_LEN: usize = 63;

/// One entry of `recurringJobs`; becomes a RecurringJob named `name` plus the volume label that
/// binds the volume to it.
#[derive(Debug, Clone)]
pub struct LegacyRecurringJob {
    pub name: String,
    pub task: Task,
    pub cron: Schedule,
    pub retain: u32,
    pub labels: BTreeMap<String, String>,
}

impl LegacyRecurringJob {
    /// The volume label binding a volume of this StorageClass to the job.
    pub fn volume_label(&self) -> (String, String) {
        (job_label_key(&self.name), ENABLED.to_string())
    }
}

/// One entry of `recurringJobSelector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSelectorEntry {
    pub name: String,
    pub is_group: bool,
}

impl JobSelectorEntry {
    /// The volume label this entry becomes.
    pub fn volume_label(&self) -> (String, String) {
        let key = if self.is_group {
            group_label_key(&self.name)
        } else {
            job_label_key(&self.name)
        };
        (key, ENABLED.to_string())
    }
}

/// Which entry an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    pub index: usize,
    /// The entry's `name`, when it has a readable one.
    pub name: Option<String>,
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "entry {} (`{name}`)", self.index),
            None => write!(f, "entry {}", self.index),
        }
    }
}

/// What is wrong with one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("is not a JSON object; write {{\"name\": ..., ...}}")]
    NotAnObject,
    #[error("field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field `{field}` is not known; allowed fields are {allowed}")]
    UnknownField {
        field: String,
        allowed: &'static str,
    },
    #[error("field `task`: {0}")]
    Task(#[source] UnknownTask),
    #[error("field `cron`: {0}")]
    Cron(#[source] Box<ScheduleError>),
    #[error("field `retain` is {0}; it must be at least 1")]
    RetainTooSmall(i64),
    #[error("field `name` `{name}`: {reason}")]
    BadName { name: String, reason: NameProblem },
    #[error("field `name`: `{name}` is already used by entry {first_index}; names must be unique")]
    DuplicateName { name: String, first_index: usize },
    #[error("field `labels`: key `{key}`: {reason}")]
    BadLabelKey { key: String, reason: NameProblem },
    #[error("field `labels`: value `{value}` of key `{key}`: {reason}")]
    BadLabelValue {
        key: String,
        value: String,
        reason: NameProblem,
    },
}

/// Why a name, label key or label value is not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error(
        "may contain only lowercase letters, digits and `-`, and must start and end with a letter or digit"
    )]
    NotDnsLabel,
    #[error(
        "may contain only letters, digits, `-`, `_` and `.`, and must start and end with a letter or digit"
    )]
    NotLabelValue,
    #[error("is reserved (it is the PVC source label `recurring-job.bulwark.io/source`)")]
    Reserved,
}

/// Why a StorageClass parameter was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageClassError {
    #[error("StorageClass parameter `{parameter}` is not valid JSON: {message}")]
    BadJson {
        parameter: &'static str,
        message: String,
    },
    #[error("StorageClass parameter `{parameter}` must be a JSON list `[...]`")]
    NotAList { parameter: &'static str },
    #[error("StorageClass parameter `{parameter}` {entry}: {problem}")]
    Entry {
        parameter: &'static str,
        entry: EntryRef,
        problem: EntryProblem,
    },
    #[error(
        "StorageClass parameter `recurringJobs`: the `retain` values add up to {total}; at most {MAX_TOTAL_RETAIN} are allowed, lower some of them"
    )]
    TotalRetainTooLarge { total: u64 },
}

/// Parses `recurringJobs`.
pub fn parse_recurring_jobs(text: &str) -> Result<Vec<LegacyRecurringJob>, StorageClassError> {
    const PARAMETER: &str = RECURRING_JOBS;
    const ALLOWED: &str = "name, task, cron, retain, labels";
    let entries = parse_list(PARAMETER, text)?;
    let mut jobs: Vec<LegacyRecurringJob> = Vec::with_capacity(entries.len());
    let mut total_retain = 0u64;
    for (index, entry) in entries.iter().enumerate() {
        let fail = |problem| entry_error(PARAMETER, index, entry, problem);
        let object = entry
            .as_object()
            .ok_or_else(|| fail(EntryProblem::NotAnObject))?;
        reject_unknown_fields(
            object,
            &["name", "task", "cron", "retain", "labels"],
            ALLOWED,
        )
        .map_err(fail)?;
        let name = job_name(object).map_err(fail)?;
        if let Some(first_index) = jobs.iter().position(|job| job.name == name) {
            return Err(fail(EntryProblem::DuplicateName { name, first_index }));
        }
        let task_text = required_str(object, "task").map_err(fail)?;
        let task: Task = task_text.parse().map_err(|e| fail(EntryProblem::Task(e)))?;
        let cron = Schedule::parse(required_str(object, "cron").map_err(fail)?)
            .map_err(|e| fail(EntryProblem::Cron(Box::new(e))))?;
        let retain = match object.get("retain") {
            None => return Err(fail(EntryProblem::MissingField("retain"))),
            Some(value) => value.as_i64().ok_or_else(|| {
                fail(EntryProblem::WrongType {
                    field: "retain",
                    expected: "a whole number",
                })
            })?,
        };
        if retain < 1 {
            return Err(fail(EntryProblem::RetainTooSmall(retain)));
        }
        let retain = u32::try_from(retain).unwrap_or(u32::MAX);
        total_retain += u64::from(retain);
        let labels = labels(object).map_err(fail)?;
        jobs.push(LegacyRecurringJob {
            name,
            task,
            cron,
            retain,
            labels,
        });
    }
    if total_retain > MAX_TOTAL_RETAIN {
        return Err(StorageClassError::TotalRetainTooLarge {
            total: total_retain,
        });
    }
    Ok(jobs)
}

/// Parses `recurringJobSelector`.
pub fn parse_recurring_job_selector(
    text: &str,
) -> Result<Vec<JobSelectorEntry>, StorageClassError> {
    const PARAMETER: &str = RECURRING_JOB_SELECTOR;
    let entries = parse_list(PARAMETER, text)?;
    let mut selected: Vec<JobSelectorEntry> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let fail = |problem| entry_error(PARAMETER, index, entry, problem);
        let object = entry
            .as_object()
            .ok_or_else(|| fail(EntryProblem::NotAnObject))?;
        reject_unknown_fields(object, &["name", "isGroup"], "name, isGroup").map_err(fail)?;
        let is_group = match object.get("isGroup") {
            None => false,
            Some(value) => value.as_bool().ok_or_else(|| {
                fail(EntryProblem::WrongType {
                    field: "isGroup",
                    expected: "true or false",
                })
            })?,
        };
        let name = required_str(object, "name").map_err(fail)?.to_string();
        check_dns_label(&name).map_err(|reason| {
            fail(EntryProblem::BadName {
                name: name.clone(),
                reason,
            })
        })?;
        if !is_group && name == "source" {
            return Err(fail(EntryProblem::BadName {
                name,
                reason: NameProblem::Reserved,
            }));
        }
        if let Some(first_index) = selected
            .iter()
            .position(|s| s.name == name && s.is_group == is_group)
        {
            return Err(fail(EntryProblem::DuplicateName { name, first_index }));
        }
        selected.push(JobSelectorEntry { name, is_group });
    }
    Ok(selected)
}

/// An error about entry `index`, named by its `name` when it has a readable one.
fn entry_error(
    parameter: &'static str,
    index: usize,
    entry: &Value,
    problem: EntryProblem,
) -> StorageClassError {
    StorageClassError::Entry {
        parameter,
        entry: EntryRef {
            index,
            name: entry
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
        problem,
    }
}

fn parse_list(parameter: &'static str, text: &str) -> Result<Vec<Value>, StorageClassError> {
    let value: Value = serde_json::from_str(text).map_err(|error| StorageClassError::BadJson {
        parameter,
        message: error.to_string(),
    })?;
    match value {
        Value::Array(entries) => Ok(entries),
        _ => Err(StorageClassError::NotAList { parameter }),
    }
}

fn reject_unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    allowed: &'static str,
) -> Result<(), EntryProblem> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        Some(field) => Err(EntryProblem::UnknownField {
            field: field.clone(),
            allowed,
        }),
        None => Ok(()),
    }
}

fn required_str<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, EntryProblem> {
    match object.get(field) {
        None => Err(EntryProblem::MissingField(field)),
        Some(value) => value.as_str().ok_or(EntryProblem::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn job_name(object: &Map<String, Value>) -> Result<String, EntryProblem> {
    let name = required_str(object, "name")?.to_string();
    check_dns_label(&name).map_err(|reason| EntryProblem::BadName {
        name: name.clone(),
        reason,
    })?;
    if name == "source" {
        return Err(EntryProblem::BadName {
            name,
            reason: NameProblem::Reserved,
        });
    }
    Ok(name)
}

fn labels(object: &Map<String, Value>) -> Result<BTreeMap<String, String>, EntryProblem> {
    let Some(value) = object.get("labels") else {
        return Ok(BTreeMap::new());
    };
    if value.is_null() {
        return Ok(BTreeMap::new());
    }
    let map = value.as_object().ok_or(EntryProblem::WrongType {
        field: "labels",
        expected: "an object of string values",
    })?;
    let mut labels = BTreeMap::new();
    for (key, value) in map {
        let value = value.as_str().ok_or(EntryProblem::WrongType {
            field: "labels",
            expected: "an object of string values",
        })?;
        check_label_key(key).map_err(|reason| EntryProblem::BadLabelKey {
            key: key.clone(),
            reason,
        })?;
        if !value.is_empty() {
            check_label_value(value).map_err(|reason| EntryProblem::BadLabelValue {
                key: key.clone(),
                value: value.to_string(),
                reason,
            })?;
        }
        labels.insert(key.clone(), value.to_string());
    }
    Ok(labels)
}

/// DNS-1123 label: lowercase alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub fn check_dns_label(name: &str) -> Result<(), NameProblem> {
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    check_shape(name, MAX_NAME_LEN, edge, b"-", NameProblem::NotDnsLabel)
}

/// A label value (non-empty form): ≤ 63, `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub(crate) fn check_label_value(value: &str) -> Result<(), NameProblem> {
    check_shape(
        value,
        63,
        |b| b.is_ascii_alphanumeric(),
        b"-_.",
        NameProblem::NotLabelValue,
    )
}

/// Non-empty, at most `max` characters, `edge` bytes first and last, `edge` or `inner` bytes
/// in between; otherwise `problem`.
fn check_shape(
    text: &str,
    max: usize,
    edge: impl Fn(u8) -> bool,
    inner: &[u8],
    problem: NameProblem,
) -> Result<(), NameProblem> {
    if text.is_empty() {
        return Err(NameProblem::Empty);
    }
    let len = text.chars().count();
    if len > max {
        return Err(NameProblem::TooLong { len, max });
    }
    let bytes = text.as_bytes();
    let all_allowed = bytes.iter().all(|&b| edge(b) || inner.contains(&b));
    let edges_ok =
        bytes.first().is_some_and(|&b| edge(b)) && bytes.last().is_some_and(|&b| edge(b));
    if all_allowed && edges_ok {
        Ok(())
    } else {
        Err(problem)
    }
}

/// A label key: optional DNS-subdomain prefix (≤ 253) and `/`, then a name like a label value.
pub(crate) fn check_label_key(key: &str) -> Result<(), NameProblem> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let len = prefix.chars().count();
        if len > 253 {
            return Err(NameProblem::TooLong { len, max: 253 });
        }
        for part in prefix.split('.') {
            check_dns_label(part)?;
        }
    }
    check_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_error(text: &str) -> (usize, Option<String>, EntryProblem) {
        match parse_recurring_jobs(text) {
            Err(StorageClassError::Entry { entry, problem, .. }) => {
                (entry.index, entry.name, problem)
            }
            other => panic!("{text}: expected an entry error, got {other:?}"),
        }
    }

    #[test]
    fn parses_longhorn_1_1_example() {
        let text = r#"[
            {"name":"snap", "task":"snapshot", "cron":"*/1 * * * *", "retain":1},
            {"name":"backup", "task":"backup", "cron":"*/2 * * * *", "retain":1, "labels": {"interval":"2m"}}
        ]"#;
        let jobs = parse_recurring_jobs(text).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].name, "snap");
        assert_eq!(jobs[0].task, Task::Snapshot);
        assert_eq!(jobs[1].cron.as_str(), "*/2 * * * *");
        assert_eq!(
            jobs[1].labels.get("interval").map(String::as_str),
            Some("2m")
        );
        assert_eq!(
            jobs[1].volume_label(),
            (
                "recurring-job.bulwark.io/backup".to_string(),
                "enabled".to_string()
            )
        );
        assert!(parse_recurring_jobs("[]").unwrap().is_empty());
    }

    #[test]
    fn every_invalid_entry_is_named() {
        assert!(matches!(
            parse_recurring_jobs("[{"),
            Err(StorageClassError::BadJson {
                parameter: "recurringJobs",
                ..
            })
        ));
        assert!(matches!(
            parse_recurring_jobs(r#"{"name":"a"}"#),
            Err(StorageClassError::NotAList { .. })
        ));
        let ok = r#"{"name":"ok","task":"snapshot","cron":"@daily","retain":1}"#;
        let (index, name, problem) = entry_error(&format!(
            r#"[{ok}, {{"name":"b","task":"snap","cron":"@daily","retain":1}}]"#
        ));
        assert_eq!((index, name.as_deref()), (1, Some("b")));
        assert_eq!(problem, EntryProblem::Task(UnknownTask("snap".to_string())));

        let (index, _, problem) =
            entry_error(r#"[{"name":"b","task":"backup","cron":"0 25 * * *","retain":1}]"#);
        assert_eq!(index, 0);
        assert!(
            matches!(problem, EntryProblem::Cron(ref e) if matches!(**e, ScheduleError::Field { .. }))
        );

        let (_, _, problem) =
            entry_error(r#"[{"name":"b","task":"backup","cron":"@daily","retain":0}]"#);
        assert_eq!(problem, EntryProblem::RetainTooSmall(0));
        let (_, _, problem) =
            entry_error(r#"[{"name":"b","task":"backup","cron":"@daily","retain":"3"}]"#);
        assert!(matches!(
            problem,
            EntryProblem::WrongType {
                field: "retain",
                ..
            }
        ));
        let (_, _, problem) = entry_error(r#"[{"name":"b","task":"backup","cron":"@daily"}]"#);
        assert_eq!(problem, EntryProblem::MissingField("retain"));
        let (_, _, problem) =
            entry_error(r#"[{"name":"b","task":"backup","cron":"@daily","retian":1}]"#);
        assert!(matches!(problem, EntryProblem::UnknownField { field, .. } if field == "retian"));

        let (index, _, problem) = entry_error(&format!("[{ok}, {ok}]"));
        assert_eq!(index, 1);
        assert_eq!(
            problem,
            EntryProblem::DuplicateName {
                name: "ok".to_string(),
                first_index: 0
            }
        );

        let long = "a".repeat(64);
        let (_, _, problem) = entry_error(&format!(
            r#"[{{"name":"{long}","task":"backup","cron":"@daily","retain":1}}]"#
        ));
        assert!(matches!(
            problem,
            EntryProblem::BadName {
                reason: NameProblem::TooLong { len: 64, max: 63 },
                ..
            }
        ));
        let (_, _, problem) =
            entry_error(r#"[{"name":"Nightly","task":"backup","cron":"@daily","retain":1}]"#);
        assert!(matches!(
            problem,
            EntryProblem::BadName {
                reason: NameProblem::NotDnsLabel,
                ..
            }
        ));
        let (_, _, problem) =
            entry_error(r#"[{"name":"source","task":"backup","cron":"@daily","retain":1}]"#);
        assert!(matches!(
            problem,
            EntryProblem::BadName {
                reason: NameProblem::Reserved,
                ..
            }
        ));
        let (_, _, problem) = entry_error(
            r#"[{"name":"x","task":"backup","cron":"@daily","retain":1,"labels":{"a b":"c"}}]"#,
        );
        assert!(matches!(problem, EntryProblem::BadLabelKey { .. }));
        let (_, name, problem) = entry_error(r#"[5]"#);
        assert_eq!((name, problem), (None, EntryProblem::NotAnObject));

        let error = parse_recurring_jobs(
            r#"[{"name":"b","task":"backup","cron":"0 25 * * *","retain":1}]"#,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "StorageClass parameter `recurringJobs` entry 0 (`b`): field `cron`: cron `0 25 * * *`: hour (field 2) `25`: 25 is out of range; allowed are 0 to 23"
        );
    }

    #[test]
    fn total_retain_is_limited() {
        let entries: Vec<String> = (0..6)
            .map(|i| format!(r#"{{"name":"j{i}","task":"snapshot","cron":"@daily","retain":9}}"#))
            .collect();
        assert_eq!(
            parse_recurring_jobs(&format!("[{}]", entries.join(","))).unwrap_err(),
            StorageClassError::TotalRetainTooLarge { total: 54 }
        );
        assert!(parse_recurring_jobs(&format!("[{}]", entries[..5].join(","))).is_ok());
    }

    #[test]
    fn selector_entries_become_labels() {
        let selected =
            parse_recurring_job_selector(r#"[{"name":"gold","isGroup":true},{"name":"nightly"},{"name":"nightly","isGroup":true}]"#).unwrap();
        let labels: Vec<(String, String)> = selected
            .iter()
            .map(JobSelectorEntry::volume_label)
            .collect();
        assert_eq!(
            labels,
            [
                (
                    "recurring-job-group.bulwark.io/gold".to_string(),
                    "enabled".to_string()
                ),
                (
                    "recurring-job.bulwark.io/nightly".to_string(),
                    "enabled".to_string()
                ),
                (
                    "recurring-job-group.bulwark.io/nightly".to_string(),
                    "enabled".to_string()
                ),
            ]
        );
        let error = parse_recurring_job_selector(r#"[{"name":"a"},{"name":"a","isGroup":false}]"#)
            .unwrap_err();
        assert!(matches!(
            error,
            StorageClassError::Entry {
                parameter: "recurringJobSelector",
                problem: EntryProblem::DuplicateName { first_index: 0, .. },
                ..
            }
        ));
        assert!(matches!(
            parse_recurring_job_selector(r#"[{"name":"a","isGroup":"yes"}]"#),
            Err(StorageClassError::Entry {
                problem: EntryProblem::WrongType {
                    field: "isGroup",
                    ..
                },
                ..
            })
        ));
        assert!(matches!(
            parse_recurring_job_selector(r#"[{"isGroup":true}]"#),
            Err(StorageClassError::Entry {
                problem: EntryProblem::MissingField("name"),
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,80}") {
            let _ = parse_recurring_jobs(&text);
            let _ = parse_recurring_job_selector(&text);
        }

        #[test]
        fn parsers_never_panic_on_json_shaped_text(
            text in r#"\[(\{("name"|"task"|"cron"|"retain"|"labels"|"isGroup"):("[a-z@ *0-9/-]{0,12}"|[0-9-]{1,3}|true|null|\{\}),?\},?){0,3}\]"#
        ) {
            let _ = parse_recurring_jobs(&text);
            let _ = parse_recurring_job_selector(&text);
        }
    }
}
