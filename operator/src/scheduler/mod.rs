//! The recurring-job scheduler: runs every RecurringJob of the operator's namespace on its
//! schedule, in-process (no CronJob pods), only while this replica leads.
//!
//! # Schedule state (restart and leader-change safety)
//! Everything that decides what runs lives in the job's status, written with server-side apply
//! under the field manager [`MANAGER`], never in memory only:
//! - `nextRunAt` is the watermark of `recurring::decide_run`: every slot before it has been dealt
//!   with. It is written BEFORE the scheduler waits for it, so a new leader decides exactly what
//!   the old one would have. `observedGeneration` says for which spec it was computed; when the
//!   spec changed and the watermark does not fit the new `cron`/`timeZone`, it is discarded
//!   (`job::watermark`).
//! - Starting a run is one status write (the *claim*): `nextRunAt` = the slot after, `lastRunSlot`
//!   = the slot, condition `Running=True`. It carries `metadata.resourceVersion` as a precondition,
//!   so two replicas that both think they lead cannot both claim a slot (the loser gets 409).
//! - A run ends with one status write: `lastRunAt`, `lastResult`, `lastRunVolumes`,
//!   `lastSuccessAt`, `consecutiveFailures`, `executionCount` and `Running=False`.
//! - A job found with `Running=True` that this process does not run was interrupted (crash,
//!   restart, leader change): the run for `lastRunSlot` is resumed, not repeated. Every artifact
//!   a run creates carries the annotation [`SLOT_ANNOTATION`] = its slot, so the resumed run finds
//!   what was already created (by the label `RecurringJob=<job>`) and waits for it instead of
//!   creating another. So a restart between persisting `nextRunAt` and firing neither loses
//!   nor doubles a run.
//!
//! `suspend: true` stops new runs: due slots only advance `nextRunAt`, so resuming the job does
//! not fire a stale slot. Runs of one job never overlap: a job is not looked at while its run is
//! in flight; a slot that came due meanwhile runs when it finishes (older ones count as missed).
//!
//! # A run
//! Volumes of the namespace are bound by labels (`recurring::selection`); standby, restoring
//! (`state: Restoring`) and — unless `allow-recurring-job-while-volume-detached` — volumes that
//! are not `Ready` are skipped with that reason. `snapshot`/`backup` tasks create one Snapshot /
//! Backup per volume (names and labels of `recurring::naming`), at most `concurrency` volumes at
//! once, wait for them, then apply retention to the job's own artifacts of those volumes
//! (`recurring::plan_retention`: never the newest good one, never a snapshot an unfinished
//! Backup reads, never a backup a standby volume follows). `full-backup-interval: N` makes every
//! Nth backup of a volume `backupMode: full` (the number is kept in [`BACKUP_NUMBER_ANNOTATION`]).
//! `snapshot-cleanup`/`snapshot-delete` delete Snapshot objects per `recurring::snapshot_tasks`.
//!
//! # Skip-if-unchanged: the contract with the agent
//! The scheduler decides with `recurring::decide_skip` what it can know without the volume's
//! data: `*-force-create` (always create), the job's first artifact of the volume, and
//! `force-after` (from the age of the job's newest completed artifact of the volume). Those
//! artifacts are created plainly. When the answer depends on the data, the Snapshot/Backup is
//! created with annotation [`SKIP_IF_UNCHANGED_ANNOTATION`] = `"<min-changed-bytes>"` (an integer,
//! `"0"` = skip only when nothing changed). The agent, at the moment it would take the snapshot
//! (for a Backup: when nothing changed since the snapshot its volume's last backup was taken
//! from, and that snapshot is the newest), checks the engine; when fewer bytes than that changed
//! (or none), it creates NOTHING (no engine snapshot, no upload) and sets condition `Ready`
//! (Snapshot) or `Completed` (Backup) to `False` with reason `Skipped` and a message starting
//! with `Unchanged` or `BelowThreshold` (`recurring::SkipReason::as_str`). The scheduler then
//! counts the volume as skipped with that reason, deletes the object, and never counts it for
//! retention (a leftover skipped object is treated as failed: it takes no retention slot). Only
//! the agent touches data and only the scheduler deletes, so there is no race between the two;
//! the agent must therefore add its data finalizer only once it decided to create, or remove
//! it when it skips. Without the annotation the agent never skips.

