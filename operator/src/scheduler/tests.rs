//! Scheduler tests: the real scheduler loop and runs on a paused tokio clock (the scheduler's
//! wall clock is derived from it), against the mock API server with every request and status
//! body asserted. The test plays the API server: it keeps the RecurringJob object and feeds each
//! status apply back, so the scheduler's persisted state is what it reads next.
#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Clock, Random, Scheduler, Settings};
use crate::controllers::Context;
use crate::controllers::testing::{self, ApiServer, Recorded, json_response};
use crate::events::Published;

const NS: &str = "bulwark-system";
const GROUP: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system";

/// Wall clock = a start time plus the (paused, auto-advancing) tokio clock's elapsed time.
struct VirtualClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        self.base + SignedDuration::try_from(self.start.elapsed()).unwrap()
    }
}

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// Deterministic "randomness": the n-th call fills every byte with n.
fn counter_random() -> Random {
    let counter = Arc::new(AtomicU8::new(0));
    Arc::new(move |buffer: &mut [u8]| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        buffer.fill(n);
        Ok(())
    })
}

fn settings() -> Settings {
    Settings {
        resync: Duration::from_secs(365 * 24 * 3600),
        cache_check: None,
        max_sleep: Duration::from_secs(60),
        retry: Duration::from_secs(5),
        snapshot_poll: Duration::from_secs(2),
        backup_poll: Duration::from_secs(10),
        snapshot_timeout: Duration::from_secs(15 * 60),
        backup_timeout: Duration::from_secs(3600),
    }
}

fn job(name: &str, task: &str, cron: &str, time_zone: &str, extra: Value) -> Value {
    let mut spec =
        json!({"task": task, "cron": cron, "timeZone": time_zone, "retain": 2, "concurrency": 1});
    if let Value::Object(extra) = extra {
        for (key, value) in extra {
            spec[key] = value;
        }
    }
    json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1,
                     "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": spec,
    })
}

fn volume(name: &str, labels: Value, state: &str, standby: bool) -> Value {
    let mut spec = json!({"size": "1Gi", "standby": standby});
    if standby {
        spec["fromBackup"] = json!(format!(
            "s3://b@r/p/?backup=backup-00000000000000aa&volume={name}"
        ));
    }
    json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": spec,
        "status": {"state": state, "ownerID": "node-1"},
    })
}

fn snapshot(name: &str, volume: &str, job: &str, created: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
        "metadata": {"name": name, "namespace": NS, "labels": {"RecurringJob": job},
                     "creationTimestamp": created},
        "spec": {"volume": volume, "labels": {"RecurringJob": job}},
        "status": {"readyToUse": ready, "creationTime": created},
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "bulwark.io/v1beta1", "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "100"}, "items": items})
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": at, "observedGeneration": 1})
}

struct Harness {
    server: ApiServer,
    ctx: Arc<Context>,
    events: Arc<Mutex<Vec<Published>>>,
    clock: Arc<VirtualClock>,
    job: Value,
    version: u64,
}

impl Harness {
    fn new(start: &str, job: Value) -> Harness {
        let (ctx, server, events) = testing::context();
        Harness {
            server,
            ctx: Arc::new(ctx),
            events,
            clock: Arc::new(VirtualClock {
                base: ts(start),
                start: tokio::time::Instant::now(),
            }),
            job,
            version: 1,
        }
    }

    fn name(&self) -> String {
        self.job["metadata"]["name"].as_str().unwrap().to_owned()
    }

