//! Schedules: parsing Longhorn's cron dialect and computing firing times in an IANA time zone.
//!
//! Firing times of a cron schedule are defined on the wall clock of the job's time zone:
//! every matching wall-clock minute fires once, at its FIRST instant. A wall-clock minute that
//! does not exist that day (spring forward) does not fire; one that exists twice (fall back)
//! fires only at the earlier instant. `@every` is wall-clock free: fixed periods from an anchor.

mod cron_expr;
mod every;

pub use cron_expr::{CronExpr, CronField, FieldProblem};
pub use every::EverySchedule;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::duration::{DurationError, parse_go_duration};

/// The shortest accepted `@every` period. Shorter periods would only create snapshot storms.
pub const MIN_EVERY_PERIOD: SignedDuration = SignedDuration::from_secs(60);

/// Why a schedule string was rejected. Every message names the bad part and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "cron is empty: write 5 fields `minute hour day-of-month month day-of-week` (e.g. `0 2 * * *`) or a descriptor such as `@daily`"
    )]
    Empty,
    #[error(
        "cron `{cron}` has {count} fields; write exactly 5: minute hour day-of-month month day-of-week (a seconds or year field is not supported)"
    )]
    FieldCount { cron: String, count: usize },
    #[error(
        "cron `{cron}`: unknown descriptor `{descriptor}`; use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or `@every <duration>`"
    )]
    UnknownDescriptor { cron: String, descriptor: String },
    #[error("cron `{cron}`: {field} `{value}`: {problem}")]
    Field {
        cron: String,
        field: CronField,
        value: String,
        problem: FieldProblem,
    },
    #[error("cron `{cron}`: `@every` needs a duration, e.g. `@every 90m` or `@every 1h30m`")]
    EveryMissingDuration { cron: String },
    #[error("cron `{cron}`: @every duration: {source}")]
    EveryDuration {
        cron: String,
        #[source]
        source: DurationError,
    },
    #[error(
        "cron `{cron}`: @every period must be at least 1m and a whole number of seconds (e.g. `@every 5m`)"
    )]
    EveryTooShort { cron: String },
    #[error(
        "cron `{cron}`: the schedule search rejected its normalised form ({message}); this is a bug in Bulwark's recurring crate, please report it"
    )]
    SearchEngine { cron: String, message: String },
    #[error(
        "cron `{cron}` never fires: no month in the month field has the days in the day-of-month field (e.g. February 30th)"
    )]
    NeverFires { cron: String },
}

/// Why a time zone name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "time zone `{name}` is not an IANA time zone name; use a name such as `UTC`, `Europe/Berlin` or `America/New_York`"
)]
pub struct TimeZoneError {
    pub name: String,
}

/// Resolves a job's `timeZone` field: empty or absent means UTC. Uses the system tz database when
/// present and jiff's bundled copy otherwise, so it works in images without /usr/share/zoneinfo.
pub fn resolve_time_zone(name: Option<&str>) -> Result<TimeZone, TimeZoneError> {
    match name.map(str::trim) {
        None | Some("") => Ok(TimeZone::UTC),
        Some(name) => jiff::tz::db().get(name).map_err(|_| TimeZoneError {
            name: name.to_string(),
        }),
    }
}

/// A parsed `cron` field of a recurring job.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<CronSchedule>),
    Every(EverySchedule),
}

/// A 5-field cron schedule. The search runs on croner; the DST rules are ours (see module docs).
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: CronExpr,
    searcher: croner::Cron,
    text: String,
}

/// Wall-clock candidates skipped in one search before giving up (gaps and the repeated hour
/// need at most a few thousand; this bound only guards against a broken time zone table).
const MAX_CANDIDATES: u32 = 100_000;

impl Schedule {
    /// Parses Longhorn's dialect: 5 fields or a descriptor. Descriptors and names are
    /// case-insensitive. See the crate README for the exact grammar.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if let Some(rest) = trimmed.strip_prefix('@') {
            let (descriptor, argument) = match rest.split_once(char::is_whitespace) {
                Some((descriptor, argument)) => (descriptor, argument.trim()),
                None => (rest, ""),
            };
            let expanded = match descriptor.to_ascii_lowercase().as_str() {
                "every" => return parse_every(trimmed, argument).map(Schedule::Every),
                _ if !argument.is_empty() => None,
                "yearly" | "annually" => Some("0 0 1 1 *"),
                "monthly" => Some("0 0 1 * *"),
                "weekly" => Some("0 0 * * 0"),
                "daily" | "midnight" => Some("0 0 * * *"),
                "hourly" => Some("0 * * * *"),
                _ => None,
            };
            return match expanded {
                Some(fields) => CronSchedule::from_fields(trimmed, fields)
                    .map(|cron| Schedule::Cron(Box::new(cron))),
                None => Err(ScheduleError::UnknownDescriptor {
                    cron: trimmed.to_string(),
                    descriptor: format!("@{descriptor}"),
                }),
            };
        }
        CronSchedule::from_fields(trimmed, trimmed).map(|cron| Schedule::Cron(Box::new(cron)))
    }

    /// The first firing time strictly after `now`, or `None` if none is representable
    /// (beyond the year 9999).
    pub fn next_after(&self, now: Timestamp, time_zone: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Cron(cron) => cron.next_after(now, time_zone),
            Schedule::Every(every) => every.next_after(now),
        }
    }

    /// The last firing time at or before `now`, or `None` if there is none.
    pub fn latest_at_or_before(&self, now: Timestamp, time_zone: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Cron(cron) => cron.latest_at_or_before(now, time_zone),
            Schedule::Every(every) => every.latest_at_or_before(now),
        }
    }

    /// The text the schedule was parsed from (trimmed).
    pub fn as_str(&self) -> &str {
        match self {
            Schedule::Cron(cron) => &cron.text,
            Schedule::Every(every) => every.as_str(),
        }
    }
}

