//! One run of a RecurringJob: resolve the volumes, create or adopt one artifact per volume (at
//! most `concurrency` at once), wait for them, apply retention; or clean up snapshots. Ends with
//! the status write that clears the `Running` condition.

use std::collections::{BTreeMap, BTreeSet};

use crd_types::backup::{BackupSpec, BackupState};
use crd_types::common::{BackupMode, Time};
use crd_types::recurring_job::RunResult;
use crd_types::snapshot::SnapshotSpec;
use crd_types::volume::VolumeState;
use crd_types::{Backup, RecurringJob, Snapshot, Volume};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use recurring::retention::{Artifact, ArtifactState};
use recurring::selection::{Applicability, Exclusion, VolumeFacts, job_applies};
use recurring::snapshot_tasks::{VolumeSnapshot, plan_snapshot_cleanup, plan_snapshot_delete};
use recurring::task::ArtifactKind;
use recurring::{ChangeFacts, RunReason, SkipDecision, SkipReason, Task, naming};

use super::job::{self, Spec, VolumeOutcome};
use super::{
    BACKUP_NUMBER_ANNOTATION, MANAGER, RUNNING, SKIP_IF_UNCHANGED_ANNOTATION, SKIPPED_REASON,
    SLOT_ANNOTATION, Scheduler,
};

/// Every skip reason a run reports (metric label values).
pub const SKIP_REASONS: [&str; 5] = [
    "Unchanged",
    "BelowThreshold",
    "Standby",
    "Restoring",
    "Detached",
];

/// A claimed run.
pub struct Run {
    /// The job as the claim returned it.
    pub job: RecurringJob,
    pub spec: Spec,
    pub slot: Timestamp,
}

fn exclusion_str(exclusion: Exclusion) -> &'static str {
    match exclusion {
        Exclusion::Standby => "Standby",
        Exclusion::Restoring => "Restoring",
        Exclusion::Detached => "Detached",
    }
}

fn kind_str(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Snapshot => "Snapshot",
        ArtifactKind::Backup => "Backup",
    }
}

/// What the scheduler reads from one of the job's Snapshot or Backup objects.
#[derive(Debug, Clone)]
struct ArtifactView {
    name: String,
    volume: String,
    created_at: Option<Timestamp>,
    state: ArtifactState,
    /// The agent skipped it; the reason's name.
    skipped: Option<String>,
    error: Option<String>,
    slot: Option<Timestamp>,
    number: Option<u64>,
    deleting: bool,
}

fn skip_reason(message: &str) -> String {
    if message.starts_with(SkipReason::BelowThreshold.as_str()) {
        SkipReason::BelowThreshold.as_str().to_owned()
    } else {
        SkipReason::Unchanged.as_str().to_owned()
    }
}

fn skipped_by_agent(
    conditions: Option<&[crd_types::common::Condition]>,
    type_: &str,
) -> Option<String> {
    crate::status::find(conditions, type_)
        .filter(|c| c.status == "False" && c.reason == SKIPPED_REASON)
        .map(|c| skip_reason(&c.message))
}

fn common_view(meta: &ObjectMeta, volume: &str) -> ArtifactView {
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    ArtifactView {
        name: meta.name.clone().unwrap_or_default(),
        volume: volume.to_owned(),
        created_at: meta.creation_timestamp.as_ref().map(|t| t.0),
        state: ArtifactState::InProgress,
        skipped: None,
        error: None,
        slot: annotation(SLOT_ANNOTATION).and_then(|s| s.parse().ok()),
        number: annotation(BACKUP_NUMBER_ANNOTATION).and_then(|s| s.parse().ok()),
        deleting: meta.deletion_timestamp.is_some(),
    }
}

fn snapshot_view(snapshot: &Snapshot) -> ArtifactView {
    let mut view = common_view(&snapshot.metadata, &snapshot.spec.volume);
    let Some(status) = &snapshot.status else {
        return view;
    };
    if let Some(at) = &status.creation_time {
        view.created_at = Some(at.0);
    }
    view.skipped = skipped_by_agent(status.conditions.as_deref(), "Ready");
    view.error = status.error.clone().filter(|e| !e.is_empty());
    view.state = if view.skipped.is_some() || view.error.is_some() {
        // A skipped artifact holds no data: it never takes a retention slot.
        ArtifactState::Failed
    } else if status.ready_to_use == Some(true) {
        ArtifactState::Completed
    } else {
        ArtifactState::InProgress
    };
    view
}