    /// Starts a scheduler (a leader term); cancel the token to end it.
    fn start(&self) -> (CancellationToken, JoinHandle<()>) {
        let scheduler = Arc::new(Scheduler::new(
            self.ctx.clone(),
            self.clock.clone(),
            counter_random(),
            settings(),
        ));
        let stop = CancellationToken::new();
        let handle = tokio::spawn(scheduler.run(stop.clone()));
        (stop, handle)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn list_jobs(&mut self) {
        let request = self
            .server
            .expect(Method::GET, &format!("{GROUP}/recurringjobs"))
            .await;
        request.respond(json_response(
            StatusCode::OK,
            list("RecurringJob", vec![self.job.clone()]),
        ));
    }

    /// A status apply: checks the manager, keeps the applied status, returns the body.
    async fn apply_status(&mut self) -> Value {
        let request = self
            .server
            .expect(
                Method::PATCH,
                &format!("{GROUP}/recurringjobs/{}/status", self.name()),
            )
            .await;
        assert_eq!(request.query, "&force=true&fieldManager=bulwark-scheduler");
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        let body = request.json();
        if let Some(version) = body["metadata"]["resourceVersion"].as_str() {
            assert_eq!(
                version,
                self.version.to_string(),
                "the claim is conditional on the version read"
            );
        }
        self.job["status"] = body["status"].clone();
        self.version += 1;
        self.job["metadata"]["resourceVersion"] = json!(self.version.to_string());
        request.respond(json_response(StatusCode::OK, self.job.clone()));
        body
    }

    async fn expect(&mut self, method: Method, path: &str) -> Recorded {
        self.server.expect(method, &format!("{GROUP}/{path}")).await
    }

    async fn list_of(&mut self, plural: &str, kind: &str, query: &str, items: Vec<Value>) {
        let request = self.expect(Method::GET, plural).await;
        assert_eq!(request.query, query, "query of the {plural} listing");
        request.respond(json_response(StatusCode::OK, list(kind, items)));
    }

    /// A POST of an artifact: returns the body; the answer is the object as created.
    async fn create(&mut self, plural: &str) -> Value {
        let request = self.expect(Method::POST, plural).await;
        assert_eq!(request.query, "&fieldManager=bulwark-scheduler");
        let body = request.json();
        let mut created = body.clone();
        created["metadata"]["creationTimestamp"] = json!(super::job::rfc3339(self.now()));
        request.respond(json_response(StatusCode::CREATED, created));
        body
    }

    async fn get(&mut self, plural: &str, name: &str, object: Value) {
        let request = self.expect(Method::GET, &format!("{plural}/{name}")).await;
        request.respond(json_response(StatusCode::OK, object));
    }

    async fn delete(&mut self, plural: &str, name: &str) {
        let request = self
            .expect(Method::DELETE, &format!("{plural}/{name}"))
            .await;
        request.respond(json_response(
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
        ));
    }

    /// No request arrives for `wait` (virtual time).
    async fn quiet_for(&mut self, wait: Duration) {
        let next = tokio::time::timeout(wait, async {
            // Any request at all is a failure; `expect` would also assert its path.
            self.server.expect(Method::GET, "/nothing-expected").await
        })
        .await;
        assert!(next.is_err(), "no request expected");
    }

    fn events(&self) -> Vec<(bool, String, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.warning, e.reason.clone(), e.note.clone()))
            .collect()
    }
}

/// The first look at a new job persists its first slot before waiting.
async fn first_look(h: &mut Harness, next: &str) {
    h.list_jobs().await;
    let now = super::job::rfc3339(h.now());
    let body = h.apply_status().await;
    assert_eq!(
        body,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
            "status": {
                "nextRunAt": next,
                "conditions": [condition("Valid", "True", "Valid", "the spec is valid", &now)],
                "observedGeneration": 1,
            }
        })
    );
    assert_eq!(printed(&h.job, "Valid").as_deref(), Some("True"));
    assert_eq!(printed(&h.job, "Next Run").as_deref(), Some(next));
}

/// One run of a job that selects no volume: claim, list volumes, record the end, look again.
async fn empty_run(h: &mut Harness, slot: &str, next: &str) {
    h.list_jobs().await;
    let claim = h.apply_status().await;
    assert_eq!(
        super::job::rfc3339(h.now()),
        slot,
        "fires exactly at its slot"
    );
    assert_eq!(claim["status"]["nextRunAt"], json!(next));
    assert_eq!(claim["status"]["lastRunSlot"], json!(slot));
    assert_eq!(
        claim["status"]["conditions"][1],
        condition(
            "Running",
            "True",
            "Started",
            &format!("run for slot {slot} started at {slot}"),
            slot
        )
    );
    h.list_of("volumes", "Volume", "", vec![]).await;
    let end = h.apply_status().await;
    assert_eq!(end["status"]["lastResult"], json!("Skipped"));
    assert_eq!(end["status"]["lastRunSlot"], json!(slot));
    assert_eq!(end["status"]["nextRunAt"], json!(next));
    // The loop looks again once the run ended; the persisted slot is still ahead: no write.
    h.list_jobs().await;
}

