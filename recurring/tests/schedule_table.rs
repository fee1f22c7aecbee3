//! Hand-checked firing times. Every expected value was worked out on a calendar, not computed.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use jiff::Timestamp;
use jiff::tz::TimeZone;
use recurring::{Schedule, resolve_time_zone};

fn ts(text: &str) -> Timestamp {
    text.parse().expect("test timestamps are valid")
}

fn tz(name: &str) -> TimeZone {
    resolve_time_zone(Some(name)).expect("test zones exist")
}

fn next(cron: &str, zone: &str, now: &str) -> Timestamp {
    Schedule::parse(cron)
        .expect("test schedules parse")
        .next_after(ts(now), &tz(zone))
        .expect("a next time exists")
}

fn sequence(cron: &str, zone: &str, now: &str, count: usize) -> Vec<String> {
    let schedule = Schedule::parse(cron).expect("test schedules parse");
    let zone = tz(zone);
    let mut at = ts(now);
    let mut out = Vec::new();
    for _ in 0..count {
        at = schedule.next_after(at, &zone).expect("a next time exists");
        out.push(at.to_string());
    }
    out
}

#[test]
fn table_of_next_times() {
    // (cron, zone, now, expected next). 2024-01-01 is a Monday.
    let table = [
        // Sunday written as 0, 7 and SUN all mean the same day.
        (
            "0 2 * * 0",
            "UTC",
            "2024-01-01T00:00:00Z",
            "2024-01-07T02:00:00Z",
        ),
        (
            "0 2 * * 7",
            "UTC",
            "2024-01-01T00:00:00Z",
            "2024-01-07T02:00:00Z",
        ),
        (
            "0 2 * * SUN",
            "UTC",
            "2024-01-01T00:00:00Z",
            "2024-01-07T02:00:00Z",
        ),
        (
            "0 2 * * 6-7",
            "UTC",
            "2024-01-01T00:00:00Z",
            "2024-01-06T02:00:00Z",
        ),
        (
            "0 2 * * FRI-SUN",
            "UTC",
            "2024-01-06T03:00:00Z",
            "2024-01-07T02:00:00Z",
        ),
        // Month ends: the 31st skips months without one.
        (
            "0 0 31 * *",
            "UTC",
            "2024-01-31T00:00:00Z",
            "2024-03-31T00:00:00Z",
        ),
        (
            "0 0 31 * *",
            "UTC",
            "2024-05-31T00:00:01Z",
            "2024-07-31T00:00:00Z",
        ),
        (
            "0 0 30 * *",
            "UTC",
            "2024-01-30T00:00:00Z",
            "2024-03-30T00:00:00Z",
        ),
        (
            "@monthly",
            "UTC",
            "2024-01-31T12:00:00Z",
            "2024-02-01T00:00:00Z",
        ),
        // Leap years: Feb 29 every 4 years, but not in 2100.
        (
            "0 0 29 2 *",
            "UTC",
            "2024-03-01T00:00:00Z",
            "2028-02-29T00:00:00Z",
        ),
        (
            "0 0 29 2 *",
            "UTC",
            "2096-03-01T00:00:00Z",
            "2104-02-29T00:00:00Z",
        ),
        (
            "0 0 29 FEB *",
            "UTC",
            "2023-06-01T00:00:00Z",
            "2024-02-29T00:00:00Z",
        ),
        (
            "@yearly",
            "UTC",
            "2024-12-31T23:59:59Z",
            "2025-01-01T00:00:00Z",
        ),
        (
            "@annually",
            "UTC",
            "2024-06-15T00:00:00Z",
            "2025-01-01T00:00:00Z",
        ),
        (
            "@weekly",
            "UTC",
            "2024-01-01T00:00:00Z",
            "2024-01-07T00:00:00Z",
        ),
        (
            "@daily",
            "UTC",
            "2024-02-28T23:00:00Z",
            "2024-02-29T00:00:00Z",
        ),
        (
            "@midnight",
            "UTC",
            "2023-02-28T23:00:00Z",
            "2023-03-01T00:00:00Z",
        ),
        (
            "@hourly",
            "UTC",
            "2024-01-01T00:59:59.999Z",
            "2024-01-01T01:00:00Z",
        ),
        // Strictly after: `now` exactly on a slot yields the following slot.
        (
            "@hourly",
            "UTC",
            "2024-01-01T01:00:00Z",
            "2024-01-01T02:00:00Z",
        ),
        // Both day fields restricted: EITHER matches (13th OR Friday). 2024-09-01 is a Sunday.
        (
            "0 12 13 * 5",
            "UTC",
            "2024-09-01T00:00:00Z",
            "2024-09-06T12:00:00Z",
        ),
        (
            "0 12 13 * 5",
            "UTC",
            "2024-09-07T00:00:00Z",
            "2024-09-13T12:00:00Z",
        ),
        // A stepped day-of-month is restricted too (robfig/cron): odd days OR Fridays.
        (
            "0 12 */2 * 5",
            "UTC",
            "2024-09-01T13:00:00Z",
            "2024-09-03T12:00:00Z",
        ),
        // `*` day-of-month: the weekday alone decides.
        (
            "0 12 * * 5",
            "UTC",
            "2024-09-01T13:00:00Z",
            "2024-09-06T12:00:00Z",
        ),
        (
            "*/15 9-17 * * MON-FRI",
            "UTC",
            "2024-01-05T17:50:00Z",
            "2024-01-08T09:00:00Z",
        ),
        (
            "0/20 * * * *",
            "UTC",
            "2024-01-01T00:41:00Z",
            "2024-01-01T01:00:00Z",
        ),
        (
            "0 0 1 jan,Jul *",
            "UTC",
            "2024-01-02T00:00:00Z",
            "2024-07-01T00:00:00Z",
        ),
        // Time zones: 02:00 in Berlin winter is 01:00Z.
        (
            "0 2 * * *",
            "Europe/Berlin",
            "2024-01-01T00:00:00Z",
            "2024-01-01T01:00:00Z",
        ),
        (
            "0 2 * * *",
            "America/New_York",
            "2024-01-01T00:00:00Z",
            "2024-01-01T07:00:00Z",
        ),
        // Berlin spring forward 2025-03-30 02:00 CET -> 03:00 CEST: 02:30 does not exist that
        // day and is skipped (not moved to 03:00).
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2025-03-29T12:00:00Z",
            "2025-03-31T00:30:00Z",
        ),
        // 03:30 exists (CEST, +02:00).
        (
            "30 3 * * *",
            "Europe/Berlin",
            "2025-03-29T12:00:00Z",
            "2025-03-30T01:30:00Z",
        ),
        // Hourly over the gap: 01:00 CET then 03:00 CEST.
        (
            "0 * * * *",
            "Europe/Berlin",
            "2025-03-30T00:00:00Z",
            "2025-03-30T01:00:00Z",
        ),
        // Berlin fall back 2025-10-26 03:00 CEST -> 02:00 CET: 02:30 fires once, at CEST.
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2025-10-25T12:00:00Z",
            "2025-10-26T00:30:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2025-10-26T00:30:00Z",
            "2025-10-27T01:30:00Z",
        ),
        // New York spring forward 2025-03-09 02:00 EST -> 03:00 EDT.
        (
            "0 2 * * *",
            "America/New_York",
            "2025-03-08T12:00:00Z",
            "2025-03-10T06:00:00Z",
        ),
        (
            "0 * * * *",
            "America/New_York",
            "2025-03-09T06:30:00Z",
            "2025-03-09T07:00:00Z",
        ),
        // New York fall back 2025-11-02 02:00 EDT -> 01:00 EST: 01:30 fires at EDT only.
        (
            "30 1 * * *",
            "America/New_York",
            "2025-11-01T12:00:00Z",
            "2025-11-02T05:30:00Z",
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2025-11-02T05:30:00Z",
            "2025-11-03T06:30:00Z",
        ),
        // `now` inside the second pass (01:15 EST = 06:15Z): nothing of the repeated hour again.
        (
            "30 1 * * *",
            "America/New_York",
            "2025-11-02T06:15:00Z",
            "2025-11-03T06:30:00Z",
        ),
        (
            "*/15 * * * *",
            "America/New_York",
            "2025-11-02T06:15:00Z",
            "2025-11-02T07:00:00Z",
        ),
        // @every is anchored at the Unix epoch: 2024-01-01T00:00Z is a multiple of 90 minutes.
        (
            "@every 90m",
            "UTC",
            "2024-01-01T00:00:00Z",
            "2024-01-01T01:30:00Z",
        ),
        (
            "@every 1h30m",
            "Europe/Berlin",
            "2024-01-01T01:29:59Z",
            "2024-01-01T01:30:00Z",
        ),
        (
            "@every 7m",
            "UTC",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:07:00Z",
        ),
    ];
    for (cron, zone, now, expected) in table {
        assert_eq!(
            next(cron, zone, now),
            ts(expected),
            "{cron} in {zone} after {now}"
        );
    }
}