fn parse_every(cron: &str, argument: &str) -> Result<EverySchedule, ScheduleError> {
    if argument.is_empty() {
        return Err(ScheduleError::EveryMissingDuration {
            cron: cron.to_string(),
        });
    }
    let period = parse_go_duration(argument).map_err(|source| ScheduleError::EveryDuration {
        cron: cron.to_string(),
        source,
    })?;
    if period < MIN_EVERY_PERIOD || period.subsec_nanos() != 0 {
        return Err(ScheduleError::EveryTooShort {
            cron: cron.to_string(),
        });
    }
    Ok(EverySchedule::new(cron.to_string(), period))
}

impl CronSchedule {
    fn from_fields(text: &str, fields_text: &str) -> Result<CronSchedule, ScheduleError> {
        let fields: Vec<&str> = fields_text.split_whitespace().collect();
        let fields: [&str; 5] =
            fields
                .try_into()
                .map_err(|fields: Vec<&str>| ScheduleError::FieldCount {
                    cron: text.to_string(),
                    count: fields.len(),
                })?;
        let expr = CronExpr::from_fields(fields).map_err(|(field, value, problem)| {
            ScheduleError::Field {
                cron: text.to_string(),
                field,
                value,
                problem,
            }
        })?;
        if !expr.can_match_some_day() {
            return Err(ScheduleError::NeverFires {
                cron: text.to_string(),
            });
        }
        let searcher = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&expr.canonical_croner_pattern())
            // Our canonical pattern is plain numeric lists that croner always accepts; if it
            // ever did not, say so rather than panic.
            .map_err(|error| ScheduleError::SearchEngine {
                cron: text.to_string(),
                message: error.to_string(),
            })?;
        Ok(CronSchedule {
            expr,
            searcher,
            text: text.to_string(),
        })
    }

    /// The parsed fields (for matching a wall-clock minute directly).
    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    /// First firing time strictly after `now`. The map from an existing wall-clock time to its
    /// first instant is strictly increasing, so the answer is the first matching wall-clock
    /// minute after `now`'s wall clock whose first instant lies after `now`.
    pub fn next_after(&self, now: Timestamp, time_zone: &TimeZone) -> Option<Timestamp> {
        let mut cursor = time_zone.to_datetime(now);
        for _ in 0..MAX_CANDIDATES {
            let candidate = self.searcher.find_next_occurrence(&cursor, false).ok()?;
            match first_instant(time_zone, candidate)? {
                FirstInstant::At(instant) if instant > now => return Some(instant),
                // A wall-clock time in a gap, or one of the repeated hour that already fired in
                // its first pass (`now` is in the second pass): both are passed over. At most
                // the minutes of one gap or repeated hour are visited.
                FirstInstant::Missing | FirstInstant::At(_) => cursor = candidate,
            }
        }
        None
    }

    /// Last firing time at or before `now`.
    pub fn latest_at_or_before(&self, now: Timestamp, time_zone: &TimeZone) -> Option<Timestamp> {
        // Wall-clock times up to `now`'s reading with the larger offset can have a first instant
        // at or before `now` (in the second pass of a repeated hour those are ahead on the clock).
        let mut cursor = time_zone.to_datetime(now);
        let mut inclusive = true;
        if let AmbiguousOffset::Fold { before, after } =
            time_zone.to_ambiguous_timestamp(cursor).offset()
        {
            cursor = cursor.max(before.max(after).to_datetime(now));
        }
        for _ in 0..MAX_CANDIDATES {
            let candidate = self
                .searcher
                .find_previous_occurrence(&cursor, inclusive)
                .ok()?;
            inclusive = false;
            cursor = candidate;
            if let FirstInstant::At(instant) = first_instant(time_zone, candidate)?
                && instant <= now
            {
                return Some(instant);
            }
        }
        None
    }
}

enum FirstInstant {
    /// The wall-clock time does not exist in the zone that day (spring-forward gap).
    Missing,
    At(Timestamp),
}