mod job;
mod runner;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crd_types::RecurringJob;
use crd_types::common::Time;
use crd_types::recurring_job::RecurringJobStatus;
use jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use recurring::RunDecision;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::controllers::Context;
use crate::metrics::ErrorCategory;

pub use job::{FULL_BACKUP_INTERVAL, RUNNING, VALID, task};

/// Field manager of every status write of the scheduler.
pub const MANAGER: &str = "bulwark-scheduler";
/// Annotation on a Snapshot/Backup the agent must skip when the volume changed less than this
/// many bytes (see the module docs).
pub const SKIP_IF_UNCHANGED_ANNOTATION: &str = "bulwark.io/skip-if-unchanged";
/// Annotation on a job's artifact: the slot (RFC 3339) of the run that created it.
pub const SLOT_ANNOTATION: &str = "bulwark.io/recurring-job-slot";
/// Annotation on a job's Backup: its number among the job's backups of the volume (1, 2, ...).
pub const BACKUP_NUMBER_ANNOTATION: &str = "bulwark.io/recurring-job-backup-number";
/// Condition reason the agent sets on a skipped artifact.
pub const SKIPPED_REASON: &str = "Skipped";

const CONTROLLER: &str = "recurring-job";

/// Where "now" comes from: the wall clock in production, a virtual one in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Fills the buffer with random bytes (artifact names).
pub type Random = Arc<dyn Fn(&mut [u8]) -> std::io::Result<()> + Send + Sync>;

/// Random bytes from the operating system.
pub fn os_random(buffer: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buffer)
}

/// Timing of the scheduler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Re-list the jobs at least this often (new and edited jobs are seen within it).
    pub resync: Duration,
    /// Look at the job cache this often and re-list when it changed (`None`: never).
    pub cache_check: Option<Duration>,
    /// Re-read the wall clock at least this often while waiting (it may jump against the
    /// monotonic clock tokio sleeps on).
    pub max_sleep: Duration,
    /// Retry a failed job listing or status write after this long.
    pub retry: Duration,
    pub snapshot_poll: Duration,
    pub backup_poll: Duration,
    /// A Snapshot not ready after this long counts as failed for the run (it is left in place).
    pub snapshot_timeout: Duration,
    /// A Backup not Completed/Error after this long counts as failed for the run.
    pub backup_timeout: Duration,
}