#[test]
fn berlin_fall_back_every_half_hour_fires_once_per_wall_clock_time() {
    // 02:00 and 02:30 CEST fire; their CET repeats (01:00Z, 01:30Z) do not.
    assert_eq!(
        sequence("*/30 * * * *", "Europe/Berlin", "2025-10-25T23:45:00Z", 4),
        [
            "2025-10-26T00:00:00Z",
            "2025-10-26T00:30:00Z",
            "2025-10-26T02:00:00Z",
            "2025-10-26T02:30:00Z"
        ]
    );
}

#[test]
fn new_york_spring_forward_hourly_sequence() {
    assert_eq!(
        sequence("0 * * * *", "America/New_York", "2025-03-09T05:30:00Z", 3),
        [
            "2025-03-09T06:00:00Z",
            "2025-03-09T07:00:00Z",
            "2025-03-09T08:00:00Z"
        ]
    );
}

#[test]
fn latest_at_or_before_table() {
    let table = [
        (
            "@hourly",
            "UTC",
            "2024-01-01T01:00:00Z",
            "2024-01-01T01:00:00Z",
        ),
        (
            "@hourly",
            "UTC",
            "2024-01-01T01:59:59Z",
            "2024-01-01T01:00:00Z",
        ),
        (
            "0 0 29 2 *",
            "UTC",
            "2027-01-01T00:00:00Z",
            "2024-02-29T00:00:00Z",
        ),
        // In New York's second pass of 01:xx the latest slot is the first-pass 01:45 EDT.
        (
            "*/15 * * * *",
            "America/New_York",
            "2025-11-02T06:15:00Z",
            "2025-11-02T05:45:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2025-03-30T12:00:00Z",
            "2025-03-29T01:30:00Z",
        ),
        (
            "@every 90m",
            "UTC",
            "2024-01-01T01:29:59Z",
            "2024-01-01T00:00:00Z",
        ),
    ];
    for (cron, zone, now, expected) in table {
        let schedule = Schedule::parse(cron).expect("parses");
        assert_eq!(
            schedule.latest_at_or_before(ts(now), &tz(zone)),
            Some(ts(expected)),
            "{cron} in {zone} at or before {now}"
        );
    }
}

