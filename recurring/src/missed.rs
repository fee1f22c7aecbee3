//! Deciding what to do when the scheduler wakes up: run the due slot, skip missed slots, or wait.
//!
//! State model: the operator persists one watermark per job, `nextRunAt`: every slot before it
//! has been dealt with (run or skipped). The decision is a pure function of (schedule, zone,
//! watermark, now, starting deadline), so a restarted operator decides exactly what the old one
//! would have. Every decision returns a new watermark strictly after `now` (and after the slot it
//! runs); persisting it BEFORE starting the run makes each slot run at most once across crashes
//! and restarts. (Persisting after would make it at-least-once; we choose at-most-once because a
//! doubled snapshot is harmless but a doubled backup costs a full upload, and a crash between
//! persist and start is reported as a missed slot by the caller's status, never silently lost.)

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::schedule::Schedule;

/// Missed slots are counted exactly up to this many; beyond it the count saturates.
pub const MISSED_COUNT_LIMIT: u32 = 10_000;

/// How many slots were passed over without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedSlots {
    /// Number of slots, exact unless `saturated`.
    pub count: u32,
    /// More than `MISSED_COUNT_LIMIT` slots were missed; `count` is the limit.
    pub saturated: bool,
}

impl MissedSlots {
    pub const NONE: MissedSlots = MissedSlots {
        count: 0,
        saturated: false,
    };
}

/// What the scheduler should do now for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDecision {
    /// Nothing is due. Persist `next_run_at` and wake up then.
    Wait { next_run_at: Timestamp },
    /// Run the job once now for `slot` (the latest due slot). Older due slots are skipped and
    /// counted in `missed`. Persist `next_run_at` first, then start the run.
    RunNow {
        slot: Timestamp,
        missed: MissedSlots,
        next_run_at: Timestamp,
    },
    /// The latest due slot is older than the starting deadline: run nothing, report `missed`
    /// (which includes that slot), persist `next_run_at`.
    SkipMissed {
        latest_slot: Timestamp,
        missed: MissedSlots,
        next_run_at: Timestamp,
    },
    /// The schedule has no firing time left that can be represented (past the year 9999).
    Exhausted,
}

/// Decides for one job.
///
/// - `recorded_next_run_at`: the persisted watermark; `None` for a job never scheduled before,
///   which waits for its first slot (a job does not run at creation). Pass `None` as well when
///   the job's `cron` or `timeZone` was edited: a watermark in the future is kept as it is (it
///   never moves back), so a stale one from the old schedule would delay the new one.
/// - `starting_deadline`: how late a slot may still start; `None` = no limit (the latest missed
///   slot always runs once). Several missed slots never run more than once in total.
pub fn decide_run(
    schedule: &Schedule,
    time_zone: &TimeZone,
    recorded_next_run_at: Option<Timestamp>,
    now: Timestamp,
    starting_deadline: Option<SignedDuration>,
) -> RunDecision {
    let Some(next_run_at) = schedule.next_after(now, time_zone) else {
        return RunDecision::Exhausted;
    };
    let watermark = match recorded_next_run_at {
        None => return RunDecision::Wait { next_run_at },
        // The watermark never moves back: if the clock jumped backwards, slots before it have
        // already been dealt with and must not run again.
        Some(watermark) if watermark > now => {
            return RunDecision::Wait {
                next_run_at: watermark,
            };
        }
        Some(watermark) => watermark,
    };
    // The due slots are the schedule's slots in [watermark, now].
    let latest = match schedule.latest_at_or_before(now, time_zone) {
        Some(latest) if latest >= watermark => latest,
        _ => return RunDecision::Wait { next_run_at },
    };
    let due = count_slots(schedule, time_zone, watermark, latest);
    let late_by = latest.duration_until(now);
    let in_time = starting_deadline.is_none_or(|deadline| late_by <= deadline);
    if in_time {
        RunDecision::RunNow {
            slot: latest,
            missed: MissedSlots {
                count: due.count.saturating_sub(1),
                saturated: due.saturated,
            },
            next_run_at,
        }
    } else {
        RunDecision::SkipMissed {
            latest_slot: latest,
            missed: due,
            next_run_at,
        }
    }
}