#[tokio::test(start_paused = true)]
async fn slots_in_a_dst_zone_fire_once_each() {
    // Spring forward: 02:30 does not exist in Berlin on 2025-03-30, so that day has no slot.
    let mut h = Harness::new(
        "2025-03-28T12:00:00Z",
        job(
            "nightly",
            "snapshot",
            "30 2 * * *",
            "Europe/Berlin",
            json!({}),
        ),
    );
    let (stop, scheduler) = h.start();
    first_look(&mut h, "2025-03-29T01:30:00Z").await;
    empty_run(&mut h, "2025-03-29T01:30:00Z", "2025-03-31T00:30:00Z").await;
    empty_run(&mut h, "2025-03-31T00:30:00Z", "2025-04-01T00:30:00Z").await;
    assert_eq!(h.job["status"]["executionCount"], json!(2));
    stop.cancel();
    scheduler.await.unwrap();

    // Fall back: 02:30 happens twice on 2025-10-26 (CEST, then CET); it fires once, at the
    // first, and the next slot is 03:30 CET, two hours later.
    let mut h = Harness::new(
        "2025-10-25T23:10:00Z",
        job(
            "hourly",
            "snapshot",
            "30 * * * *",
            "Europe/Berlin",
            json!({}),
        ),
    );
    let (stop, scheduler) = h.start();
    first_look(&mut h, "2025-10-25T23:30:00Z").await;
    empty_run(&mut h, "2025-10-25T23:30:00Z", "2025-10-26T00:30:00Z").await;
    empty_run(&mut h, "2025-10-26T00:30:00Z", "2025-10-26T02:30:00Z").await;
    empty_run(&mut h, "2025-10-26T02:30:00Z", "2025-10-26T03:30:00Z").await;
    assert_eq!(h.job["status"]["executionCount"], json!(3));
    let lag = h.ctx.metrics.recurring_job_schedule_lag.get_sample_count();
    assert_eq!(lag, 3);
    assert_eq!(
        h.ctx.metrics.recurring_job_schedule_lag.get_sample_sum(),
        0.0
    );
    stop.cancel();
    scheduler.await.unwrap();
    let metrics = h.ctx.metrics.render();
    assert!(metrics.contains(
        "bulwark_recurring_job_runs_total{job=\"hourly\",result=\"Skipped\",task=\"snapshot\"} 3"
    ));
    assert!(metrics.contains(&format!(
        "bulwark_recurring_job_next_run_timestamp_seconds{{job=\"hourly\"}} {}",
        ts("2025-10-26T03:30:00Z").as_second()
    )));
}

fn persisted(next: &str, valid_since: &str) -> Value {
    json!({
        "nextRunAt": next,
        "conditions": [condition("Valid", "True", "Valid", "the spec is valid", valid_since)],
        "observedGeneration": 1,
    })
}