#[test]
fn every_is_not_shifted_by_restarts() {
    // An operator that restarts at arbitrary moments asks from different `now`s; the slots it
    // sees are the same fixed grid.
    let schedule = Schedule::parse("@every 90m").expect("parses");
    let utc = TimeZone::UTC;
    let restarts = [
        "2024-03-05T10:01:00Z",
        "2024-03-05T10:17:33Z",
        "2024-03-05T10:29:59Z",
    ];
    for restart in restarts {
        assert_eq!(
            schedule.next_after(ts(restart), &utc),
            Some(ts("2024-03-05T10:30:00Z"))
        );
    }
    // Anchored at a job's creation time instead: slots are creation + k * 90m.
    let Schedule::Every(every) = schedule else {
        panic!("@every parses to Schedule::Every")
    };
    let anchored = every.anchored_at(ts("2024-03-05T08:10:00Z"));
    assert_eq!(
        anchored.next_after(ts("2024-03-05T10:01:00Z")),
        Some(ts("2024-03-05T11:10:00Z"))
    );
    assert_eq!(
        anchored.next_after(ts("2024-03-05T11:09:59Z")),
        Some(ts("2024-03-05T11:10:00Z"))
    );
    // Across DST the period stays absolute: 3 h after 00:30Z is 03:30Z whatever Berlin's clock says.
    let three_hours = Schedule::parse("@every 3h").expect("parses");
    assert_eq!(
        three_hours.next_after(ts("2025-03-30T00:30:00Z"), &tz("Europe/Berlin")),
        Some(ts("2025-03-30T03:00:00Z"))
    );
}

#[test]
fn croner_alone_has_other_dst_rules_which_we_override() {
    // Why we wrap croner: on its own it moves a fixed time out of the spring-forward gap and
    // fires interval jobs in both passes of the repeated hour. Our rules: skip, and fire once.
    let berlin = tz("Europe/Berlin");
    let raw: croner::Cron = "30 2 * * *".parse().expect("croner parses");
    let before_gap = ts("2025-03-29T12:00:00Z").to_zoned(berlin.clone());
    let croner_next = raw
        .find_next_occurrence(&before_gap, false)
        .expect("croner finds one");
    assert_eq!(croner_next.timestamp(), ts("2025-03-30T01:00:00Z")); // 03:00 CEST
    assert_eq!(
        next("30 2 * * *", "Europe/Berlin", "2025-03-29T12:00:00Z"),
        ts("2025-03-31T00:30:00Z")
    );

    let raw: croner::Cron = "*/30 * * * *".parse().expect("croner parses");
    let mut at = ts("2025-10-26T00:15:00Z").to_zoned(berlin.clone());
    let mut croner_firings = Vec::new();
    for _ in 0..4 {
        at = raw
            .find_next_occurrence(&at, false)
            .expect("croner finds one");
        croner_firings.push(at.timestamp().to_string());
    }
    // 02:30 CEST, 02:00 CET, 02:30 CET, 03:00 CET: the repeated wall-clock times fire twice.
    assert_eq!(
        croner_firings,
        [
            "2025-10-26T00:30:00Z",
            "2025-10-26T01:00:00Z",
            "2025-10-26T01:30:00Z",
            "2025-10-26T02:00:00Z"
        ]
    );
    assert_eq!(
        sequence("*/30 * * * *", "Europe/Berlin", "2025-10-26T00:15:00Z", 2),
        ["2025-10-26T00:30:00Z", "2025-10-26T02:00:00Z"]
    );
}

#[test]
fn bundled_time_zone_database_has_the_zones() {
    // The bundled copy is what resolves names on a machine without /usr/share/zoneinfo.
    let bundled = jiff::tz::TimeZoneDatabase::bundled();
    for name in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "UTC",
    ] {
        assert!(
            bundled.get(name).is_ok(),
            "{name} missing from the bundled tzdb"
        );
    }
}