/// The first instant at which the zone's clock reads `wall` (`None` if out of jiff's range).
fn first_instant(time_zone: &TimeZone, wall: DateTime) -> Option<FirstInstant> {
    let instant = match time_zone.to_ambiguous_timestamp(wall).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok()?,
        AmbiguousOffset::Gap { .. } => return Some(FirstInstant::Missing),
        AmbiguousOffset::Fold { before, after } => {
            let first = before.to_timestamp(wall).ok()?;
            let second = after.to_timestamp(wall).ok()?;
            first.min(second)
        }
    };
    Some(FirstInstant::At(instant))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_error(cron: &str) -> (CronField, String, FieldProblem) {
        match Schedule::parse(cron) {
            Err(ScheduleError::Field {
                field,
                value,
                problem,
                ..
            }) => (field, value, problem),
            other => panic!("{cron}: expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field_and_value() {
        let (field, value, problem) = field_error("60 * * * *");
        assert_eq!(field, CronField::Minute);
        assert_eq!(value, "60");
        assert_eq!(
            problem,
            FieldProblem::OutOfRange {
                value: 60,
                min: 0,
                max: 59
            }
        );

        let (field, _, problem) = field_error("0 24 * * *");
        assert_eq!(field, CronField::Hour);
        assert!(matches!(
            problem,
            FieldProblem::OutOfRange { value: 24, .. }
        ));

        let (field, _, _) = field_error("0 0 0 * *");
        assert_eq!(field, CronField::DayOfMonth);
        let (field, _, problem) = field_error("0 0 * FOO *");
        assert_eq!(field, CronField::Month);
        assert!(matches!(problem, FieldProblem::NotANumber { .. }));
        let (field, _, problem) = field_error("0 0 * * 8");
        assert_eq!(field, CronField::DayOfWeek);
        assert!(matches!(problem, FieldProblem::OutOfRange { value: 8, .. }));
        let (_, _, problem) = field_error("0 0 * * MON#2");
        assert!(matches!(problem, FieldProblem::Unsupported { .. }));
        let (field, _, problem) = field_error("0 0 L * *");
        assert_eq!(field, CronField::DayOfMonth);
        assert!(matches!(problem, FieldProblem::Unsupported { .. }));
        let (_, _, problem) = field_error("*/0 * * * *");
        assert!(matches!(problem, FieldProblem::BadStep { .. }));
        let (_, _, problem) = field_error("0 22-2 * * *");
        assert_eq!(problem, FieldProblem::ReversedRange { start: 22, end: 2 });
        let (_, _, problem) = field_error("1,,2 * * * *");
        assert_eq!(problem, FieldProblem::EmptyElement);
        let (field, _, _) = field_error("? * * * *");
        assert_eq!(field, CronField::Minute);

        let message = Schedule::parse("0 24 * * *")
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("cron `0 24 * * *`: hour (field 2) `24`: 24 is out of range; allowed are 0 to 23")
        );
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert!(matches!(Schedule::parse("  "), Err(ScheduleError::Empty)));
        assert!(matches!(
            Schedule::parse("0 0 2 * * *"),
            Err(ScheduleError::FieldCount { count: 6, .. })
        ));
        assert!(matches!(
            Schedule::parse("0 2 * *"),
            Err(ScheduleError::FieldCount { count: 4, .. })
        ));
        assert!(matches!(
            Schedule::parse("@reboot"),
            Err(ScheduleError::UnknownDescriptor { .. })
        ));
        assert!(matches!(
            Schedule::parse("@daily 5"),
            Err(ScheduleError::UnknownDescriptor { .. })
        ));
        assert!(matches!(
            Schedule::parse("@every"),
            Err(ScheduleError::EveryMissingDuration { .. })
        ));
        assert!(matches!(
            Schedule::parse("@every 5"),
            Err(ScheduleError::EveryDuration { .. })
        ));
        assert!(matches!(
            Schedule::parse("@every 30s"),
            Err(ScheduleError::EveryTooShort { .. })
        ));
        assert!(matches!(
            Schedule::parse("@every 90.5s"),
            Err(ScheduleError::EveryTooShort { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 0 30 2 *"),
            Err(ScheduleError::NeverFires { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 0 31 4,6,9,11 *"),
            Err(ScheduleError::NeverFires { .. })
        ));
        // With a weekday restriction the day fields combine with OR, so this fires on Mondays.
        assert!(Schedule::parse("0 0 30 2 MON").is_ok());
        assert!(Schedule::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn accepts_the_dialect() {
        for cron in [
            "0 2 * * 0",
            "0 2 * * 7",
            "*/15 9-17 * * MON-FRI",
            "0 0 1,15 JAN,jul *",
            "5 4 * * sun",
            "0 0 * * FRI-SUN",
            "0/10 * * * *",
            "0 0 ? * *",
            "@yearly",
            "@ANNUALLY",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "@every 90m",
            "@every 1h30m",
        ] {
            assert!(Schedule::parse(cron).is_ok(), "{cron}");
        }
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(resolve_time_zone(None), Ok(TimeZone::UTC));
        assert_eq!(resolve_time_zone(Some("")), Ok(TimeZone::UTC));
        assert!(resolve_time_zone(Some("Europe/Berlin")).is_ok());
        assert_eq!(
            resolve_time_zone(Some("Mars/Olympus")),
            Err(TimeZoneError {
                name: "Mars/Olympus".to_string()
            })
        );
    }
}