#[tokio::test(start_paused = true)]
async fn restarts_between_persisting_and_firing_neither_lose_nor_double_a_run() {
    let mut h = Harness::new(
        "2025-06-01T09:50:00Z",
        job("hourly", "snapshot", "0 * * * *", "UTC", json!({})),
    );
    let vol_a = volume(
        "vol-a",
        json!({"recurring-job.bulwark.io/hourly": "enabled"}),
        "Ready",
        false,
    );
    // Leader 1 persists the next slot, then loses leadership before it comes.
    let (stop, scheduler) = h.start();
    first_look(&mut h, "2025-06-01T10:00:00Z").await;
    stop.cancel();
    scheduler.await.unwrap();

    // Nobody leads until 10:05. Leader 2 finds the slot due, claims it and creates the snapshot,
    // then dies while waiting for it.
    tokio::time::sleep(Duration::from_secs(15 * 60)).await;
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let claim = h.apply_status().await;
    assert_eq!(
        claim,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
            "metadata": {"name": "hourly", "resourceVersion": "2"},
            "status": {
                "nextRunAt": "2025-06-01T11:00:00Z",
                "lastRunSlot": "2025-06-01T10:00:00Z",
                "conditions": [
                    condition("Valid", "True", "Valid", "the spec is valid", "2025-06-01T09:50:00Z"),
                    condition("Running", "True", "Started",
                        "run for slot 2025-06-01T10:00:00Z started at 2025-06-01T10:05:00Z",
                        "2025-06-01T10:05:00Z"),
                ],
                "observedGeneration": 1,
            }
        })
    );
    h.list_of("volumes", "Volume", "", vec![vol_a.clone()])
        .await;
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dhourly",
        vec![],
    )
    .await;
    let name = recurring::naming::snapshot_name("hourly", [1; 16]);
    let created = h.create("snapshots").await;
    assert_eq!(
        created,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
            "metadata": {
                "name": name, "namespace": NS,
                "labels": {"RecurringJob": "hourly"},
                // The job's first artifact is taken whatever changed: no skip annotation.
                "annotations": {"bulwark.io/recurring-job-slot": "2025-06-01T10:00:00Z"},
            },
            "spec": {"volume": "vol-a", "labels": {"RecurringJob": "hourly"}},
        })
    );
    stop.cancel();
    scheduler.await.unwrap();

    // Leader 3 sees the interrupted run and resumes it for the same slot: it finds the snapshot
    // by its labels and slot annotation and waits for it instead of creating a second one.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let resume = h.apply_status().await;
    assert_eq!(resume["status"]["nextRunAt"], json!("2025-06-01T11:00:00Z"));
    assert_eq!(
        resume["status"]["conditions"][1],
        condition(
            "Running",
            "True",
            "Resumed",
            "resumed the run for slot 2025-06-01T10:00:00Z at 2025-06-01T10:06:00Z",
            "2025-06-01T10:05:00Z"
        )
    );
    h.list_of("volumes", "Volume", "", vec![vol_a.clone()])
        .await;
    let mut in_progress = created.clone();
    in_progress["metadata"]["creationTimestamp"] = json!("2025-06-01T10:05:00Z");
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dhourly",
        vec![in_progress.clone()],
    )
    .await;
    let mut ready = in_progress.clone();
    ready["status"] = json!({"readyToUse": true, "creationTime": "2025-06-01T10:05:01Z"});
    h.get("snapshots", &name, ready.clone()).await;
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dhourly",
        vec![ready],
    )
    .await;
    h.list_of("backups", "Backup", "", vec![]).await;
    let end = h.apply_status().await;
    assert_eq!(
        end["status"],
        json!({
            "nextRunAt": "2025-06-01T11:00:00Z",
            "lastRunSlot": "2025-06-01T10:00:00Z",
            "lastRunAt": "2025-06-01T10:06:02Z",
            "lastSuccessAt": "2025-06-01T10:06:02Z",
            "lastResult": "Succeeded",
            "lastRunVolumes": {"succeeded": 1, "failed": 0, "skipped": 0},
            "executionCount": 1,
            "consecutiveFailures": 0,
            "conditions": [
                condition("Valid", "True", "Valid", "the spec is valid", "2025-06-01T09:50:00Z"),
                condition("Running", "False", "Succeeded",
                    "snapshot run for slot 2025-06-01T10:00:00Z ended Succeeded: 1 succeeded, 0 failed, skipped 0",
                    "2025-06-01T10:06:02Z"),
            ],
            "observedGeneration": 1,
        })
    );
    assert!(end.get("metadata").is_none(), "only claims are conditional");
    // Back to waiting for 11:00; nothing else happens before it.
    h.list_jobs().await;
    h.quiet_for(Duration::from_secs(50 * 60)).await;
    stop.cancel();
    scheduler.await.unwrap();
    assert_eq!(
        h.events(),
        [
            (
                false,
                "RunResumed".to_owned(),
                "resuming the interrupted run for slot 2025-06-01T10:00:00Z".to_owned()
            ),
            (
                false,
                "RunSucceeded".to_owned(),
                "snapshot run for slot 2025-06-01T10:00:00Z ended Succeeded: 1 succeeded, 0 failed, skipped 0".to_owned()
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_interrupted_right_after_its_claim_is_resumed_once() {
    let mut h = Harness::new(
        "2025-06-01T10:00:00Z",
        job("hourly", "snapshot", "0 * * * *", "UTC", json!({})),
    );
    h.job["status"] = persisted("2025-06-01T10:00:00Z", "2025-06-01T09:00:00Z");
    let vol_a = volume(
        "vol-a",
        json!({"recurring-job.bulwark.io/hourly": "enabled"}),
        "Ready",
        false,
    );
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    h.apply_status().await;
    // The run's first request is never answered: the leader dies here.
    let _unanswered = h.expect(Method::GET, "volumes").await;
    stop.cancel();
    scheduler.await.unwrap();

    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let resume = h.apply_status().await;
    assert_eq!(
        resume["status"]["lastRunSlot"],
        json!("2025-06-01T10:00:00Z")
    );
    assert_eq!(
        resume["status"]["conditions"][1]["reason"],
        json!("Resumed")
    );
    h.list_of("volumes", "Volume", "", vec![vol_a]).await;
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dhourly",
        vec![],
    )
    .await;
    let created = h.create("snapshots").await;
    let name = created["metadata"]["name"].as_str().unwrap().to_owned();
    let mut ready = created.clone();
    ready["status"] = json!({"readyToUse": true, "creationTime": "2025-06-01T10:00:02Z"});
    h.get("snapshots", &name, ready.clone()).await;
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dhourly",
        vec![ready],
    )
    .await;
    h.list_of("backups", "Backup", "", vec![]).await;
    let end = h.apply_status().await;
    assert_eq!(end["status"]["executionCount"], json!(1));
    assert_eq!(end["status"]["lastResult"], json!("Succeeded"));
    h.list_jobs().await;
    h.quiet_for(Duration::from_secs(50 * 60)).await;
    stop.cancel();
    scheduler.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn skip_and_retention_decisions_show_in_status() {
    let mut h = Harness::new(
        "2025-06-01T02:00:00Z",
        job(
            "nightly",
            "snapshot",
            "0 2 * * *",
            "UTC",
            json!({"groups": ["default"], "labels": {"team": "db"},
                   "parameters": {"min-changed-bytes": "4Ki"}}),
        ),
    );
    h.job["status"] = persisted("2025-06-01T02:00:00Z", "2025-05-01T00:00:00Z");
    let volumes = vec![
        volume("vol-a", json!({}), "Ready", false),
        volume("vol-b", json!({}), "Ready", false),
        volume("vol-c", json!({}), "Ready", true),
        volume("vol-d", json!({}), "Pending", false),
        volume(
            "vol-e",
            json!({"recurring-job-group.bulwark.io/gold": "enabled"}),
            "Ready",
            false,
        ),
    ];
    let old: Vec<Value> = (1..=4)
        .map(|day| {
            snapshot(
                &format!("a{day}"),
                "vol-a",
                "nightly",
                &format!("2025-05-0{day}T02:00:00Z"),
                true,
            )
        })
        .collect();
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    h.apply_status().await;
    h.list_of("volumes", "Volume", "", volumes).await;
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dnightly",
        old.clone(),
    )
    .await;

    // vol-a has artifacts: only the agent can tell whether it changed, so the snapshot carries
    // the skip annotation with min-changed-bytes.
    let skipped = h.create("snapshots").await;
    let skipped_name = recurring::naming::snapshot_name("nightly", [1; 16]);
    assert_eq!(
        skipped["metadata"],
        json!({
            "name": skipped_name, "namespace": NS,
            "labels": {"RecurringJob": "nightly", "team": "db"},
            "annotations": {
                "bulwark.io/recurring-job-slot": "2025-06-01T02:00:00Z",
                "bulwark.io/skip-if-unchanged": "4096",
            },
        })
    );
    let mut agent_skipped = skipped.clone();
    agent_skipped["status"] = json!({"conditions": [condition(
        "Ready", "False", "Skipped", "BelowThreshold: 512 bytes changed, fewer than 4096",
        "2025-06-01T02:00:01Z")]});
    h.get("snapshots", &skipped_name, agent_skipped).await;
    h.delete("snapshots", &skipped_name).await;

    // vol-b has none: its first artifact is taken unconditionally.
    let first = h.create("snapshots").await;
    let first_name = recurring::naming::snapshot_name("nightly", [2; 16]);
    assert_eq!(first["metadata"]["name"], json!(first_name));
    assert_eq!(
        first["metadata"]["annotations"],
        json!({"bulwark.io/recurring-job-slot": "2025-06-01T02:00:00Z"})
    );
    let b1 = snapshot(
        &first_name,
        "vol-b",
        "nightly",
        "2025-06-01T02:00:04Z",
        true,
    );
    h.get("snapshots", &first_name, b1.clone()).await;

    // Retention (retain 2) for vol-a: a4 is the newest, a3 within the count, a1 is read by an
    // unfinished backup; only a2 goes.
    let mut current = old.clone();
    current.push(b1);
    h.list_of(
        "snapshots",
        "Snapshot",
        "&labelSelector=RecurringJob%3Dnightly",
        current,
    )
    .await;
    h.list_of(
        "backups",
        "Backup",
        "",
        vec![json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
            "metadata": {"name": "backup-00000000000000aa", "namespace": NS},
            "spec": {"volume": "vol-a", "snapshotName": "a1"},
            "status": {"state": "InProgress", "snapshotName": "a1"},
        })],
    )
    .await;
    h.delete("snapshots", "a2").await;

    let end = h.apply_status().await;
    assert_eq!(end["status"]["lastResult"], json!("Succeeded"));
    assert_eq!(
        end["status"]["lastRunVolumes"],
        json!({"succeeded": 1, "failed": 0, "skipped": 3,
               "skippedByReason": {"BelowThreshold": 1, "Detached": 1, "Standby": 1}})
    );
    h.list_jobs().await;
    stop.cancel();
    scheduler.await.unwrap();
    assert_eq!(
        h.events(),
        [
            (
                false,
                "RetentionDeleted".to_owned(),
                "retention (retain 2) deleted 1 Snapshot(s): a2".to_owned()
            ),
            (
                false,
                "VolumesSkipped".to_owned(),
                "skipped volumes: vol-a (BelowThreshold), vol-c (Standby), vol-d (Detached)"
                    .to_owned()
            ),
            (
                false,
                "RunSucceeded".to_owned(),
                "snapshot run for slot 2025-06-01T02:00:00Z ended Succeeded: 1 succeeded, 0 failed, skipped 1 BelowThreshold, 1 Detached, 1 Standby".to_owned()
            ),
        ]
    );
    let metrics = h.ctx.metrics.render();
    assert!(metrics.contains(
        "bulwark_recurring_job_volumes_skipped_total{job=\"nightly\",reason=\"BelowThreshold\"} 1"
    ));
}

