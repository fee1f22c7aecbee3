//! Properties of the missed-run and retention decisions.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use recurring::retention::KeepReason;
use recurring::{
    Artifact, ArtifactState, RetentionPolicy, RunDecision, Schedule, decide_run, plan_retention,
    resolve_time_zone,
};

fn schedule_strategy() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "*/7 * * * *",
        "@hourly",
        "30 2 * * *",
        "0 */3 * * MON-FRI",
        "15,45 1-3 * * *",
        "@every 90m",
        "@every 7m",
    ])
}

proptest! {
    /// Simulates an operator that wakes up at random moments, sometimes restarts (asks again
    /// with the same persisted state) and sometimes crashes after persisting and before running.
    /// The clock may also jump backwards. No slot ever runs twice, runs are in slot order, and
    /// every decision is reproducible.
    #[test]
    fn no_slot_runs_twice_across_restarts(
        cron in schedule_strategy(),
        zone in proptest::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
        start in 1_700_000_000i64..1_800_000_000,
        steps in proptest::collection::vec((-4_000i64..20_000, any::<bool>()), 1..60),
        deadline in proptest::option::of(0i64..3_600),
    ) {
        let schedule = Schedule::parse(cron).unwrap();
        let time_zone = resolve_time_zone(Some(zone)).unwrap();
        let deadline = deadline.map(SignedDuration::from_secs);
        let mut now = Timestamp::from_second(start).unwrap();
        let mut watermark: Option<Timestamp> = None;
        let mut ran: Vec<Timestamp> = Vec::new();
        for (advance, restart) in steps {
            now += SignedDuration::from_secs(advance);
            let decision = decide_run(&schedule, &time_zone, watermark, now, deadline);
            if restart {
                // A restarted operator with the same persisted state decides the same.
                prop_assert_eq!(decide_run(&schedule, &time_zone, watermark, now, deadline), decision);
            }
            match decision {
                RunDecision::Wait { next_run_at } => {
                    prop_assert!(next_run_at > now);
                    prop_assert!(watermark.is_none_or(|w| next_run_at >= w), "watermark moved back");
                    watermark = Some(next_run_at);
                }
                RunDecision::RunNow { slot, next_run_at, .. } => {
                    prop_assert!(slot <= now && next_run_at > now);
                    prop_assert!(watermark.is_some_and(|w| slot >= w));
                    prop_assert!(ran.last().is_none_or(|last| *last < slot), "slot {} ran twice or out of order", slot);
                    if let Some(limit) = deadline {
                        prop_assert!(slot.duration_until(now) <= limit);
                    }
                    // Persist first, then run.
                    watermark = Some(next_run_at);
                    ran.push(slot);
                }
                RunDecision::SkipMissed { latest_slot, missed, next_run_at } => {
                    prop_assert!(deadline.is_some());
                    prop_assert!(missed.count >= 1 && latest_slot <= now && next_run_at > now);
                    watermark = Some(next_run_at);
                }
                RunDecision::Exhausted => prop_assert!(false, "schedules here never end"),
            }
        }
    }

    #[test]
    fn on_time_wakeups_run_every_slot(cron in schedule_strategy(), start in 1_700_000_000i64..1_800_000_000) {
        // An operator that wakes exactly at each nextRunAt runs every slot, in order, none missed.
        let schedule = Schedule::parse(cron).unwrap();
        let time_zone = TimeZone::UTC;
        let now = Timestamp::from_second(start).unwrap();
        let RunDecision::Wait { mut next_run_at } = decide_run(&schedule, &time_zone, None, now, None) else {
            panic!("a new job waits");
        };
        for _ in 0..20 {
            let expected_slot = next_run_at;
            match decide_run(&schedule, &time_zone, Some(next_run_at), next_run_at, Some(SignedDuration::ZERO)) {
                RunDecision::RunNow { slot, missed, next_run_at: next } => {
                    prop_assert_eq!(slot, expected_slot);
                    prop_assert_eq!(missed.count, 0);
                    prop_assert_eq!(Some(next), schedule.next_after(slot, &time_zone));
                    next_run_at = next;
                }
                other => prop_assert!(false, "expected a run, got {:?}", other),
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Item {
    id: u16,
    hours_ago: Option<i64>,
    state: ArtifactState,
    in_use: bool,
    pinned: bool,
}

fn item() -> impl Strategy<Value = Item> {
    (
        any::<u16>(),
        proptest::option::weighted(0.9, -5i64..2_000),
        prop_oneof![
            6 => Just(ArtifactState::Completed),
            1 => Just(ArtifactState::InProgress),
            1 => Just(ArtifactState::Failed),
        ],
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(id, hours_ago, state, in_use, pinned)| Item {
            id,
            hours_ago,
            state,
            in_use,
            pinned,
        })
}

fn items() -> impl Strategy<Value = Vec<Artifact<u16>>> {
    proptest::collection::vec(item(), 0..40).prop_map(|mut items| {
        items.sort_by_key(|i| i.id);
        items.dedup_by_key(|i| i.id);
        let now = now();
        items
            .into_iter()
            .map(|i| Artifact {
                id: i.id,
                created_at: i.hours_ago.map(|h| now - SignedDuration::from_hours(h)),
                state: i.state,
                in_use: i.in_use,
                pinned: i.pinned,
            })
            .collect()
    })
}

fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap()
}

proptest! {
    #[test]
    fn retention_invariants(
        artifacts in items(),
        retain in 1u32..10,
        retain_age_hours in proptest::option::of(1i64..1_000),
        shuffle_seed in any::<u64>(),
    ) {
        let policy = RetentionPolicy { retain, retain_age: retain_age_hours.map(SignedDuration::from_hours) };
        let plan = plan_retention(&policy, &artifacts, now());

        // Every artifact lands in exactly one list.
        prop_assert_eq!(plan.keep.len() + plan.delete.len(), artifacts.len());
        let deleted = |id: u16| plan.delete.contains(&id);

        // Never deleted: no timestamp, in progress, in use, pinned.
        for a in &artifacts {
            if a.created_at.is_none() || a.in_use || a.pinned || a.state == ArtifactState::InProgress {
                prop_assert!(!deleted(a.id), "{:?} deleted", a);
            }
        }
        // The newest successful artifact survives.
        let newest = artifacts
            .iter()
            .filter(|a| a.state == ArtifactState::Completed && a.created_at.is_some())
            .max_by_key(|a| (a.created_at, a.id));
        if let Some(newest) = newest {
            prop_assert!(!deleted(newest.id));
        }
        // Count rule: at least min(retain, successful) successful artifacts survive, and a
        // deleted successful artifact is older than `retain` surviving successful ones.
        let successful: Vec<&Artifact<u16>> = artifacts
            .iter()
            .filter(|a| a.state == ArtifactState::Completed && a.created_at.is_some())
            .collect();
        let kept_successful = successful.iter().filter(|a| !deleted(a.id)).count();
        prop_assert!(kept_successful >= successful.len().min(retain as usize));
        for a in successful.iter().filter(|a| deleted(a.id)) {
            let newer_kept = successful
                .iter()
                .filter(|b| (b.created_at, b.id) > (a.created_at, a.id) && !deleted(b.id))
                .count();
            prop_assert!(newer_kept >= retain as usize);
            // Age rule: nothing younger than retainAge is deleted.
            if let (Some(max_age), Some(created)) = (policy.retain_age, a.created_at) {
                prop_assert!(created.duration_until(now()) >= max_age);
            }
        }
        // Reasons agree with the facts.
        for (id, reason) in &plan.keep {
            let a = artifacts.iter().find(|a| a.id == *id).unwrap();
            match reason {
                KeepReason::NoTimestamp => prop_assert!(a.created_at.is_none()),
                KeepReason::InUse => prop_assert!(a.in_use),
                KeepReason::Pinned => prop_assert!(a.pinned),
                KeepReason::InProgress => prop_assert_eq!(a.state, ArtifactState::InProgress),
                _ => prop_assert_eq!(a.state, ArtifactState::Completed),
            }
        }

        // Independent of input order.
        let mut shuffled = artifacts.clone();
        let mut state = shuffle_seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(plan_retention(&policy, &shuffled, now()), plan.clone());

        // Idempotent: planning again on the survivors deletes nothing more.
        let survivors: Vec<Artifact<u16>> = artifacts.iter().filter(|a| !deleted(a.id)).cloned().collect();
        prop_assert!(plan_retention(&policy, &survivors, now()).delete.is_empty());
    }
}