fn backup_view(backup: &Backup) -> ArtifactView {
    let mut view = common_view(&backup.metadata, &backup.spec.volume);
    let Some(status) = &backup.status else {
        return view;
    };
    if let Some(at) = &status.backup_created_at {
        view.created_at = Some(at.0);
    }
    view.skipped = skipped_by_agent(status.conditions.as_deref(), "Completed");
    view.error = status.error.clone().filter(|e| !e.is_empty());
    view.state = match status.state {
        _ if view.skipped.is_some() => ArtifactState::Failed,
        Some(BackupState::Completed) => ArtifactState::Completed,
        Some(BackupState::Error) => {
            view.error
                .get_or_insert_with(|| "the backup failed".to_owned());
            ArtifactState::Failed
        }
        _ => ArtifactState::InProgress,
    };
    view
}

/// The `backup=` parameter of a backup URL.
fn backup_of_url(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("backup="))
}

fn unfinished(backup: &Backup) -> bool {
    !matches!(
        backup.status.as_ref().and_then(|s| s.state),
        Some(BackupState::Completed | BackupState::Error)
    )
}

fn backup_snapshot(backup: &Backup) -> Option<&str> {
    backup
        .status
        .as_ref()
        .and_then(|s| s.snapshot_name.as_deref())
        .or(backup.spec.snapshot_name.as_deref())
}