impl Settings {
    pub fn new(resync: Duration) -> Settings {
        Settings {
            resync,
            cache_check: Some(Duration::from_secs(2)),
            max_sleep: Duration::from_secs(60),
            retry: Duration::from_secs(5),
            snapshot_poll: Duration::from_secs(2),
            backup_poll: Duration::from_secs(10),
            snapshot_timeout: Duration::from_secs(15 * 60),
            backup_timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// The scheduler of one leader term.
pub struct Scheduler {
    ctx: Arc<Context>,
    clock: Arc<dyn Clock>,
    random: Random,
    settings: Settings,
    namespace: String,
}

/// Started by `controllers::run` while this replica leads; returns when `stop` fires.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let resync = ctx.config.poll_interval.max(Duration::from_secs(5));
    let scheduler = Scheduler::new(
        ctx,
        Arc::new(SystemClock),
        Arc::new(os_random),
        Settings::new(resync),
    );
    Arc::new(scheduler).run(stop).await;
}

/// What to do with one job after looking at it.
enum Next {
    /// Look again at this time.
    WaitUntil(Timestamp),
    /// Nothing to wait for (invalid, exhausted).
    Idle,
    /// A run was claimed: start it.
    Start(Box<runner::Run>),
}

impl Scheduler {
    pub fn new(
        ctx: Arc<Context>,
        clock: Arc<dyn Clock>,
        random: Random,
        settings: Settings,
    ) -> Scheduler {
        let namespace = ctx.config.common.namespace.clone();
        Scheduler {
            ctx,
            clock,
            random,
            settings,
            namespace,
        }
    }

    fn jobs(&self) -> Api<RecurringJob> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// The main loop: list the jobs, decide each, sleep until the earliest due slot (or a run
    /// finished, or the job cache changed, or the resync interval passed).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        // A finished run reports its job's name; the loop then looks at the job again at once.
        let (finished, mut done) = mpsc::unbounded_channel::<String>();
        let mut known: BTreeSet<String> = BTreeSet::new();
        let mut cache_seen = self.cache_fingerprint();
        loop {
            while let Ok(name) = done.try_recv() {
                running.remove(&name);
            }
            // A run that panicked never reports; it is seen as finished here.
            running.retain(|_, handle| !handle.is_finished());
            let started = std::time::Instant::now();
            // Stopping wins over everything, also in the middle of a pass: every decision is
            // in the API server already (a claimed but unstarted run is resumed by the next
            // leader).
            let outcome = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                outcome = self.tick(&mut running, &mut known, &finished, &stop) => Some(outcome),
            };
            let Some(outcome) = outcome else {
                for (_, handle) in running.drain() {
                    handle.abort();
                }
                return;
            };
            self.ctx.metrics.reconciled(
                CONTROLLER,
                started.elapsed().as_secs_f64(),
                outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(|_| ErrorCategory::Kubernetes),
            );
            let now = self.clock.now();
            let list_again = tokio::time::Instant::now()
                + match &outcome {
                    Ok(Some(due)) => to_std(now.duration_until(*due)).min(self.settings.resync),
                    Ok(None) => self.settings.resync,
                    Err(error) => {
                        tracing::warn!(%error, "cannot list or update recurring jobs, retrying");
                        self.settings.retry
                    }
                };
            let due = match &outcome {
                Ok(Some(due)) => Some(*due),
                _ => None,
            };
            // Wait without API calls until there is something to do.
            loop {
                let now_mono = tokio::time::Instant::now();
                if now_mono >= list_again || due.is_some_and(|due| self.clock.now() >= due) {
                    break;
                }
                let nap = (list_again - now_mono).min(self.settings.max_sleep);
                let nap = match self.settings.cache_check {
                    Some(check) => nap.min(check),
                    None => nap,
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        for (_, handle) in running.drain() {
                            handle.abort();
                        }
                        return;
                    }
                    Some(name) = done.recv() => {
                        running.remove(&name);
                        break;
                    }
                    _ = tokio::time::sleep(nap) => {}
                }
                let seen = self.cache_fingerprint();
                if seen != cache_seen {
                    cache_seen = seen;
                    break;
                }
            }
        }
    }

    /// Names and resource versions of the cached jobs: a change means a job was created,
    /// edited or deleted (or its status written).
    fn cache_fingerprint(&self) -> Vec<(String, Option<String>)> {
        if self.settings.cache_check.is_none() {
            return Vec::new();
        }
        let mut seen: Vec<_> = self
            .ctx
            .caches
            .recurring_jobs
            .state()
            .iter()
            .map(|job| (job.name_any(), job.resource_version()))
            .collect();
        seen.sort();
        seen
    }

    /// One pass over all jobs. Returns the earliest time a job needs looking at again.
    async fn tick(
        self: &Arc<Self>,
        running: &mut HashMap<String, JoinHandle<()>>,
        known: &mut BTreeSet<String>,
        finished: &mpsc::UnboundedSender<String>,
        stop: &CancellationToken,
    ) -> Result<Option<Timestamp>, kube::Error> {
        let jobs = self.jobs().list(&ListParams::default()).await?;
        let names: BTreeSet<String> = jobs.items.iter().map(|job| job.name_any()).collect();
        for gone in known.difference(&names) {
            if let Some(handle) = running.remove(gone) {
                handle.abort();
            }
            self.forget_metrics(gone);
        }
        *known = names;
        let mut earliest: Option<Timestamp> = None;
        let mut wake_at = |at: Timestamp| {
            earliest = Some(earliest.map_or(at, |e: Timestamp| e.min(at)));
        };
        for job in jobs.items {
            let name = job.name_any();
            if running.contains_key(&name) {
                continue;
            }
            let now = self.clock.now();
            match self.decide(&job, now).await {
                Ok(Next::WaitUntil(at)) => wake_at(at),
                Ok(Next::Idle) => {}
                Ok(Next::Start(run)) => {
                    let scheduler = self.clone();
                    let finished = finished.clone();
                    let stop = stop.clone();
                    let job = name.clone();
                    let handle = tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = scheduler.execute(*run) => {}
                        }
                        let _ = finished.send(job);
                    });
                    running.insert(name, handle);
                }
                Err(error) => {
                    tracing::warn!(%error, job = %name, "cannot schedule recurring job, retrying");
                    wake_at(
                        now + jiff::SignedDuration::try_from(self.settings.retry)
                            .unwrap_or_default(),
                    );
                }
            }
        }
        Ok(earliest)
    }

    fn forget_metrics(&self, job: &str) {
        let metrics = &self.ctx.metrics;
        let _ = metrics.recurring_job_next_run.remove_label_values(&[job]);
        let _ = metrics
            .recurring_job_last_success
            .remove_label_values(&[job]);
        for task in recurring::Task::ALL {
            for result in ["Succeeded", "PartiallyFailed", "Failed", "Skipped"] {
                let _ =
                    metrics
                        .recurring_job_runs
                        .remove_label_values(&[job, task.as_str(), result]);
            }
        }
        for reason in runner::SKIP_REASONS {
            let _ = metrics
                .recurring_job_volumes_skipped
                .remove_label_values(&[job, reason]);
        }
    }

    /// Looks at one job that is not running here: validate, resume an interrupted run, or
    /// decide the next slot (persisting it before waiting).
    async fn decide(&self, job: &RecurringJob, now: Timestamp) -> Result<Next, kube::Error> {
        let name = job.name_any();
        let generation = job.metadata.generation;
        let current = job.status.clone().unwrap_or_default();
        let spec = match job::validate(job) {
            Ok(spec) => spec,
            Err(message) => {
                let mut status = current.clone();
                status.next_run_at = None;
                status.observed_generation = generation;
                job::set_condition(
                    &mut status.conditions,
                    VALID,
                    false,
                    "InvalidSpec",
                    &message,
                    generation,
                    now,
                );
                if status != current {
                    self.write_status(&name, &status, None).await?;
                    self.ctx
                        .events
                        .warning(job, "InvalidSpec", format!("not scheduled: {message}"))
                        .await;
                }
                let _ = self
                    .ctx
                    .metrics
                    .recurring_job_next_run
                    .remove_label_values(&[&name]);
                return Ok(Next::Idle);
            }
        };
        if let Some(at) = &current.last_success_at {
            // Restores the gauge after a restart or leader change.
            self.ctx
                .metrics
                .recurring_job_last_success
                .with_label_values(&[&name])
                .set(at.0.as_second());
        }
        let mut status = current.clone();
        status.observed_generation = generation;
        job::set_condition(
            &mut status.conditions,
            VALID,
            true,
            "Valid",
            "the spec is valid",
            generation,
            now,
        );

        if let Some(slot) = job::unfinished_run(job.status.as_ref()) {
            // Interrupted run (crash, restart, leader change): resume it for the same slot.
            job::set_condition(
                &mut status.conditions,
                RUNNING,
                true,
                "Resumed",
                format!(
                    "resumed the run for slot {} at {}",
                    job::rfc3339(slot),
                    job::rfc3339(now)
                ),
                generation,
                now,
            );
            let claimed = self.claim(job, &status).await?;
            self.ctx
                .events
                .normal(
                    &claimed,
                    "RunResumed",
                    format!(
                        "resuming the interrupted run for slot {}",
                        job::rfc3339(slot)
                    ),
                )
                .await;
            return Ok(Next::Start(Box::new(runner::Run {
                job: claimed,
                spec,
                slot,
            })));
        }

        let recorded = job::watermark(job, &spec, now);
        let decision =
            recurring::decide_run(&spec.job.schedule, &spec.job.time_zone, recorded, now, None);
        match decision {
            RunDecision::Wait { next_run_at } => {
                status.next_run_at = Some(Time(next_run_at));
                if status != current {
                    self.write_status(&name, &status, None).await?;
                }
                self.set_next_run_metric(&name, next_run_at);
                Ok(Next::WaitUntil(next_run_at))
            }
            RunDecision::SkipMissed {
                latest_slot,
                missed,
                next_run_at,
            } => {
                // Only with a starting deadline, which RecurringJobs do not have; kept total.
                status.next_run_at = Some(Time(next_run_at));
                self.write_status(&name, &status, None).await?;
                self.set_next_run_metric(&name, next_run_at);
                self.ctx
                    .events
                    .warning(
                        job,
                        "MissedSlots",
                        format!(
                            "{} slot(s) up to {} were missed and not run",
                            missed.count,
                            job::rfc3339(latest_slot)
                        ),
                    )
                    .await;
                Ok(Next::WaitUntil(next_run_at))
            }
            RunDecision::Exhausted => {
                status.next_run_at = None;
                job::set_condition(
                    &mut status.conditions,
                    VALID,
                    false,
                    "ScheduleExhausted",
                    "spec.cron has no firing time left before the year 9999",
                    generation,
                    now,
                );
                if status != current {
                    self.write_status(&name, &status, None).await?;
                    self.ctx
                        .events
                        .warning(job, "ScheduleExhausted", "spec.cron never fires again")
                        .await;
                }
                Ok(Next::Idle)
            }
            RunDecision::RunNow {
                slot,
                missed,
                next_run_at,
            } => {
                status.next_run_at = Some(Time(next_run_at));
                self.set_next_run_metric(&name, next_run_at);
                if spec.suspend {
                    // Suspended: the slot passes without a run; nothing fires on resume.
                    self.write_status(&name, &status, None).await?;
                    tracing::info!(job = %name, slot = %slot, "recurring job suspended: slot not run");
                    return Ok(Next::WaitUntil(next_run_at));
                }
                status.last_run_slot = Some(Time(slot));
                job::set_condition(
                    &mut status.conditions,
                    RUNNING,
                    true,
                    "Started",
                    format!(
                        "run for slot {} started at {}",
                        job::rfc3339(slot),
                        job::rfc3339(now)
                    ),
                    generation,
                    now,
                );
                let claimed = self.claim(job, &status).await?;
                let lag = slot.duration_until(now).as_secs_f64().max(0.0);
                self.ctx.metrics.recurring_job_schedule_lag.observe(lag);
                if missed.count > 0 {
                    let more = if missed.saturated { " or more" } else { "" };
                    self.ctx
                        .events
                        .warning(
                            &claimed,
                            "MissedSlots",
                            format!(
                                "{}{more} earlier slot(s) were missed (operator not running or the previous run still busy); only the latest, {}, runs",
                                missed.count,
                                job::rfc3339(slot)
                            ),
                        )
                        .await;
                }
                Ok(Next::Start(Box::new(runner::Run {
                    job: claimed,
                    spec,
                    slot,
                })))
            }
        }
    }

    fn set_next_run_metric(&self, job: &str, at: Timestamp) {
        self.ctx
            .metrics
            .recurring_job_next_run
            .with_label_values(&[job])
            .set(at.as_second());
    }

    /// Server-side apply of the whole status (the scheduler owns every field of it), with
    /// `resourceVersion` as a precondition when given.
    async fn write_status(
        &self,
        name: &str,
        status: &RecurringJobStatus,
        resource_version: Option<String>,
    ) -> Result<RecurringJob, kube::Error> {
        let mut body = serde_json::json!({
            "apiVersion": RecurringJob::api_version(&()),
            "kind": RecurringJob::kind(&()),
            "status": status,
        });
        if let Some(version) = resource_version {
            body["metadata"] = serde_json::json!({ "name": name, "resourceVersion": version });
        }
        self.jobs()
            .patch_status(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
    }

    /// Writes the status that starts (or resumes) a run, conditional on the job not having
    /// changed since it was read.
    async fn claim(
        &self,
        job: &RecurringJob,
        status: &RecurringJobStatus,
    ) -> Result<RecurringJob, kube::Error> {
        self.write_status(&job.name_any(), status, job.resource_version())
            .await
    }
}

fn to_std(duration: jiff::SignedDuration) -> Duration {
    Duration::try_from(duration).unwrap_or(Duration::ZERO)
}
