//! Backups on this node: for each Backup whose Volume lives here (`status.ownerID` is this
//! node), claim it (finalizer, then `state: InProgress` with `ownerID`, before any work), make
//! sure its snapshot exists, back the snapshot up into the volume's BackupTarget (incremental
//! when the engine can diff against the last backup's snapshot, else a full scan the store
//! deduplicates), and report progress, the result and the volume's `lastBackup`.
//!
//! Pipeline per reconcile: read (Backup, Volume, BackupTarget) → [`decide::decide`] (pure) →
//! apply (claim, snapshot, [`data::back_up`]) → status. Finished and mirrored Backups are left
//! alone. A Backup left `InProgress` by an earlier agent process on this node is run again
//! from the start, and its condition says so (see [`decide::RESTARTED`]); the store overwrites
//! the unfinished remote backup of the same name, and the blocks the interrupted run uploaded
//! count as deduplicated instead of being sent again.

pub mod data;
pub mod decide;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crd_types::common::Time;
use crd_types::snapshot::{Snapshot, SnapshotSpec};
use crd_types::{Backup, BackupTarget, Volume};
use futures::StreamExt;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::data::{DataError, Report, Request};
use self::decide::{Completion, Decision, Failure, Local, Observed, Plan};
use super::{AgentContext, skip};
use crate::metrics::ErrorCategory;
use crate::status::managers::AGENT_BACKUP;
use crate::stores::OpenError;
use crate::{finalizers, status};

/// Name of this part in the reconcile metrics.
const CONTROLLER: &str = "agent-backup";
/// How often a running backup's `progress` is written at most.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How soon a Backup waiting for its volume is looked at again (volume changes also wake it).
const WAIT_REQUEUE: Duration = Duration::from_secs(30);
/// How soon a reconcile that failed on an API or store outage is retried.
const ERROR_REQUEUE: Duration = Duration::from_secs(15);

/// Why a reconcile stopped early; it is retried. User errors never end up here: they become
/// the Backup's state Error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot open the backup target: {0}")]
    Target(#[source] OpenError),
    #[error("the agent's operation limit is closed")]
    Closed,
}

impl Error {
    fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) | Error::Closed => ErrorCategory::Kubernetes,
            Error::Target(_) => ErrorCategory::Store,
        }
    }
}

/// The backup part of the agent: its context and what this process knows about Backups.
pub struct BackupAgent {
    ctx: Arc<AgentContext>,
    local: Mutex<HashMap<String, Local>>,
    progress_every: Duration,
    shutdown: CancellationToken,
}

/// Marks a Backup as running while alive; afterwards it counts as claimed by this process.
struct RunningGuard<'a> {
    agent: &'a BackupAgent,
    name: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut local = self.agent.lock();
        if local.get(&self.name) == Some(&Local::Running) {
            local.insert(self.name.clone(), Local::Claimed);
        }
    }
}

impl BackupAgent {
    pub fn new(ctx: Arc<AgentContext>, shutdown: CancellationToken) -> BackupAgent {
        BackupAgent {
            ctx,
            local: Mutex::default(),
            progress_every: PROGRESS_EVERY,
            shutdown,
        }
    }

    /// Write progress at most this often (tests use a long interval for scripted requests).
    pub fn with_progress_every(mut self, every: Duration) -> BackupAgent {
        self.progress_every = every;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        // Single inserts and removals: a panic cannot leave the map inconsistent.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local_state(&self, name: &str) -> Local {
        self.lock().get(name).copied().unwrap_or(Local::Unknown)
    }