impl Scheduler {
    fn snapshots(&self) -> Api<Snapshot> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn backups(&self) -> Api<Backup> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn volumes(&self) -> Api<Volume> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    /// Carries out a claimed run and records its end in status, metrics and Events.
    pub(super) async fn execute(&self, run: Run) {
        let name = run.job.name_any();
        let task = run.spec.job.task;
        let (mut outcomes, run_error) = match self.perform(&run).await {
            Ok(outcomes) => (outcomes, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        let counts = job::count(&outcomes);
        let result = job::result(&counts, run_error.is_some());
        let result_name = job::result_str(result);
        let now = self.clock.now();

        for (volume, outcome) in &outcomes {
            match outcome {
                VolumeOutcome::Skipped(reason) => {
                    self.ctx
                        .metrics
                        .recurring_job_volumes_skipped
                        .with_label_values(&[&name, reason])
                        .inc();
                }
                VolumeOutcome::Failed(message) => {
                    self.ctx
                        .events
                        .warning(
                            &run.job,
                            "VolumeFailed",
                            format!("volume {volume}: {message}"),
                        )
                        .await;
                }
                VolumeOutcome::Succeeded => {}
            }
        }
        let skipped: Vec<String> = outcomes
            .iter()
            .filter_map(|(volume, outcome)| match outcome {
                VolumeOutcome::Skipped(reason) => Some(format!("{volume} ({reason})")),
                _ => None,
            })
            .collect();
        if !skipped.is_empty() {
            self.ctx
                .events
                .normal(
                    &run.job,
                    "VolumesSkipped",
                    format!("skipped volumes: {}", skipped.join(", ")),
                )
                .await;
        }
        let mut skipped_reasons: Vec<String> = counts
            .skipped_by_reason
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        if skipped_reasons.is_empty() {
            skipped_reasons.push("0".to_owned());
        }
        let mut summary = format!(
            "{task} run for slot {} ended {result_name}: {} succeeded, {} failed, skipped {}",
            job::rfc3339(run.slot),
            counts.succeeded,
            counts.failed,
            skipped_reasons.join(", ")
        );
        if let Some(error) = &run_error {
            summary.push_str(&format!("; {error}"));
        }
        let reason = format!("Run{result_name}");
        if matches!(result, RunResult::Failed | RunResult::PartiallyFailed) {
            self.ctx.events.warning(&run.job, &reason, &summary).await;
        } else {
            self.ctx.events.normal(&run.job, &reason, &summary).await;
        }
        self.ctx
            .metrics
            .recurring_job_runs
            .with_label_values(&[&name, task.as_str(), result_name])
            .inc();

        let generation = run.job.metadata.generation;
        let mut status = run.job.status.clone().unwrap_or_default();
        status.last_run_at = Some(Time(now));
        status.last_result = Some(result);
        status.last_run_volumes = Some(counts);
        status.execution_count = Some(status.execution_count.unwrap_or(0) + 1);
        let succeeded = matches!(result, RunResult::Succeeded | RunResult::Skipped);
        if succeeded {
            status.last_success_at = Some(Time(now));
            status.consecutive_failures = Some(0);
            self.ctx
                .metrics
                .recurring_job_last_success
                .with_label_values(&[&name])
                .set(now.as_second());
        } else {
            status.consecutive_failures = Some(status.consecutive_failures.unwrap_or(0) + 1);
        }
        job::set_condition(
            &mut status.conditions,
            RUNNING,
            false,
            result_name,
            summary,
            generation,
            now,
        );
        // The end must be recorded: until it is, a new leader would resume the run (which is
        // safe but repeats the waiting and retention).
        let mut delay = self.settings.retry;
        for attempt in 1..=5 {
            match self.write_status(&name, &status, None).await {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(error) => {
                    tracing::warn!(%error, job = %name, attempt, manager = MANAGER, "cannot record the end of a recurring-job run");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    /// The run's work: per-volume outcomes, or an error that failed the run as a whole.
    async fn perform(&self, run: &Run) -> Result<Vec<(String, VolumeOutcome)>, String> {
        let job_name = run.job.name_any();
        let volumes = self
            .volumes()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list volumes: {e}"))?
            .items;
        let allow_detached = self.ctx.config.allow_recurring_job_while_volume_detached;
        let mut outcomes = Vec::new();
        let mut targets: Vec<&Volume> = Vec::new();
        for volume in &volumes {
            if volume.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let state = volume.status.as_ref().and_then(|s| s.state);
            let facts = VolumeFacts {
                labels: volume.labels().clone(),
                attached: state == Some(VolumeState::Ready),
                standby: volume.spec.standby
                    || volume.status.as_ref().and_then(|s| s.is_standby) == Some(true),
                restoring: state == Some(VolumeState::Restoring),
            };
            match job_applies(&job_name, &run.spec.job.groups, &facts, allow_detached) {
                Applicability::Applies => targets.push(volume),
                Applicability::NotBound => {}
                Applicability::Excluded(exclusion) => outcomes.push((
                    volume.name_any(),
                    VolumeOutcome::Skipped(exclusion_str(exclusion).to_owned()),
                )),
            }
        }
        targets.sort_by_key(|v| v.name_any());
        match run.spec.job.task.creates() {
            Some(kind) => {
                outcomes.extend(self.create_artifacts(run, kind, &targets, &volumes).await?)
            }
            None => outcomes.extend(self.clean_snapshots(run, &targets, &volumes).await?),
        }
        Ok(outcomes)
    }

    async fn list_artifacts(
        &self,
        kind: ArtifactKind,
        job: &str,
    ) -> Result<Vec<ArtifactView>, String> {
        let params =
            ListParams::default().labels(&format!("{}={job}", naming::RECURRING_JOB_LABEL));
        let views = match kind {
            ArtifactKind::Snapshot => self
                .snapshots()
                .list(&params)
                .await
                .map(|list| list.items.iter().map(snapshot_view).collect()),
            ArtifactKind::Backup => self
                .backups()
                .list(&params)
                .await
                .map(|list| list.items.iter().map(backup_view).collect()),
        };
        views.map_err(|e| format!("cannot list the job's {}s: {e}", kind_str(kind)))
    }

    async fn create_artifacts(
        &self,
        run: &Run,
        kind: ArtifactKind,
        targets: &[&Volume],
        volumes: &[Volume],
    ) -> Result<Vec<(String, VolumeOutcome)>, String> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let job_name = run.job.name_any();
        let existing = self.list_artifacts(kind, &job_name).await?;
        let concurrency = usize::try_from(run.spec.job.concurrency)
            .unwrap_or(1)
            .max(1);
        // The futures are built eagerly (not in a stream closure) so the spawned run stays
        // `Send` for every lifetime.
        let mut work = Vec::with_capacity(targets.len());
        for volume in targets {
            let name = volume.name_any();
            let mine: Vec<ArtifactView> = existing
                .iter()
                .filter(|a| a.volume == name)
                .cloned()
                .collect();
            work.push(async move {
                let outcome = self.volume_run(run, kind, &name, &mine).await;
                (name, outcome)
            });
        }
        let outcomes: Vec<(String, VolumeOutcome)> = futures::stream::iter(work)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        if let Some(policy) = run.spec.job.retention
            && !targets.is_empty()
        {
            self.retain(run, kind, &policy, targets, volumes).await?;
        }
        Ok(outcomes)
    }

    /// One volume of a snapshot/backup run: adopt the slot's artifact if an interrupted run
    /// already created it, else decide and create one; then wait for it.
    async fn volume_run(
        &self,
        run: &Run,
        kind: ArtifactKind,
        volume: &str,
        mine: &[ArtifactView],
    ) -> VolumeOutcome {
        let adopted = mine
            .iter()
            .find(|a| a.slot == Some(run.slot) && !a.deleting);
        let name = match adopted {
            Some(artifact) => artifact.name.clone(),
            None => {
                let now = self.clock.now();
                let newest = mine
                    .iter()
                    .filter(|a| a.state == ArtifactState::Completed && !a.deleting)
                    .filter_map(|a| a.created_at)
                    .max();
                let facts = ChangeFacts {
                    // Only the agent can know; it decides with the annotation below.
                    changed_bytes: None,
                    newest_artifact_age: newest.map(|at| at.duration_until(now)),
                    newest_snapshot_backed_up: false,
                };
                let skip_threshold =
                    match recurring::decide_skip(run.spec.job.task, &facts, &run.spec.job.skip) {
                        SkipDecision::Skip(reason) => {
                            return VolumeOutcome::Skipped(reason.as_str().to_owned());
                        }
                        SkipDecision::Run(RunReason::ChangeUnknown) => {
                            Some(run.spec.job.skip.min_changed_bytes)
                        }
                        SkipDecision::Run(_) => None,
                    };
                let number = mine
                    .iter()
                    .filter(|a| a.skipped.is_none())
                    .filter_map(|a| a.number)
                    .max()
                    .unwrap_or(0)
                    + 1;
                match self
                    .create_artifact(run, kind, volume, skip_threshold, number)
                    .await
                {
                    Ok(name) => name,
                    Err(message) => return VolumeOutcome::Failed(message),
                }
            }
        };
        self.await_artifact(kind, &name).await
    }

    async fn create_artifact(
        &self,
        run: &Run,
        kind: ArtifactKind,
        volume: &str,
        skip_threshold: Option<u64>,
        number: u64,
    ) -> Result<String, String> {
        let job_name = run.job.name_any();
        let labels = naming::artifact_labels(&job_name, &run.spec.job.labels);
        let mut annotations =
            BTreeMap::from([(SLOT_ANNOTATION.to_owned(), job::rfc3339(run.slot))]);
        if let Some(threshold) = skip_threshold {
            annotations.insert(
                SKIP_IF_UNCHANGED_ANNOTATION.to_owned(),
                threshold.to_string(),
            );
        }
        let interval = run.spec.full_backup_interval;
        let full = kind == ArtifactKind::Backup && interval > 0 && number.is_multiple_of(interval);
        if kind == ArtifactKind::Backup {
            annotations.insert(BACKUP_NUMBER_ANNOTATION.to_owned(), number.to_string());
        }
        // A name collision (409) is retried with fresh randomness.
        let mut last_error = String::new();
        for _ in 0..3 {
            let name = match kind {
                ArtifactKind::Snapshot => {
                    let mut random = [0u8; 16];
                    (self.random)(&mut random)
                        .map_err(|e| format!("cannot read random bytes for a name: {e}"))?;
                    naming::snapshot_name(&job_name, random)
                }
                ArtifactKind::Backup => {
                    let mut random = [0u8; 8];
                    (self.random)(&mut random)
                        .map_err(|e| format!("cannot read random bytes for a name: {e}"))?;
                    naming::backup_name(random)
                }
            };
            let metadata = ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels.clone()),
                annotations: Some(annotations.clone()),
                ..ObjectMeta::default()
            };
            let params = PostParams {
                field_manager: Some(MANAGER.to_owned()),
                ..PostParams::default()
            };
            let created = match kind {
                ArtifactKind::Snapshot => {
                    let snapshot = Snapshot {
                        metadata,
                        spec: SnapshotSpec {
                            volume: volume.to_owned(),
                            labels: labels.clone(),
                        },
                        status: None,
                    };
                    self.snapshots()
                        .create(&params, &snapshot)
                        .await
                        .map(|_| ())
                }
                ArtifactKind::Backup => {
                    let backup = Backup {
                        metadata,
                        spec: BackupSpec {
                            volume: volume.to_owned(),
                            snapshot_name: None,
                            labels: labels.clone(),
                            backup_mode: full.then_some(BackupMode::Full),
                        },
                        status: None,
                    };
                    self.backups().create(&params, &backup).await.map(|_| ())
                }
            };
            match created {
                Ok(()) => return Ok(name),
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    last_error = format!("name {name} is taken");
                }
                Err(e) => return Err(format!("cannot create {} {name}: {e}", kind_str(kind))),
            }
        }
        Err(format!("cannot create a {}: {last_error}", kind_str(kind)))
    }

    /// Polls the artifact until it is done, failed or skipped (then deleted), or the timeout.
    async fn await_artifact(&self, kind: ArtifactKind, name: &str) -> VolumeOutcome {
        let (poll, timeout) = match kind {
            ArtifactKind::Snapshot => (self.settings.snapshot_poll, self.settings.snapshot_timeout),
            ArtifactKind::Backup => (self.settings.backup_poll, self.settings.backup_timeout),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::time::sleep(poll).await;
            let view = match kind {
                ArtifactKind::Snapshot => self
                    .snapshots()
                    .get_opt(name)
                    .await
                    .map(|s| s.as_ref().map(snapshot_view)),
                ArtifactKind::Backup => self
                    .backups()
                    .get_opt(name)
                    .await
                    .map(|b| b.as_ref().map(backup_view)),
            };
            match view {
                Ok(None) => {
                    return VolumeOutcome::Failed(format!(
                        "{} {name} was deleted before it finished",
                        kind_str(kind)
                    ));
                }
                Ok(Some(view)) => {
                    if let Some(reason) = view.skipped {
                        self.delete_artifact(kind, name).await.ok();
                        return VolumeOutcome::Skipped(reason);
                    }
                    match view.state {
                        ArtifactState::Completed => return VolumeOutcome::Succeeded,
                        ArtifactState::Failed => {
                            return VolumeOutcome::Failed(format!(
                                "{} {name} failed: {}",
                                kind_str(kind),
                                view.error.unwrap_or_default()
                            ));
                        }
                        ArtifactState::InProgress => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, artifact = name, "cannot read a recurring-job artifact, retrying");
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return VolumeOutcome::Failed(format!(
                    "{} {name} did not finish within {}s; it is left in place",
                    kind_str(kind),
                    timeout.as_secs()
                ));
            }
        }
    }

    async fn delete_artifact(&self, kind: ArtifactKind, name: &str) -> Result<(), String> {
        let result = match kind {
            ArtifactKind::Snapshot => self
                .snapshots()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            ArtifactKind::Backup => self
                .backups()
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(format!("cannot delete {} {name}: {e}", kind_str(kind))),
        }
    }

    /// Retention over the job's own artifacts of the run's volumes.
    async fn retain(
        &self,
        run: &Run,
        kind: ArtifactKind,
        policy: &recurring::RetentionPolicy,
        targets: &[&Volume],
        volumes: &[Volume],
    ) -> Result<(), String> {
        let job_name = run.job.name_any();
        let artifacts = self.list_artifacts(kind, &job_name).await?;
        let in_use: BTreeSet<(String, String)> = match kind {
            // Snapshots an unfinished Backup reads.
            ArtifactKind::Snapshot => self
                .backups()
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("cannot list backups: {e}"))?
                .items
                .iter()
                .filter(|b| unfinished(b))
                .filter_map(|b| backup_snapshot(b).map(|s| (b.spec.volume.clone(), s.to_owned())))
                .collect(),
            // Backups a standby volume follows.
            ArtifactKind::Backup => volumes
                .iter()
                .filter(|v| v.spec.standby)
                .flat_map(|v| {
                    let followed = v.spec.from_backup.as_deref().and_then(backup_of_url);
                    let restored = v
                        .status
                        .as_ref()
                        .and_then(|s| s.last_restored_backup.as_deref());
                    followed.into_iter().chain(restored)
                })
                .map(|backup| (String::new(), backup.to_owned()))
                .collect(),
        };
        let used = |a: &ArtifactView| match kind {
            ArtifactKind::Snapshot => in_use.contains(&(a.volume.clone(), a.name.clone())),
            ArtifactKind::Backup => in_use.contains(&(String::new(), a.name.clone())),
        };
        let now = self.clock.now();
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for volume in targets {
            let volume = volume.name_any();
            let candidates: Vec<Artifact<String>> = artifacts
                .iter()
                .filter(|a| a.volume == volume && !a.deleting)
                .map(|a| Artifact {
                    id: a.name.clone(),
                    created_at: a.created_at,
                    state: a.state,
                    in_use: used(a),
                    pinned: false,
                })
                .collect();
            let plan = recurring::plan_retention(policy, &candidates, now);
            for name in plan.delete {
                match self.delete_artifact(kind, &name).await {
                    Ok(()) => deleted.push(name),
                    Err(message) => failures.push(message),
                }
            }
        }
        if !deleted.is_empty() {
            self.ctx
                .events
                .normal(
                    &run.job,
                    "RetentionDeleted",
                    format!(
                        "retention (retain {}) deleted {} {}(s): {}",
                        policy.retain,
                        deleted.len(),
                        kind_str(kind),
                        deleted.join(", ")
                    ),
                )
                .await;
        }
        if !failures.is_empty() {
            self.ctx
                .events
                .warning(&run.job, "RetentionFailed", failures.join("; "))
                .await;
        }
        Ok(())
    }

    /// `snapshot-cleanup` / `snapshot-delete` over all Snapshot objects of each volume.
    async fn clean_snapshots(
        &self,
        run: &Run,
        targets: &[&Volume],
        volumes: &[Volume],
    ) -> Result<Vec<(String, VolumeOutcome)>, String> {
        let task = run.spec.job.task;
        if !matches!(task, Task::SnapshotCleanup | Task::SnapshotDelete) {
            // filesystem-trim and system-backup are not RecurringJob tasks (yet).
            return Ok(Vec::new());
        }
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let snapshots = self
            .snapshots()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list snapshots: {e}"))?
            .items;
        let backups = self
            .backups()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list backups: {e}"))?
            .items;
        let mut in_use: BTreeSet<(String, String)> = backups
            .iter()
            .filter(|b| unfinished(b))
            .filter_map(|b| backup_snapshot(b).map(|s| (b.spec.volume.clone(), s.to_owned())))
            .collect();
        // Snapshots a clone still copies from.
        for volume in volumes {
            let ready = volume.status.as_ref().and_then(|s| s.state) == Some(VolumeState::Ready);
            if let Some(rest) = volume
                .spec
                .data_source
                .as_deref()
                .and_then(|s| s.strip_prefix("snap://"))
                && let Some((source, snapshot)) = rest.split_once('/')
                && !ready
            {
                in_use.insert((source.to_owned(), snapshot.to_owned()));
            }
        }
        let now = self.clock.now();
        let mut outcomes = Vec::new();
        for volume in targets {
            let volume = volume.name_any();
            let mine: Vec<VolumeSnapshot> = snapshots
                .iter()
                .filter(|s| s.spec.volume == volume && s.metadata.deletion_timestamp.is_none())
                .map(|s| {
                    let view = snapshot_view(s);
                    let status = s.status.as_ref();
                    VolumeSnapshot {
                        name: view.name.clone(),
                        created_at: view.created_at,
                        user_created: status.and_then(|s| s.user_created).unwrap_or(true),
                        removed: false,
                        // One still being taken is never deleted under its creator's feet.
                        in_use: view.state == ArtifactState::InProgress
                            || in_use.contains(&(volume.clone(), view.name.clone())),
                    }
                })
                .collect();
            let delete = match (task, run.spec.job.retention) {
                (Task::SnapshotDelete, Some(policy)) => {
                    plan_snapshot_delete(&policy, &mine, now).delete
                }
                _ => plan_snapshot_cleanup(&mine),
            };
            let mut failures = Vec::new();
            for name in &delete {
                if let Err(message) = self.delete_artifact(ArtifactKind::Snapshot, name).await {
                    failures.push(message);
                }
            }
            let outcome = if failures.is_empty() {
                if !delete.is_empty() {
                    self.ctx
                        .events
                        .normal(
                            &run.job,
                            "SnapshotsDeleted",
                            format!("volume {volume}: deleted {}", delete.join(", ")),
                        )
                        .await;
                }
                VolumeOutcome::Succeeded
            } else {
                VolumeOutcome::Failed(failures.join("; "))
            };
            outcomes.push((volume, outcome));
        }
        Ok(outcomes)
    }
}
