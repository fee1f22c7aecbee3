//! Validating a RecurringJob spec in code (the CRD's CEL rules repeat these checks at admission;
//! objects created before a rule existed still pass through here). Input is plain data, output
//! the typed values every other module takes.

use std::collections::BTreeMap;

use jiff::SignedDuration;
use jiff::tz::TimeZone;

use crate::duration::{DurationError, parse_go_duration};
use crate::retention::RetentionPolicy;
use crate::schedule::{Schedule, ScheduleError, TimeZoneError, resolve_time_zone};
use crate::skip::{ParameterError, SkipParams};
use crate::storage_class::{NameProblem, check_dns_label, check_label_key, check_label_value};
use crate::task::{Task, UnknownTask};

/// Longhorn's default number of volumes a job works on at once.
pub const DEFAULT_CONCURRENCY: u32 = 10;

/// A RecurringJob spec as plain data.
#[derive(Debug, Clone, Default)]
pub struct JobSpecInput {
    pub name: String,
    pub task: String,
    pub cron: String,
    pub time_zone: Option<String>,
    pub retain: i64,
    pub retain_age: Option<String>,
    pub concurrency: Option<i64>,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
}

/// A spec that passed every check.
#[derive(Debug, Clone)]
pub struct ValidatedJob {
    pub name: String,
    pub task: Task,
    pub schedule: Schedule,
    pub time_zone: TimeZone,
    /// `None` for tasks that create and delete nothing by count (`snapshot-cleanup`, ...).
    pub retention: Option<RetentionPolicy>,
    pub concurrency: u32,
    pub skip: SkipParams,
    pub groups: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The first problem found in a spec; each message starts with the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("metadata.name `{name}`: {reason}")]
    Name { name: String, reason: NameProblem },
    #[error("spec.task: {0}")]
    Task(#[source] UnknownTask),
    #[error("spec.cron: {0}")]
    Cron(#[source] Box<ScheduleError>),
    #[error("spec.timeZone: {0}")]
    TimeZone(#[source] TimeZoneError),
    #[error("spec.retain is {retain}; task `{task}` needs at least 1")]
    Retain { retain: i64, task: Task },
    #[error("spec.retainAge: {0}")]
    RetainAge(#[source] DurationError),
    #[error("spec.retainAge `{0}` must be longer than 0 (e.g. `168h`)")]
    RetainAgeNotPositive(String),
    #[error("spec.concurrency is {0}; it must be at least 1")]
    Concurrency(i64),
    #[error("spec.groups: `{group}`: {reason}")]
    Group { group: String, reason: NameProblem },
    #[error("spec.labels: key `{key}`: {reason}")]
    LabelKey { key: String, reason: NameProblem },
    #[error("spec.labels: value of `{key}`: {reason}")]
    LabelValue { key: String, reason: NameProblem },
    #[error("spec.parameters: {0}")]
    Parameter(#[source] ParameterError),
}

/// Validates a spec. Checks in field order and reports the first problem.
pub fn validate_job(input: &JobSpecInput) -> Result<ValidatedJob, JobError> {
    check_dns_label(&input.name).map_err(|reason| JobError::Name {
        name: input.name.clone(),
        reason,
    })?;
    if input.name == "source" {
        return Err(JobError::Name {
            name: input.name.clone(),
            reason: NameProblem::Reserved,
        });
    }
    let task: Task = input.task.parse().map_err(JobError::Task)?;
    let schedule = Schedule::parse(&input.cron).map_err(|e| JobError::Cron(Box::new(e)))?;
    let time_zone = resolve_time_zone(input.time_zone.as_deref()).map_err(JobError::TimeZone)?;
    let retain_age = match input.retain_age.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => {
            let age = parse_go_duration(text).map_err(JobError::RetainAge)?;
            if age <= SignedDuration::ZERO {
                return Err(JobError::RetainAgeNotPositive(text.to_string()));
            }
            Some(age)
        }
    };
    let retention = if task.uses_retain() {
        if input.retain < 1 {
            return Err(JobError::Retain {
                retain: input.retain,
                task,
            });
        }
        Some(RetentionPolicy {
            retain: u32::try_from(input.retain).unwrap_or(u32::MAX),
            retain_age,
        })
    } else {
        None
    };
    let concurrency = match input.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(value) if value >= 1 => u32::try_from(value).unwrap_or(u32::MAX),
        Some(value) => return Err(JobError::Concurrency(value)),
    };
    for group in &input.groups {
        check_dns_label(group).map_err(|reason| JobError::Group {
            group: group.clone(),
            reason,
        })?;
    }
    for (key, value) in &input.labels {
        check_label_key(key).map_err(|reason| JobError::LabelKey {
            key: key.clone(),
            reason,
        })?;
        if !value.is_empty() {
            check_label_value(value).map_err(|reason| JobError::LabelValue {
                key: key.clone(),
                reason,
            })?;
        }
    }
    let skip = SkipParams::from_parameters(&input.parameters).map_err(JobError::Parameter)?;
    Ok(ValidatedJob {
        name: input.name.clone(),
        task,
        schedule,
        time_zone,
        retention,
        concurrency,
        skip,
        groups: input.groups.clone(),
        labels: input.labels.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpecInput {
        JobSpecInput {
            name: "nightly".to_string(),
            task: "backup".to_string(),
            cron: "0 2 * * *".to_string(),
            time_zone: Some("Europe/Berlin".to_string()),
            retain: 7,
            retain_age: Some("720h".to_string()),
            concurrency: None,
            groups: vec!["default".to_string()],
            labels: BTreeMap::from([("team".to_string(), "db".to_string())]),
            parameters: BTreeMap::from([("min-changed-bytes".to_string(), "1Mi".to_string())]),
        }
    }

    #[test]
    fn accepts_a_complete_spec() {
        let job = validate_job(&spec()).unwrap();
        assert_eq!(job.task, Task::Backup);
        assert_eq!(job.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(
            job.retention,
            Some(RetentionPolicy {
                retain: 7,
                retain_age: Some(SignedDuration::from_hours(720))
            })
        );
        assert_eq!(job.skip.min_changed_bytes, 1 << 20);
    }

    #[test]
    fn each_field_is_named_in_its_error() {
        type Change = Box<dyn Fn(&mut JobSpecInput)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|s| s.name = "Nightly".into()), "metadata.name"),
            (Box::new(|s| s.name = "source".into()), "metadata.name"),
            (Box::new(|s| s.task = "snap".into()), "spec.task"),
            (Box::new(|s| s.cron = "0 2 * *".into()), "spec.cron"),
            (
                Box::new(|s| s.time_zone = Some("Berlin".into())),
                "spec.timeZone",
            ),
            (Box::new(|s| s.retain = 0), "spec.retain"),
            (
                Box::new(|s| s.retain_age = Some("30d".into())),
                "spec.retainAge",
            ),
            (
                Box::new(|s| s.retain_age = Some("-1h".into())),
                "spec.retainAge",
            ),
            (Box::new(|s| s.concurrency = Some(0)), "spec.concurrency"),
            (Box::new(|s| s.groups = vec!["Gold".into()]), "spec.groups"),
            (
                Box::new(|s| {
                    s.labels.insert("bad key".into(), "x".into());
                }),
                "spec.labels",
            ),
            (
                Box::new(|s| {
                    s.parameters.insert("force-after".into(), "soon".into());
                }),
                "spec.parameters",
            ),
        ];
        for (change, field) in cases {
            let mut input = spec();
            change(&mut input);
            let message = validate_job(&input).unwrap_err().to_string();
            assert!(
                message.starts_with(field),
                "{message} should start with {field}"
            );
        }
    }

    #[test]
    fn cleanup_needs_no_retain() {
        let mut input = spec();
        input.task = "snapshot-cleanup".to_string();
        input.retain = 0;
        assert!(validate_job(&input).unwrap().retention.is_none());
        input.task = "snapshot-delete".to_string();
        assert!(matches!(validate_job(&input), Err(JobError::Retain { .. })));
    }
}
