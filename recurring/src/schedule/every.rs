//! `@every <duration>`: fixed periods on the absolute time line, anchored so restarts never shift
//! them.
//!
//! Decision: the anchor is the Unix epoch unless the caller supplies another (e.g. the job's
//! creation time). Firing times are `anchor + k * period` for whole `k`, so they are a pure
//! function of the schedule and independent of when the operator (re)started. Time zones and DST
//! do not apply: `@every 1h` fires every 3600 s even across a DST change.

use jiff::{SignedDuration, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EverySchedule {
    text: String,
    period: SignedDuration,
    anchor: Timestamp,
}

impl EverySchedule {
    pub(crate) fn new(text: String, period: SignedDuration) -> EverySchedule {
        EverySchedule {
            text,
            period,
            anchor: Timestamp::UNIX_EPOCH,
        }
    }

    /// The same period anchored at `anchor` instead of the Unix epoch.
    pub fn anchored_at(mut self, anchor: Timestamp) -> EverySchedule {
        self.anchor = anchor;
        self
    }

    pub fn period(&self) -> SignedDuration {
        self.period
    }

    pub fn anchor(&self) -> Timestamp {
        self.anchor
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `anchor + k * period` for the smallest `k` with a result strictly after `now`.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        let periods = self.periods_since_anchor(now)?.checked_add(1)?;
        self.slot(periods)
    }

    /// `anchor + k * period` for the largest `k` with a result at or before `now`.
    pub fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        self.slot(self.periods_since_anchor(now)?)
    }

    fn periods_since_anchor(&self, now: Timestamp) -> Option<i128> {
        let elapsed = now.as_nanosecond() - self.anchor.as_nanosecond();
        let period = self.period.as_nanos();
        (period > 0).then(|| elapsed.div_euclid(period))
    }

    fn slot(&self, periods: i128) -> Option<Timestamp> {
        let offset = periods.checked_mul(self.period.as_nanos())?;
        Timestamp::from_nanosecond(self.anchor.as_nanosecond().checked_add(offset)?).ok()
    }
}
