//! `next_after` for 10,000 jobs, against croner's raw `find_next_occurrence` on `jiff::Zoned`
//! (same expressions, same zones, measured in the same run) as the named baseline.
//!
//! Run: `cargo bench -p recurring --bench next_after`. Prints ns per call and the ratio
//! ours / croner. Our call does more than the baseline (wall-clock search, then our DST rules:
//! gap skip and fold-once), so a ratio a little above 1 is expected.

use std::hint::black_box;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use recurring::{Schedule, resolve_time_zone};

const JOBS: usize = 10_000;
const ROUNDS: usize = 7;

/// A small deterministic generator, so every run measures the same jobs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn expression(rng: &mut Lcg) -> String {
    let minute = rng.next(60);
    let hour = rng.next(24);
    match rng.next(8) {
        0 => format!("{minute} {hour} * * *"),
        1 => format!("*/{} * * * *", 1 + rng.next(30)),
        2 => format!("{minute} */{} * * *", 1 + rng.next(6)),
        3 => format!("{minute} {hour} * * {}", rng.next(8)),
        4 => format!("{minute} {hour} 1,15 * *"),
        5 => format!("{minute} {hour} * * MON-FRI"),
        6 => format!("{minute} {hour} {} * *", 1 + rng.next(31)),
        _ => format!("{minute} 1-3 * * *"),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let zones: Vec<TimeZone> = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kathmandu"]
        .into_iter()
        .map(|name| resolve_time_zone(Some(name)).expect("bundled zone"))
        .collect();
    let mut rng = Lcg(0x5eed);
    let mut ours = Vec::with_capacity(JOBS);
    let mut baseline = Vec::with_capacity(JOBS);
    for index in 0..JOBS {
        let text = expression(&mut rng);
        let zone = zones[index % zones.len()].clone();
        let schedule = Schedule::parse(&text).expect("generated expressions are valid");
        let croner: croner::Cron = text.parse().expect("croner parses the same expressions");
        ours.push((schedule, zone.clone()));
        baseline.push((croner, zone));
    }
    // Spread "now" over a year that includes both DST changes.
    let base = Timestamp::from_second(1_735_689_600).expect("2025-01-01"); // 2025-01-01T00:00Z
    let nows: Vec<Timestamp> = (0..JOBS)
        .map(|_| base + jiff::SignedDuration::from_secs(rng.next(365 * 86_400) as i64))
        .collect();

    let mut ours_samples = Vec::new();
    let mut baseline_samples = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for ((schedule, zone), now) in ours.iter().zip(&nows) {
            black_box(schedule.next_after(black_box(*now), zone));
        }
        ours_samples.push(start.elapsed());

        let start = Instant::now();
        for ((cron, zone), now) in baseline.iter().zip(&nows) {
            let zoned = now.to_zoned(zone.clone());
            black_box(cron.find_next_occurrence(black_box(&zoned), false).ok());
        }
        baseline_samples.push(start.elapsed());
    }
    let ours_ns = median(ours_samples).as_nanos() as f64 / JOBS as f64;
    let baseline_ns = median(baseline_samples).as_nanos() as f64 / JOBS as f64;
    println!(
        "next_after, {JOBS} jobs x {ROUNDS} rounds (median round), 4 zones, now spread over 2025"
    );
    println!("  recurring::Schedule::next_after          {ours_ns:>9.0} ns/call");
    println!("  baseline croner find_next_occurrence(Zoned) {baseline_ns:>6.0} ns/call");
    println!(
        "  ratio ours / croner                      {:>9.2}",
        ours_ns / baseline_ns
    );
}