    fn running(&self, name: &str) -> RunningGuard<'_> {
        self.lock().insert(name.to_owned(), Local::Running);
        RunningGuard {
            agent: self,
            name: name.to_owned(),
        }
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn backups(&self) -> Api<Backup> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace)
    }

    fn volumes(&self) -> Api<Volume> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace)
    }

    /// One reconcile of Backup `name`: read → decide → apply → status.
    pub async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let ctx = &self.ctx;
        let backups = self.backups();
        // Read fresh: the watch cache lags behind our own status writes, and a stale
        // `InProgress` would look like a backup to restart.
        let Some(backup) = backups.get_opt(name).await? else {
            return Ok(Action::await_change());
        };
        // Deleted while it ran on this node, and nothing here runs it (the agent restarted):
        // end it, or the controller's deletion would wait for it forever.
        let orphaned = backup.metadata.deletion_timestamp.is_some()
            && backup.status.as_ref().is_some_and(|s| {
                s.state == Some(crd_types::backup::BackupState::InProgress)
                    && s.owner_id.as_deref() == Some(ctx.node.as_str())
            })
            && self.local_state(name) != Local::Running;
        if orphaned {
            let failure = Failure::new(
                "Deleted",
                "the Backup was deleted while it ran and the agent restarted: it stopped, and its unfinished remote backup goes with the object",
            );
            self.fail(&backup, None, &failure).await?;
            return Ok(Action::await_change());
        }
        if let Some(why) = decide::settled(&backup, &ctx.node) {
            tracing::trace!(backup = name, why, "nothing to do");
            return Ok(Action::await_change());
        }
        let volume = self.volumes().get_opt(&backup.spec.volume).await?;
        let target = match (&volume, decide::target_name(&backup, volume.as_ref())) {
            (Some(v), Some(t))
                if ctx.owns(v.status.as_ref().and_then(|s| s.owner_id.as_deref())) =>
            {
                Api::<BackupTarget>::namespaced(ctx.client.clone(), &ctx.namespace)
                    .get_opt(&t)
                    .await?
            }
            _ => None,
        };
        let decision = decide::decide(&Observed {
            backup: &backup,
            volume: volume.as_ref(),
            target: target.as_ref(),
            node: &ctx.node,
            local: self.local_state(name),
        });
        match decision {
            Decision::Ignore(why) => {
                tracing::trace!(backup = name, why, "not for this agent");
                Ok(Action::await_change())
            }
            Decision::Wait(why) => {
                tracing::debug!(backup = name, why, "waiting");
                Ok(Action::requeue(WAIT_REQUEUE))
            }
            Decision::Fail(failure) => {
                self.fail(&backup, None, &failure).await?;
                Ok(Action::await_change())
            }
            Decision::Run(plan) => {
                // decide() returns Run only when the target exists; stay total anyway.
                let Some(target) = target else {
                    return Ok(Action::requeue(WAIT_REQUEUE));
                };
                if let Some(message) = self.skip_unchanged(&backup, &target).await? {
                    let conditions = backup.status.as_ref().and_then(|s| s.conditions.as_deref());
                    let condition = crate::status::condition(
                        conditions,
                        decide::COMPLETED,
                        false,
                        skip::SKIPPED_REASON,
                        &message,
                        backup.metadata.generation,
                    );
                    status::apply(
                        &backups,
                        name,
                        AGENT_BACKUP,
                        serde_json::json!({"conditions": [condition]}),
                    )
                    .await?;
                    ctx.events
                        .normal(&backup, skip::SKIPPED_REASON, message)
                        .await;
                    return Ok(Action::await_change());
                }
                self.run(backup, target, plan).await
            }
        }
    }

    /// For a recurring job's Backup that asks to skip an unchanged volume (and is not claimed
    /// yet): the skip message when no data was written since the newest snapshot and that
    /// snapshot is already in the store. Decided here, on the engine's facts, before any claim.
    async fn skip_unchanged(
        &self,
        backup: &Backup,
        target: &BackupTarget,
    ) -> Result<Option<String>, Error> {
        let Some(min) = skip::threshold(backup.annotations()) else {
            return Ok(None);
        };
        let claimed = backup.status.as_ref().is_some_and(|s| s.owner_id.is_some());
        if claimed || backup.spec.snapshot_name.is_some() {
            return Ok(None);
        }
        let ctx = &self.ctx;
        let (engine, volume) = (ctx.engine.clone(), backup.spec.volume.clone());
        let facts =
            tokio::task::spawn_blocking(move || -> Result<(u64, Option<String>), engine::Error> {
                let data = engine.open_volume(&volume)?;
                // The snapshot the head sits on: what `head_changed_bytes` is measured against.
                let newest = data
                    .list_snapshots()?
                    .into_iter()
                    .find(|s| s.head_is_child)
                    .map(|s| s.name);
                Ok((data.head_changed_bytes()?, newest))
            })
            .await;
        // Anything unclear means "back up": an extra backup is safe, a missing one is not.
        let Ok(Ok((changed, newest))) = facts else {
            return Ok(None);
        };
        let Ok(store) = ctx.stores.open(&ctx.client, &ctx.namespace, target).await else {
            return Ok(None);
        };
        let base = store.incremental_base(&backup.spec.volume).await;
        ctx.metrics.store_request("inspect", &base);
        let backed_up =
            matches!((&base, &newest), (Ok(Some((_, base))), Some(newest)) if base == newest);
        Ok(
            skip::decide(recurring::Task::Backup, changed, backed_up, min)
                .map(|reason| skip::message(reason, changed, min)),
        )
    }

    /// State Error with `failure`'s message, and a warning Event.
    async fn fail(
        &self,
        backup: &Backup,
        plan: Option<&Plan>,
        failure: &Failure,
    ) -> Result<(), Error> {
        let name = backup.name_any();
        tracing::warn!(backup = name, reason = failure.reason, message = %failure.message, "backup failed");
        let body = decide::failed_status(&self.ctx.node, backup, plan, failure);
        status::apply(&self.backups(), &name, AGENT_BACKUP, body).await?;
        self.ctx
            .events
            .warning(backup, "BackupFailed", failure.message.clone())
            .await;
        self.forget(&name);
        Ok(())
    }

    /// Claim, prepare and run one backup.
    async fn run(&self, backup: Backup, target: BackupTarget, plan: Plan) -> Result<Action, Error> {
        let ctx = &self.ctx;
        let name = backup.name_any();
        let backups = self.backups();
        let _running = self.running(&name);

        // Claim before any work: the finalizer keeps the object until the remote backup is
        // deleted, the status tells everyone (and a restarted agent) that this node runs it.
        finalizers::add(&backups, &backup, finalizers::BACKUP).await?;
        let condition = decide::running_condition(
            backup.status.as_ref().and_then(|s| s.conditions.as_deref()),
            &plan,
            backup.metadata.generation,
        );
        let claimed = status::apply(
            &backups,
            &name,
            AGENT_BACKUP,
            decide::running_status(&ctx.node, &plan, 0, &condition),
        )
        .await?;
        ctx.events
            .normal(&claimed, "BackupStarted", condition.message.clone())
            .await;

        let engine_volume = match self.ensure_snapshot(&claimed, &plan).await? {
            Ok(v) => v,
            Err(failure) => {
                self.fail(&claimed, Some(&plan), &failure).await?;
                return Ok(Action::await_change());
            }
        };
        let store = match ctx.stores.open(&ctx.client, &ctx.namespace, &target).await {
            Ok(store) => store,
            Err(e) if e.is_user_error() => {
                let failure = Failure::new(
                    "TargetUnavailable",
                    format!("BackupTarget {:?}: {e}", plan.target),
                );
                self.fail(&claimed, Some(&plan), &failure).await?;
                return Ok(Action::await_change());
            }
            Err(e) => return Err(Error::Target(e)),
        };
        let url = match crate::stores::target_url(&target)
            .map_err(|e| e.to_string())
            .and_then(|u| {
                u.backup_url(&name, &backup.spec.volume)
                    .map_err(|e| e.to_string())
            }) {
            Ok(url) => url.to_string(),
            Err(e) => {
                let failure = Failure::new(
                    "TargetUnavailable",
                    format!("BackupTarget {:?}: {e}", plan.target),
                );
                self.fail(&claimed, Some(&plan), &failure).await?;
                return Ok(Action::await_change());
            }
        };

        // Bounded data work per node; the claim above already shows the backup as queued.
        let _permit = tokio::select! {
            permit = ctx.operations.clone().acquire_owned() => permit.map_err(|_| Error::Closed)?,
            _ = self.shutdown.cancelled() => return Ok(Action::await_change()),
        };
        let started = Instant::now();
        let (progress_tx, mut progress_rx) = tokio::sync::watch::channel((0u64, 0u64));
        // Fired by shutdown, or when a progress write shows the Backup is being deleted.
        let cancel = self.shutdown.child_token();
        let mut deleted = false;
        let request = Request {
            volume: backup.spec.volume.clone(),
            backup: name.clone(),
            snapshot: plan.snapshot.clone(),
            full: plan.full,
            block_size: plan.block_size,
            compression: plan.compression,
            labels: backup.spec.labels.clone(),
            workers: (ctx.config.backup_workers as usize).max(1),
            progress: Some(Arc::new(move |p: &backupstore::BackupProgress| {
                progress_tx.send_replace((p.blocks_done, p.blocks_total));
            })),
            cancel: cancel.clone(),
        };
        let work = data::back_up(&engine_volume, &store, request);
        tokio::pin!(work);
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.progress_every,
            self.progress_every,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut reported = 0;
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                _ = tick.tick() => {
                    let (done, total) = *progress_rx.borrow_and_update();
                    let percent = decide::percent(done, total);
                    if percent != reported {
                        let body = decide::running_status(&ctx.node, &plan, percent, &condition);
                        match status::apply(&backups, &name, AGENT_BACKUP, body).await {
                            Ok(now) => {
                                reported = percent;
                                if now.metadata.deletion_timestamp.is_some() && !deleted {
                                    // Nobody wants this backup any more: stop uploading.
                                    deleted = true;
                                    cancel.cancel();
                                }
                            }
                            Err(error) => tracing::warn!(%error, backup = name, "cannot report progress"),
                        }
                    }
                }
            }
        };
        ctx.metrics.store_request("backup", &result);
        let requested_kind = if plan.full { "full" } else { "incremental" };
        match result {
            Ok(report) => {
                ctx.metrics.backup_completed(
                    &backup.spec.volume,
                    report.kind.as_str(),
                    started.elapsed().as_secs_f64(),
                    &report.outcome.counters,
                );
                self.complete(&claimed, &plan, &report, url).await?;
                Ok(Action::await_change())
            }
            Err(DataError::Cancelled) if deleted => {
                tracing::info!(
                    backup = name,
                    "Backup deleted while running; backup stopped"
                );
                ctx.metrics
                    .backup_duration
                    .with_label_values(&[requested_kind, "error"])
                    .observe(started.elapsed().as_secs_f64());
                // Leave no InProgress behind: the controller's deletion waits for running
                // backups, and this one will never finish.
                let failure = Failure::new(
                    "Deleted",
                    "the Backup was deleted while it ran: the backup stopped, and its unfinished remote backup goes with the object",
                );
                self.fail(&claimed, Some(&plan), &failure).await?;
                Ok(Action::await_change())
            }
            Err(DataError::Cancelled) => {
                // Left InProgress on purpose: the agent re-runs it when it starts again.
                tracing::info!(
                    backup = name,
                    "backup interrupted by shutdown; it runs again when the agent restarts"
                );
                Ok(Action::await_change())
            }
            Err(error) => {
                ctx.metrics
                    .backup_duration
                    .with_label_values(&[requested_kind, "error"])
                    .observe(started.elapsed().as_secs_f64());
                let failure = failure_of(&error, &backup.spec.volume, &plan);
                self.fail(&claimed, Some(&plan), &failure).await?;
                Ok(Action::await_change())
            }
        }
    }

    /// The engine volume with `plan.snapshot` in it: taken here when the engine lacks it and a
    /// Snapshot object (created here for backups that name none) describes it. The inner error
    /// is a user-facing failure.
    async fn ensure_snapshot(
        &self,
        backup: &Backup,
        plan: &Plan,
    ) -> Result<Result<Arc<engine::Volume>, Failure>, Error> {
        let ctx = &self.ctx;
        let volume_name = &backup.spec.volume;
        let engine_volume = match ctx.engine.open_volume(volume_name) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Err(Failure::new(
                    "VolumeDataMissing",
                    format!(
                        "cannot open the data of Volume {volume_name:?} on node {}: {e}",
                        ctx.node
                    ),
                )));
            }
        };
        let has = |v: &engine::Volume| {
            v.list_snapshots()
                .map(|list| list.iter().any(|s| s.name == plan.snapshot))
        };
        match has(&engine_volume) {
            Ok(true) => return Ok(Ok(engine_volume)),
            Ok(false) => {}
            Err(e) => return Ok(Err(data_failure(volume_name, &e.to_string()))),
        }
        let snapshots: Api<Snapshot> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
        let object = if plan.create_snapshot {
            let mut labels = BTreeMap::new();
            labels.insert(decide::BACKUP_LABEL.to_owned(), backup.name_any());
            let mut new = Snapshot::new(
                &plan.snapshot,
                SnapshotSpec {
                    volume: volume_name.clone(),
                    labels: BTreeMap::new(),
                },
            );
            new.metadata.labels = Some(labels);
            match snapshots.create(&PostParams::default(), &new).await {
                Ok(created) => Some(created),
                // Created by an earlier attempt (its name is recorded in status first).
                Err(kube::Error::Api(s)) if s.is_already_exists() => {
                    snapshots.get_opt(&plan.snapshot).await?
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            snapshots.get_opt(&plan.snapshot).await?
        };
        let Some(object) = object else {
            return Ok(Err(Failure::new(
                "SnapshotNotFound",
                format!(
                    "spec.snapshotName names snapshot {:?}, which Volume {volume_name:?} does not have: name an existing Snapshot of the volume, or leave spec.snapshotName empty to take a new one",
                    plan.snapshot
                ),
            )));
        };
        if object.spec.volume != *volume_name {
            return Ok(Err(Failure::new(
                "SnapshotNotFound",
                format!(
                    "Snapshot {:?} belongs to Volume {:?}, not {volume_name:?}: name a snapshot of the backed-up volume in spec.snapshotName",
                    plan.snapshot, object.spec.volume
                ),
            )));
        }
        if object.metadata.deletion_timestamp.is_some() {
            return Ok(Err(Failure::new(
                "SnapshotNotFound",
                format!(
                    "Snapshot {:?} is being deleted: create a new Backup",
                    plan.snapshot
                ),
            )));
        }
        // The snapshot part of the agent may not have taken it yet. Take it here, under the
        // same finalizer it uses, so deleting the object still merges the layer away.
        finalizers::add(&snapshots, &object, finalizers::SNAPSHOT).await?;
        let volume = engine_volume.clone();
        let snapshot = plan.snapshot.clone();
        let labels = object.spec.labels.clone();
        let taken = tokio::task::spawn_blocking(move || volume.snapshot(&snapshot, labels)).await;
        match taken {
            Ok(Ok(_)) | Ok(Err(engine::Error::SnapshotExists { .. })) => Ok(Ok(engine_volume)),
            Ok(Err(e)) => Ok(Err(data_failure(volume_name, &e.to_string()))),
            Err(e) => Ok(Err(data_failure(volume_name, &e.to_string()))),
        }
    }

    /// Status Completed, then the volume's `lastBackup`, then the Event.
    async fn complete(
        &self,
        backup: &Backup,
        plan: &Plan,
        report: &Report,
        url: String,
    ) -> Result<(), Error> {
        let ctx = &self.ctx;
        let name = backup.name_any();
        let counters = report.outcome.counters;
        let summary = match (&report.base_snapshot, &report.fallback) {
            (Some(base), _) => format!(
                "incremental backup of snapshot {} (changes since snapshot {base}) completed",
                plan.snapshot
            ),
            (None, Some(why)) => format!(
                "full backup of snapshot {} completed (no incremental: {why})",
                plan.snapshot
            ),
            (None, None) => format!("full backup of snapshot {} completed", plan.snapshot),
        };
        let snapshot_created_at = Time(report.snapshot_created_at);
        let done = Completion {
            url,
            snapshot_created_at: snapshot_created_at.clone(),
            backup_created_at: status::now(),
            size: report.size,
            volume_size: report.volume_size,
            newly_uploaded: report.newly_uploaded,
            re_uploaded: report.re_uploaded,
            compression: report.compression,
            block_size: report.block_size,
            bytes_read: counters.bytes_read,
            bytes_changed: counters.bytes_changed,
            bytes_uploaded: counters.bytes_uploaded,
            bytes_deduplicated: counters.bytes_deduplicated,
            summary: summary.clone(),
        };
        let body = decide::completed_status(&ctx.node, backup, plan, &done);
        let backups = self.backups();
        let mut attempt = 0;
        // The data is in the store: a lost status write would make the backup run again.
        loop {
            match status::apply(&backups, &name, AGENT_BACKUP, body.clone()).await {
                Ok(_) => break,
                Err(error) if attempt < 2 => {
                    tracing::warn!(%error, backup = name, "cannot record the completed backup, retrying");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.forget(&name);
        ctx.events.normal(backup, "BackupCompleted", summary).await;

        let volumes = self.volumes();
        if let Some(volume) = volumes.get_opt(&backup.spec.volume).await?
            && decide::is_newest(&volume, &name, &snapshot_created_at)
        {
            // Only these two fields, under the backup manager: volume-state applies by the
            // agent's volume part never touch them.
            status::apply(
                &volumes,
                &backup.spec.volume,
                AGENT_BACKUP,
                serde_json::json!({
                    "lastBackup": name,
                    "lastBackupAt": snapshot_created_at,
                }),
            )
            .await?;
        }
        Ok(())
    }
}

fn data_failure(volume: &str, detail: &str) -> Failure {
    Failure::new(
        "DataError",
        format!("cannot read the data of Volume {volume:?} on this node: {detail}"),
    )
}

/// The user-facing failure of a data-path error.
fn failure_of(error: &DataError, volume: &str, plan: &Plan) -> Failure {
    match error {
        DataError::SnapshotMissing { .. } => Failure::new("SnapshotNotFound", error.to_string()),
        DataError::Engine { source, .. } => data_failure(volume, &source.to_string()),
        DataError::Store(backupstore::Error::BlockSizeMismatch {
            existing,
            requested,
            ..
        }) => Failure::new(
            "BlockSizeMismatch",
            format!(
                "Volume {volume:?} spec.backupBlockSize is {requested} bytes, but its backups in BackupTarget {:?} use {existing}-byte blocks: set spec.backupBlockSize to {existing} on a new volume, or back up to another target",
                plan.target
            ),
        ),
        DataError::Store(e) => {
            Failure::new("StoreError", format!("BackupTarget {:?}: {e}", plan.target))
        }
        DataError::Cancelled => Failure::new("Cancelled", error.to_string()),
    }
}

/// Watch Backups (and the Volumes they name) in the agent's namespace until `shutdown`.
pub async fn run(ctx: Arc<AgentContext>, shutdown: CancellationToken) {
    let agent = Arc::new(BackupAgent::new(ctx.clone(), shutdown.clone()));
    let backups = agent.backups();
    let controller = Controller::new(backups, watcher::Config::default());
    let cache = controller.store();
    controller
        // A volume becoming Ready (or placed here) wakes its unfinished Backups.
        .watches(
            agent.volumes(),
            watcher::Config::default(),
            move |volume: Volume| {
                let name = volume.name_any();
                cache
                    .state()
                    .into_iter()
                    .filter(|b| b.spec.volume == name && decide::unfinished(b))
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, agent)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "backup reconcile did not finish");
            }
        })
        .await;
}

async fn reconcile(backup: Arc<Backup>, agent: Arc<BackupAgent>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = agent.reconcile(&backup.name_any()).await;
    agent.ctx.metrics.reconciled(
        CONTROLLER,
        started.elapsed().as_secs_f64(),
        result.as_ref().map(|_| ()).map_err(Error::category),
    );
    result
}

fn error_policy(backup: Arc<Backup>, error: &Error, _agent: Arc<BackupAgent>) -> Action {
    tracing::warn!(%error, backup = backup.name_any(), "backup reconcile failed, retrying");
    Action::requeue(ERROR_REQUEUE)
}
