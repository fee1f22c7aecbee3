//! Parses arbitrary text as a `cron` field; for every schedule that parses, checks, beyond
//! "no panic", in a zone and at an instant chosen by the input:
//! - `next_after(now)` is strictly after `now`, and nothing fires in between:
//!   `latest_at_or_before(next - 1ns)` is at or before `now`;
//! - `latest_at_or_before(next)` is `next` itself;
//! - error messages render.
#![no_main]

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use recurring::{Schedule, resolve_time_zone};

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Apia",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((seconds, text)) = rest.split_at_checked(4) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let schedule = match Schedule::parse(text) {
        Ok(schedule) => schedule,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let zone: TimeZone =
        resolve_time_zone(Some(ZONES[usize::from(selector) % ZONES.len()])).expect("known zone");
    // 2000-01-01 plus up to ~136 years.
    let offset = i64::from(u32::from_le_bytes([
        seconds[0], seconds[1], seconds[2], seconds[3],
    ]));
    let now = Timestamp::from_second(946_684_800 + offset).expect("in range");
    let Some(next) = schedule.next_after(now, &zone) else {
        return;
    };
    assert!(next > now, "{text}: next_after({now}) = {next}");
    let before_next = schedule.latest_at_or_before(next - SignedDuration::from_nanos(1), &zone);
    assert!(
        before_next.is_none_or(|latest| latest <= now),
        "{text}: {before_next:?} fires between {now} and {next}"
    );
    assert_eq!(
        schedule.latest_at_or_before(next, &zone),
        Some(next),
        "{text}"
    );
});
