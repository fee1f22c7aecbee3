//! Schedules against an independent brute-force evaluator.
//!
//! The brute force walks the absolute time line minute by minute, reads the zone's wall clock,
//! and fires when the wall clock matches the fields (its own matcher, below) AND this instant is
//! the first one at which the clock shows that time. No croner, no gap/fold reasoning: DST rules
//! fall out of the definition. Default run: a few dozen random expressions over one year each.
//! Set `RECURRING_LONG_PROPTEST=1` for 1,000 expressions (or `=<n>` for n), best with `--release`.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use recurring::{Schedule, resolve_time_zone};

const ZONES: [&str; 9] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe", // 30-minute DST shift
    "Asia/Kathmandu",      // +05:45
    "Pacific/Chatham",     // +12:45 / +13:45
    "America/Santiago",    // DST at midnight
    "America/Havana",      // DST at 00:00/01:00
    "Pacific/Apia",
];

/// 48 cases by default; `RECURRING_LONG_PROPTEST=1` runs 1,000, `RECURRING_LONG_PROPTEST=<n>`
/// (n > 1) runs n.
fn cases() -> u32 {
    match std::env::var("RECURRING_LONG_PROPTEST") {
        Ok(value) => value.parse::<u32>().ok().filter(|n| *n > 1).unwrap_or(1000),
        Err(_) => 48,
    }
}