#[tokio::test(start_paused = true)]
async fn every_nth_backup_is_full_and_a_failure_counts() {
    let mut h = Harness::new(
        "2025-06-03T02:00:00Z",
        job(
            "weekly",
            "backup",
            "0 2 * * *",
            "UTC",
            json!({"parameters": {"full-backup-interval": "2", "force-after": "24h"}}),
        ),
    );
    h.job["status"] = persisted("2025-06-03T02:00:00Z", "2025-05-01T00:00:00Z");
    let vol = volume(
        "vol-a",
        json!({"recurring-job.bulwark.io/weekly": "enabled"}),
        "Ready",
        false,
    );
    let previous = json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
        "metadata": {"name": "backup-00000000000000bb", "namespace": NS,
                     "labels": {"RecurringJob": "weekly"},
                     "annotations": {"bulwark.io/recurring-job-backup-number": "1"},
                     "creationTimestamp": "2025-06-01T02:00:00Z"},
        "spec": {"volume": "vol-a"},
        "status": {"state": "Completed", "backupCreatedAt": "2025-06-01T02:00:09Z"},
    });
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    h.apply_status().await;
    h.list_of("volumes", "Volume", "", vec![vol]).await;
    h.list_of(
        "backups",
        "Backup",
        "&labelSelector=RecurringJob%3Dweekly",
        vec![previous.clone()],
    )
    .await;
    // The newest backup is two days old (force-after 24h): no skip annotation; it is the
    // volume's 2nd backup of the job, so full.
    let created = h.create("backups").await;
    let name = recurring::naming::backup_name([1; 8]);
    assert_eq!(
        created,
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
            "metadata": {
                "name": name, "namespace": NS,
                "labels": {"RecurringJob": "weekly"},
                "annotations": {
                    "bulwark.io/recurring-job-slot": "2025-06-03T02:00:00Z",
                    "bulwark.io/recurring-job-backup-number": "2",
                },
            },
            "spec": {"volume": "vol-a", "labels": {"RecurringJob": "weekly"}, "backupMode": "full"},
        })
    );
    let mut failed = created.clone();
    failed["metadata"]["creationTimestamp"] = json!("2025-06-03T02:00:00Z");
    failed["status"] = json!({"state": "Error", "error": "backup target unavailable"});
    h.get("backups", &name, failed.clone()).await;
    h.list_of(
        "backups",
        "Backup",
        "&labelSelector=RecurringJob%3Dweekly",
        vec![previous, failed],
    )
    .await;
    // Retention: the failed backup takes no slot and goes; the completed one is the newest good.
    h.delete("backups", &name).await;
    let end = h.apply_status().await;
    assert_eq!(end["status"]["lastResult"], json!("Failed"));
    assert_eq!(end["status"]["consecutiveFailures"], json!(1));
    assert!(end["status"].get("lastSuccessAt").is_none());
    assert_eq!(
        end["status"]["lastRunVolumes"],
        json!({"succeeded": 0, "failed": 1, "skipped": 0})
    );
    h.list_jobs().await;
    stop.cancel();
    scheduler.await.unwrap();
    let events = h.events();
    assert_eq!(
        events[..2],
        [
            (
                false,
                "RetentionDeleted".to_owned(),
                format!("retention (retain 2) deleted 1 Backup(s): {name}")
            ),
            (
                true,
                "VolumeFailed".to_owned(),
                format!("volume vol-a: Backup {name} failed: backup target unavailable")
            )
        ]
    );
    assert!(events.iter().any(|e| e.0 && e.1 == "RunFailed"));
}