/// Slots in [from, latest], where `latest` is a slot.
fn count_slots(
    schedule: &Schedule,
    time_zone: &TimeZone,
    from: Timestamp,
    latest: Timestamp,
) -> MissedSlots {
    // The first slot at or after `from`.
    let just_before = from - SignedDuration::from_nanos(1);
    let mut slot = schedule.next_after(just_before, time_zone);
    let mut count = 0u32;
    while let Some(at) = slot {
        if at > latest {
            break;
        }
        if count == MISSED_COUNT_LIMIT {
            return MissedSlots {
                count,
                saturated: true,
            };
        }
        count += 1;
        slot = schedule.next_after(at, time_zone);
    }
    MissedSlots {
        count,
        saturated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn hourly() -> Schedule {
        Schedule::parse("@hourly").unwrap()
    }

    fn hourly_decision(recorded: Option<&str>, now: &str) -> RunDecision {
        decide_run(&hourly(), &TimeZone::UTC, recorded.map(ts), ts(now), None)
    }

    fn wait_until(at: &str) -> RunDecision {
        RunDecision::Wait {
            next_run_at: ts(at),
        }
    }

    #[test]
    fn new_job_waits_for_its_first_slot() {
        let decision = hourly_decision(None, "2024-01-01T10:20:00Z");
        assert_eq!(decision, wait_until("2024-01-01T11:00:00Z"));
    }

    #[test]
    fn waits_before_the_watermark() {
        let decision = hourly_decision(Some("2024-01-01T11:00:00Z"), "2024-01-01T10:59:59Z");
        assert_eq!(decision, wait_until("2024-01-01T11:00:00Z"));
    }

    #[test]
    fn clock_jumping_back_keeps_the_watermark() {
        // The 10:00 slot ran and 11:00 was persisted; then the clock jumped back to 09:30.
        let decision = hourly_decision(Some("2024-01-01T11:00:00Z"), "2024-01-01T09:30:00Z");
        assert_eq!(decision, wait_until("2024-01-01T11:00:00Z"));
    }

    #[test]
    fn runs_on_time_and_counts_missed_slots() {
        let utc = TimeZone::UTC;
        let on_time = decide_run(
            &hourly(),
            &utc,
            Some(ts("2024-01-01T11:00:00Z")),
            ts("2024-01-01T11:00:00Z"),
            None,
        );
        assert_eq!(
            on_time,
            RunDecision::RunNow {
                slot: ts("2024-01-01T11:00:00Z"),
                missed: MissedSlots::NONE,
                next_run_at: ts("2024-01-01T12:00:00Z")
            }
        );
        // Down from 10:30 to 14:10: slots 11, 12, 13, 14 were due; 14:00 runs, 3 are missed.
        let late = decide_run(
            &hourly(),
            &utc,
            Some(ts("2024-01-01T11:00:00Z")),
            ts("2024-01-01T14:10:00Z"),
            None,
        );
        assert_eq!(
            late,
            RunDecision::RunNow {
                slot: ts("2024-01-01T14:00:00Z"),
                missed: MissedSlots {
                    count: 3,
                    saturated: false
                },
                next_run_at: ts("2024-01-01T15:00:00Z")
            }
        );
    }

    #[test]
    fn starting_deadline_turns_a_late_run_into_a_skip() {
        let utc = TimeZone::UTC;
        let deadline = Some(SignedDuration::from_mins(5));
        let within = decide_run(
            &hourly(),
            &utc,
            Some(ts("2024-01-01T14:00:00Z")),
            ts("2024-01-01T14:05:00Z"),
            deadline,
        );
        assert!(matches!(within, RunDecision::RunNow { .. }));
        let beyond = decide_run(
            &hourly(),
            &utc,
            Some(ts("2024-01-01T13:00:00Z")),
            ts("2024-01-01T14:05:01Z"),
            deadline,
        );
        assert_eq!(
            beyond,
            RunDecision::SkipMissed {
                latest_slot: ts("2024-01-01T14:00:00Z"),
                missed: MissedSlots {
                    count: 2,
                    saturated: false
                },
                next_run_at: ts("2024-01-01T15:00:00Z")
            }
        );
    }

    #[test]
    fn missed_count_saturates() {
        let every_minute = Schedule::parse("* * * * *").unwrap();
        let decision = decide_run(
            &every_minute,
            &TimeZone::UTC,
            Some(ts("2024-01-01T00:00:00Z")),
            ts("2024-03-01T00:00:00Z"),
            None,
        );
        assert_eq!(
            decision,
            RunDecision::RunNow {
                slot: ts("2024-03-01T00:00:00Z"),
                missed: MissedSlots {
                    count: MISSED_COUNT_LIMIT - 1,
                    saturated: true
                },
                next_run_at: ts("2024-03-01T00:01:00Z")
            }
        );
    }

    #[test]
    fn edited_schedule_without_a_due_slot_waits() {
        // The watermark came from an hourly schedule; the job now runs daily at 02:00.
        let daily = Schedule::parse("0 2 * * *").unwrap();
        let decision = decide_run(
            &daily,
            &TimeZone::UTC,
            Some(ts("2024-01-01T11:00:00Z")),
            ts("2024-01-01T11:30:00Z"),
            None,
        );
        assert_eq!(
            decision,
            RunDecision::Wait {
                next_run_at: ts("2024-01-02T02:00:00Z")
            }
        );
    }
}