/// One field written in a random shape: `*`, `N`, `A-B`, `*/S`, `A-B/S`, `N/S` or a list.
fn field(min: u32, max: u32, hot: Vec<u32>) -> impl Strategy<Value = String> {
    let value = prop_oneof![
        3 => proptest::sample::select(hot),
        1 => min..=max,
    ];
    let element = prop_oneof![
        2 => value.clone().prop_map(|v| v.to_string()),
        1 => (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        1 => (1u32..=12).prop_map(|s| format!("*/{s}")),
        1 => (min..=max, min..=max, 1u32..=5).prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
        1 => (min..=max, 1u32..=20).prop_map(|(a, s)| format!("{a}/{s}")),
    ];
    prop_oneof![
        2 => Just("*".to_string()),
        3 => proptest::collection::vec(element, 1..=3).prop_map(|parts| parts.join(",")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    (
        field(0, 59, vec![0, 15, 30, 45, 59]),
        // DST changes happen at 00:00-03:00 local: bias the hours there.
        field(0, 23, vec![0, 1, 2, 3, 23]),
        field(1, 31, vec![1, 29, 30, 31]),
        field(1, 12, vec![2, 3, 4, 9, 10, 11]),
        field(0, 7, vec![0, 6, 7]),
    )
        .prop_map(|(m, h, dom, mon, dow)| format!("{m} {h} {dom} {mon} {dow}"))
}

/// A from-scratch matcher for the numeric dialect the strategy emits.
struct BruteForce {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    dom_star: bool,
    dow_star: bool,
}

/// (year, month, day) from days since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl BruteForce {
    fn new(expression: &str) -> BruteForce {
        let fields: Vec<&str> = expression.split(' ').collect();
        // robfig/cron: a field is unrestricted when an element is `*` with no step above 1.
        let star = |text: &str| {
            text.split(',')
                .any(|element| element == "*" || element == "*/1")
        };
        let set = |text: &str, min: u32, max: u32| {
            let mut out = vec![false; 61];
            for element in text.split(',') {
                let (range, step) = match element.split_once('/') {
                    Some((range, step)) => (range, step.parse::<u32>().unwrap()),
                    None => (element, 1),
                };
                let (a, b) = if range == "*" {
                    (min, max)
                } else if let Some((a, b)) = range.split_once('-') {
                    (a.parse().unwrap(), b.parse().unwrap())
                } else {
                    let a: u32 = range.parse().unwrap();
                    (a, if element.contains('/') { max } else { a })
                };
                for v in (a..=b).step_by(step as usize) {
                    out[v as usize] = true;
                }
            }
            out
        };
        let mut weekdays = set(fields[4], 0, 7);
        weekdays[0] |= weekdays[7];
        BruteForce {
            minutes: set(fields[0], 0, 59),
            hours: set(fields[1], 0, 23),
            days: set(fields[2], 1, 31),
            months: set(fields[3], 1, 12),
            weekdays,
            dom_star: star(fields[2]),
            dow_star: star(fields[4]),
        }
    }

    /// Whether the wall clock reading `wall_seconds` (seconds since 1970-01-01T00:00 on that
    /// clock) matches.
    fn matches(&self, wall_seconds: i64) -> bool {
        let days = wall_seconds.div_euclid(86_400);
        let in_day = wall_seconds.rem_euclid(86_400);
        let (_, month, day) = civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let dom = self.days[day as usize];
        let dow = self.weekdays[weekday];
        let day_ok = if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        };
        in_day % 60 == 0
            && self.minutes[(in_day / 60 % 60) as usize]
            && self.hours[(in_day / 3600) as usize]
            && self.months[month as usize]
            && day_ok
    }

    /// Every firing instant in `(start, end]`: walk the time line minute by minute, read the
    /// zone's clock, fire when the reading matches and the clock never showed it before
    /// (a reading at or below the highest one seen is the repeat after a fall-back).
    fn firings(&self, zone: &TimeZone, start: Timestamp, end: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        // Start a day early so the highest reading covers a repeated hour `start` sits in.
        let mut second = start.as_second().div_euclid(60) * 60 - 86_400;
        let mut offset = i64::from(
            zone.to_offset(Timestamp::from_second(second).unwrap())
                .seconds(),
        );
        let mut next_change = zone
            .following(Timestamp::from_second(second).unwrap())
            .next()
            .map_or(i64::MAX, |t| t.timestamp().as_second());
        let mut highest_reading = i64::MIN;
        while second <= end.as_second() {
            if second >= next_change {
                let at = Timestamp::from_second(second).unwrap();
                offset = i64::from(zone.to_offset(at).seconds());
                next_change = zone
                    .following(at)
                    .next()
                    .map_or(i64::MAX, |t| t.timestamp().as_second());
            }
            let reading = second + offset;
            if reading > highest_reading {
                if second > start.as_second() && self.matches(reading) {
                    out.push(Timestamp::from_second(second).unwrap());
                }
                highest_reading = reading;
            }
            second += 60;
        }
        out
    }
}

fn start_time() -> impl Strategy<Value = Timestamp> {
    // 2000-01-01 .. 2035-01-01, at any second (not only minute boundaries).
    (946_684_800i64..2_051_222_400).prop_map(|s| Timestamp::from_second(s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn next_after_matches_brute_force_for_a_year(
        expression in expression(),
        zone in proptest::sample::select(ZONES.to_vec()),
        start in start_time(),
    ) {
        // Expressions that can never fire (e.g. `0 0 31 2 *`) are rejected at parse time.
        let Ok(schedule) = Schedule::parse(&expression) else {
            let brute = BruteForce::new(&expression);
            // ...and the brute force agrees that they never fire in 8 years of days.
            let mut day = Timestamp::from_second(946_684_800).unwrap();
            for _ in 0..(366 * 8) {
                let any = (0..24 * 60).any(|m| brute.matches(day.as_second() + m * 60));
                prop_assert!(!any, "{expression} was rejected but fires on {day}");
                day += SignedDuration::from_hours(24);
            }
            return Ok(());
        };
        let time_zone = resolve_time_zone(Some(zone)).unwrap();
        let end = start + SignedDuration::from_hours(24 * 366);
        let expected = BruteForce::new(&expression).firings(&time_zone, start, end);

        // From just before the window, the first firing.
        prop_assert_eq!(schedule.next_after(start, &time_zone), expected.first().copied().or_else(|| {
            schedule.next_after(start, &time_zone).filter(|next| *next > end)
        }));
        // From every firing (the long run) or a sample (default): the next firing, and from the
        // middle of each interval as well. The sample always includes every firing near a time
        // zone transition, where DST rules apply.
        let transitions: Vec<Timestamp> = time_zone
            .following(start)
            .take_while(|t| t.timestamp() <= end)
            .map(|t| t.timestamp())
            .collect();
        let check_all = std::env::var_os("RECURRING_LONG_PROPTEST").is_some() || expected.len() <= 400;
        let stride = (expected.len() / 200).max(1);
        for (index, pair) in expected.windows(2).enumerate() {
            let near_transition = transitions
                .iter()
                .any(|t| (pair[0] - SignedDuration::from_hours(26)..=pair[1] + SignedDuration::from_hours(26)).contains(t));
            if !(check_all || index % stride == 0 || near_transition) {
                continue;
            }
            let next = schedule.next_after(pair[0], &time_zone);
            prop_assert!(next.is_some_and(|next| next > pair[0]), "not strictly increasing after {}", pair[0]);
            prop_assert_eq!(next, Some(pair[1]), "{} in {}: next_after({})", expression, zone, pair[0]);
            let middle = pair[0] + pair[0].duration_until(pair[1]) / 2;
            prop_assert_eq!(schedule.next_after(middle, &time_zone), Some(pair[1]), "{} in {}: next_after({})", expression, zone, middle);
            // latest_at_or_before is the mirror image.
            prop_assert_eq!(schedule.latest_at_or_before(pair[1], &time_zone), Some(pair[1]));
            prop_assert_eq!(schedule.latest_at_or_before(middle, &time_zone), Some(pair[0]));
        }
        if let Some(last) = expected.last() {
            prop_assert!(schedule.next_after(*last, &time_zone).is_some_and(|next| next > end));
        }
    }

    #[test]
    fn next_after_is_strictly_increasing_and_every_is_a_grid(
        minutes in 1i64..=10_000,
        start in start_time(),
        offsets in proptest::collection::vec(0i64..=100_000_000, 1..8),
    ) {
        let schedule = Schedule::parse(&format!("@every {minutes}m")).unwrap();
        let period = minutes * 60;
        let utc = TimeZone::UTC;
        for offset in offsets {
            let now = start + SignedDuration::from_secs(offset);
            let next = schedule.next_after(now, &utc).unwrap();
            prop_assert!(next > now);
            prop_assert!(next - SignedDuration::from_secs(period) <= now);
            prop_assert_eq!(next.as_second().rem_euclid(period), 0);
            prop_assert_eq!(next.subsec_nanosecond(), 0);
        }
    }

    #[test]
    fn parser_never_panics(text in "\\PC{0,40}") {
        let _ = Schedule::parse(&text);
    }

    #[test]
    fn parser_never_panics_on_cron_like_text(
        text in "[0-9*/,\\-?A-Za-z#@ ]{0,30}"
    ) {
        let _ = Schedule::parse(&text);
    }
}