/// What `kubectl get recurringjobs` prints in `column` for `object`: the column's JSONPath, as
/// the CRD declares it, evaluated on the object (dotted fields and `[?(@.field=="value")]`
/// filters, the forms our columns use; anything else fails the test).
fn printed(object: &Value, column: &str) -> Option<String> {
    let crd = crd_types::crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == "RecurringJob")
        .unwrap();
    let columns = crd.spec.versions[0]
        .additional_printer_columns
        .clone()
        .unwrap_or_default();
    let path = columns
        .iter()
        .find(|c| c.name == column)
        .unwrap_or_else(|| panic!("RecurringJob has no printer column {column}"))
        .json_path
        .clone();
    let mut node = object.clone();
    let mut rest = path.as_str();
    while let Some(after_dot) = rest.strip_prefix('.') {
        let end = after_dot.find(['.', '[']).unwrap_or(after_dot.len());
        node = node.get(&after_dot[..end])?.clone();
        rest = &after_dot[end..];
        if let Some(filter) = rest.strip_prefix("[?(@.") {
            let (condition, after) = filter.split_once(")]").unwrap();
            let (field, wanted) = condition.split_once("==").unwrap();
            let wanted: Value = serde_json::from_str(wanted).unwrap();
            node = node
                .as_array()?
                .iter()
                .find(|item| item.get(field) == Some(&wanted))?
                .clone();
            rest = after;
        }
    }
    assert!(rest.is_empty(), "unsupported JSONPath {path}");
    Some(match node {
        Value::String(text) => text,
        other => other.to_string(),
    })
}

#[tokio::test(start_paused = true)]
async fn an_invalid_job_gets_a_condition_and_an_event_naming_the_field() {
    let mut h = Harness::new(
        "2025-06-01T00:00:00Z",
        job("broken", "snapshot", "0 25 * * *", "UTC", json!({})),
    );
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let body = h.apply_status().await;
    let message = body["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("spec.cron: "), "{message}");
    assert_eq!(
        body["status"],
        json!({
            "conditions": [condition("Valid", "False", "InvalidSpec", &message, "2025-06-01T00:00:00Z")],
            "observedGeneration": 1,
        })
    );
    // `kubectl get bwrj` shows that the job is not scheduled, and why (Next Run stays empty).
    assert_eq!(printed(&h.job, "Valid").as_deref(), Some("False"));
    assert_eq!(printed(&h.job, "Reason").as_deref(), Some("InvalidSpec"));
    assert_eq!(printed(&h.job, "Next Run"), None);
    h.quiet_for(Duration::from_secs(24 * 3600)).await;
    stop.cancel();
    scheduler.await.unwrap();
    assert_eq!(
        h.events(),
        [(
            true,
            "InvalidSpec".to_owned(),
            format!("not scheduled: {message}")
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_in_an_unknown_time_zone_shows_as_not_scheduled() {
    let mut h = Harness::new(
        "2025-06-01T00:00:00Z",
        job(
            "elsewhere",
            "snapshot",
            "0 2 * * *",
            "Mars/Olympus_Mons",
            json!({}),
        ),
    );
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let body = h.apply_status().await;
    let valid = &body["status"]["conditions"][0];
    assert_eq!(valid["type"], "Valid");
    assert!(
        valid["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.timeZone: "),
        "{valid}"
    );
    assert_eq!(printed(&h.job, "Valid").as_deref(), Some("False"));
    assert_eq!(printed(&h.job, "Reason").as_deref(), Some("InvalidSpec"));
    assert_eq!(printed(&h.job, "Next Run"), None);
    h.quiet_for(Duration::from_secs(24 * 3600)).await;
    stop.cancel();
    scheduler.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_suspended_job_advances_its_slot_without_running() {
    let mut h = Harness::new(
        "2025-06-01T10:00:00Z",
        job(
            "hourly",
            "snapshot",
            "0 * * * *",
            "UTC",
            json!({"suspend": true}),
        ),
    );
    h.job["status"] = persisted("2025-06-01T10:00:00Z", "2025-06-01T09:00:00Z");
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let body = h.apply_status().await;
    assert_eq!(
        body["status"],
        persisted("2025-06-01T11:00:00Z", "2025-06-01T09:00:00Z")
    );
    assert!(body.get("metadata").is_none());
    // At 11:00 the same: no run, only the watermark moves.
    h.list_jobs().await;
    let body = h.apply_status().await;
    assert_eq!(body["status"]["nextRunAt"], json!("2025-06-01T12:00:00Z"));
    stop.cancel();
    scheduler.await.unwrap();
    assert!(h.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_edited_schedule_replaces_a_watermark_that_does_not_fit() {
    // nextRunAt came from `0 2 * * *`; the user changed the cron to hourly (generation 2).
    let mut h = Harness::new(
        "2025-06-01T10:20:00Z",
        job("edited", "snapshot", "0 * * * *", "UTC", json!({})),
    );
    h.job["metadata"]["generation"] = json!(2);
    h.job["status"] = persisted("2025-06-02T02:00:00Z", "2025-06-01T00:00:00Z");
    let (stop, scheduler) = h.start();
    h.list_jobs().await;
    let body = h.apply_status().await;
    let mut expected = persisted("2025-06-01T11:00:00Z", "2025-06-01T00:00:00Z");
    expected["observedGeneration"] = json!(2);
    expected["conditions"][0]["observedGeneration"] = json!(2);
    assert_eq!(body["status"], expected);
    // And it fires at 11:00, not tomorrow at 02:00.
    h.list_jobs().await;
    let claim = h.apply_status().await;
    assert_eq!(
        claim["status"]["lastRunSlot"],
        json!("2025-06-01T11:00:00Z")
    );
    stop.cancel();
    scheduler.await.unwrap();
}
