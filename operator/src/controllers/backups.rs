//! Backup deletion, controller side. A Backup object carrying the finalizer
//! `bulwark.io/remote-backup` stands for data in a store; when it is deleted:
//! - annotated `bulwark.io/remote-gone: "true"` (the target sync found the remote backup gone):
//!   the finalizer is removed without touching the store;
//! - still running on a live agent (`state: InProgress`, the owner's Lease fresh): wait;
//! - otherwise the backup is deleted from its target (`Store::delete_backup`, which collects the
//!   blocks no other backup references), then the finalizer is removed. A backup the store
//!   does not have counts as deleted; any other failure is an Event, a `RemoteDeleted`
//!   condition and a retry with backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crd_types::backup::BackupState;
use crd_types::common::DEFAULT_BACKUP_TARGET;
use crd_types::{Backup, BackupTarget, Volume};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::backup_target::sync::REMOTE_GONE;
use crate::metrics::ErrorCategory;
use crate::status::{self, managers};
use crate::{finalizers, presence};

pub const CONTROLLER: &str = "backup";
/// Condition this part owns on Backups: False (with the reason) while a remote delete fails.
pub const REMOTE_DELETED: &str = "RemoteDeleted";
/// How often a deletion waiting for a running backup looks again.
pub const WAIT_FOR_AGENT: Duration = Duration::from_secs(10);

/// Per-object exponential backoff for retries: 2 s, 4 s, … capped at 5 minutes.
#[derive(Default)]
pub struct Backoff {
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before the next retry of `key`, counting this failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = map.entry(key.to_owned()).or_default();
        *attempts = attempts.saturating_add(1);
        backoff_delay(*attempts)
    }

    /// Forget the failures of `key` (it succeeded).
    pub fn reset(&self, key: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// The delay after `attempts` consecutive failures.
pub fn backoff_delay(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    Duration::from_secs(2u64 << exponent).min(Duration::from_secs(300))
}

/// Why a deletion did not finish; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Already reported in an Event and the `RemoteDeleted` condition.
    #[error("{message}")]
    Delete {
        message: String,
        category: ErrorCategory,
    },
}

impl Error {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Kube(_) => ErrorCategory::Kubernetes,
            Error::Delete { category, .. } => *category,
        }
    }
}

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    let backoff = Arc::new(Backoff::default());
    let policy_backoff = backoff.clone();
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            move |backup, ctx| {
                let backoff = backoff.clone();
                async move {
                    let result = reconcile(&ctx, &backup).await;
                    if result.is_ok() {
                        backoff.reset(&backup.name_any());
                    }
                    result
                }
            },
            move |backup, error, _ctx| {
                tracing::warn!(%error, backup = %backup.name_any(), "backup deletion failed");
                Action::requeue(policy_backoff.next(&backup.name_any()))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Act on `backup` if it is being deleted and still holds our finalizer.
pub async fn reconcile(ctx: &Context, backup: &Backup) -> Result<Action, Error> {
    if backup.metadata.deletion_timestamp.is_none()
        || !backup.finalizers().iter().any(|f| f == finalizers::BACKUP)
    {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let result = delete(ctx, backup).await;
    ctx.metrics.reconciled(
        CONTROLLER,
        started.elapsed().as_secs_f64(),
        result.as_ref().map(|_| ()).map_err(Error::category),
    );
    result
}

async fn delete(ctx: &Context, backup: &Backup) -> Result<Action, Error> {
    let namespace = &ctx.config.common.namespace;
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), namespace);
    let name = backup.name_any();
    let volume = &backup.spec.volume;
    if backup.annotations().get(REMOTE_GONE).map(String::as_str) == Some("true") {
        finalizers::remove(&api, backup, finalizers::BACKUP).await?;
        ctx.events
            .normal(
                backup,
                "Deleted",
                "the remote backup had already vanished from the store: object removed without touching the store",
            )
            .await;
        return Ok(Action::await_change());
    }
    let status = backup.status.as_ref();
    if let Some(node) = status.and_then(|s| s.owner_id.as_deref())
        && status.and_then(|s| s.state) == Some(BackupState::InProgress)
    {
        if agent_alive(ctx, node).await? {
            ctx.events
                .normal(
                    backup,
                    "DeleteWaiting",
                    format!(
                        "the backup is running on node {node}: it is deleted from the store once the agent finishes or fails it"
                    ),
                )
                .await;
            return Ok(Action::requeue(WAIT_FOR_AGENT));
        }
        // A dead agent never finishes it. Deleting is safe even if it comes back: a running
        // backup holds the volume's shared lock, which the delete's exclusive lock waits for.
        tracing::info!(backup = %name, %node, "agent of an in-progress backup is gone, deleting");
    }
    let target_name = target_of(ctx, backup).await?;
    let targets: Api<BackupTarget> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(target) = targets.get_opt(&target_name).await? else {
        return fail(
            ctx,
            backup,
            "TargetMissing",
            format!(
                "BackupTarget {target_name:?} does not exist, so backup {name} cannot be deleted from it: recreate the target, or annotate this Backup with {REMOTE_GONE}=\"true\" to remove only the object"
            ),
            ErrorCategory::NotFound,
        )
        .await;
    };
    let store = match ctx.stores.open(&ctx.client, namespace, &target).await {
        Ok(store) => store,
        Err(error) => {
            let category = if error.is_user_error() {
                ErrorCategory::Invalid
            } else {
                ErrorCategory::Store
            };
            return fail(
                ctx,
                backup,
                "TargetUnavailable",
                format!(
                    "cannot open BackupTarget {target_name:?} to delete backup {name}: {error}"
                ),
                category,
            )
            .await;
        }
    };
    let result = store.delete_backup(volume, &name).await;
    ctx.metrics.store_request("delete", &result);
    let note = match result {
        Ok(outcome) => {
            let mut note = format!(
                "deleted backup {name} of volume {volume} from target {target_name}: {} unreferenced blocks removed, {} kept",
                outcome.blocks_deleted, outcome.blocks_kept
            );
            if let Some(skipped) = outcome.sweep_skipped {
                note.push_str(&format!(
                    " (block collection skipped: {skipped:?}; the next delete collects them)"
                ));
            }
            note
        }
        // Nothing stored under that name (or a name the store cannot hold): nothing to delete.
        Err(
            backupstore::Error::BackupNotFound { .. }
            | backupstore::Error::VolumeNotFound { .. }
            | backupstore::Error::InvalidName { .. },
        ) => format!(
            "backup {name} of volume {volume} does not exist in target {target_name}: nothing to delete there"
        ),
        Err(error) => {
            return fail(
                ctx,
                backup,
                "DeleteFailed",
                format!(
                    "cannot delete backup {name} of volume {volume} from target {target_name}: {error}"
                ),
                ErrorCategory::Store,
            )
            .await;
        }
    };
    finalizers::remove(&api, backup, finalizers::BACKUP).await?;
    ctx.events.normal(backup, "Deleted", note).await;
    Ok(Action::await_change())
}

/// Whether the agent of `node` renews its Lease.
async fn agent_alive(ctx: &Context, node: &str) -> Result<bool, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    Ok(leases
        .get_opt(&presence::lease_name(node))
        .await?
        .and_then(|lease| presence::live_node(&lease, jiff::Timestamp::now()))
        .is_some_and(|holder| holder == node))
}

/// The target holding `backup`: the one its status records (where it was written), else its
/// Volume's, else `default`.
async fn target_of(ctx: &Context, backup: &Backup) -> Result<String, kube::Error> {
    if let Some(name) = backup
        .status
        .as_ref()
        .and_then(|s| s.backup_target_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        return Ok(name.to_owned());
    }
    let volumes: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    Ok(match volumes.get_opt(&backup.spec.volume).await? {
        Some(volume) if !volume.spec.backup_target_name.is_empty() => {
            volume.spec.backup_target_name
        }
        _ => DEFAULT_BACKUP_TARGET.to_owned(),
    })
}

/// Report a failed deletion (Event and condition) and return the error that schedules a retry.
async fn fail(
    ctx: &Context,
    backup: &Backup,
    reason: &str,
    message: String,
    category: ErrorCategory,
) -> Result<Action, Error> {
    ctx.events.warning(backup, reason, message.clone()).await;
    let existing = backup.status.as_ref().and_then(|s| s.conditions.as_deref());
    let condition = status::condition(
        existing,
        REMOTE_DELETED,
        false,
        reason,
        message.clone(),
        backup.metadata.generation,
    );
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    match status::apply(
        &api,
        &backup.name_any(),
        managers::BACKUP,
        json!({"conditions": [condition]}),
    )
    .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Err(Error::Delete { message, category })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::backup_target::sync::backup_object;
    use crate::controllers::backup_target::tests::{
        API, NS, context, events, file_store, file_url, notes, ok, target, within,
    };
    use crate::controllers::testing::{ApiServer, Recorded, not_found};
    use backupstore::target::{Credentials, TargetUrl};
    use crd_types::BackupStatus;
    use crd_types::common::Time;
    use http::Method;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(2));
        assert_eq!(backoff_delay(2), Duration::from_secs(4));
        assert_eq!(backoff_delay(8), Duration::from_secs(256));
        assert_eq!(backoff_delay(9), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
        let b = Backoff::default();
        assert_eq!(b.next("x"), Duration::from_secs(2));
        assert_eq!(b.next("x"), Duration::from_secs(4));
        b.reset("x");
        assert_eq!(b.next("x"), Duration::from_secs(2));
    }

    /// A Backup being deleted, holding our finalizer, stored in `target` (status) if given.
    fn deleting(name: &str, target: Option<&str>) -> Backup {
        let mut b = backup_object("main", "vol-a", name, &Default::default());
        b.metadata.namespace = Some(NS.into());
        b.metadata.annotations = None;
        b.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        b.metadata.generation = Some(2);
        b.status = Some(BackupStatus {
            state: Some(BackupState::Completed),
            backup_target_name: target.map(str::to_owned),
            ..BackupStatus::default()
        });
        b
    }

    fn assert_finalizer_removed(request: &Recorded) {
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/json-patch+json")
        );
        assert_eq!(
            request.json(),
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["bulwark.io/remote-backup"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": []},
            ])
        );
    }

    /// A deletion through the store: the target is read, then our finalizer removed.
    async fn expect_delete(server: &mut ApiServer, target: BackupTarget, backup: Backup) {
        let name = target.metadata.name.clone().expect("name");
        server
            .expect(Method::GET, &format!("{API}/backuptargets/{name}"))
            .await
            .respond(ok(target));
        let patch = server
            .expect(
                Method::PATCH,
                &format!(
                    "{API}/backups/{}",
                    backup.metadata.name.clone().expect("name")
                ),
            )
            .await;
        assert_finalizer_removed(&patch);
        patch.respond(ok(backup));
    }

    async fn names_in_store(url: &str, volume: &str) -> Vec<String> {
        let stores = crate::stores::Stores::default();
        let store = stores
            .open_with(
                "check",
                TargetUrl::parse(url).expect("url"),
                Credentials::default(),
            )
            .await
            .expect("store");
        store.list_backup_names(volume).await.expect("names")
    }

    #[tokio::test]
    async fn remote_gone_backups_only_lose_their_finalizer() {
        let (client, mut server) = ApiServer::start();
        let (ctx, published) = context(client);
        let mut b = deleting("backup-1", Some("main"));
        b.metadata.annotations = Some([(REMOTE_GONE.to_owned(), "true".to_owned())].into());
        let response = b.clone();
        let script = tokio::spawn(async move {
            let patch = server
                .expect(Method::PATCH, &format!("{API}/backups/backup-1"))
                .await;
            assert_finalizer_removed(&patch);
            patch.respond(ok(response));
        });
        let action = within(reconcile(&ctx, &b)).await.expect("reconciled");
        within(script).await.expect("script");
        assert_eq!(action, Action::await_change());
        assert_eq!(
            events(&published),
            [("Backup/backup-1".to_owned(), false, "Deleted".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_deleted_backup_is_removed_from_its_target_with_gc() {
        let (_dir, url) = file_store(&[("vol-a", "backup-1"), ("vol-a", "backup-2")]).await;
        let (client, mut server) = ApiServer::start();
        let (ctx, published) = context(client);
        let b = deleting("backup-1", Some("main"));
        let (response, target_object) = (b.clone(), target("main", &url));
        let script = tokio::spawn(async move {
            expect_delete(&mut server, target_object, response).await;
        });
        within(reconcile(&ctx, &b)).await.expect("reconciled");
        within(script).await.expect("script");
        ctx.stores.close_all().await;
        assert_eq!(names_in_store(&url, "vol-a").await, ["backup-2"]);
        assert_eq!(
            events(&published),
            [("Backup/backup-1".to_owned(), false, "Deleted".to_owned())]
        );
        // backup-1's first block is referenced by it alone: collected; backup-2 keeps its two.
        let note = notes(&published).remove(0);
        assert!(
            note.contains("from target main: 1 unreferenced blocks removed, 2 kept"),
            "{note}"
        );
        assert!(ctx.metrics.render().contains(
            "bulwark_backup_target_requests_total{operation=\"delete\",result=\"success\"} 1"
        ));
    }

    #[tokio::test]
    async fn the_target_comes_from_the_volume_then_default_and_missing_backups_count_as_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = file_url(dir.path());
        for (volume_answer, target_name) in [(true, "vol-target"), (false, "default")] {
            let (client, mut server) = ApiServer::start();
            let (ctx, published) = context(client);
            let b = deleting("backup-9", None);
            let response = b.clone();
            let target_object = target(target_name, &url);
            let script = tokio::spawn(async move {
                let get = server
                    .expect(Method::GET, &format!("{API}/volumes/vol-a"))
                    .await;
                if volume_answer {
                    get.respond(ok(serde_json::json!({
                        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
                        "metadata": {"name": "vol-a", "namespace": NS},
                        "spec": {"size": "1Gi", "backupTargetName": "vol-target"},
                    })));
                } else {
                    get.respond(not_found());
                }
                server
                    .expect(Method::GET, &format!("{API}/backuptargets/{target_name}"))
                    .await
                    .respond(ok(target_object));
                let patch = server
                    .expect(Method::PATCH, &format!("{API}/backups/backup-9"))
                    .await;
                assert_finalizer_removed(&patch);
                patch.respond(ok(response));
            });
            within(reconcile(&ctx, &b)).await.expect("reconciled");
            within(script).await.expect("script");
            let note = notes(&published).remove(0);
            assert!(
                note.contains(&format!("does not exist in target {target_name}")),
                "{note}"
            );
            ctx.stores.close_all().await;
        }
    }

    #[tokio::test]
    async fn backups_running_on_a_live_agent_are_waited_for() {
        let (client, mut server) = ApiServer::start();
        let (ctx, published) = context(client);
        let mut b = deleting("backup-1", Some("main"));
        let status = b.status.as_mut().expect("status");
        status.state = Some(BackupState::InProgress);
        status.owner_id = Some("node-1".into());
        let script = tokio::spawn(async move {
            let mut lease = presence::build_lease("node-1", jiff::Timestamp::now());
            lease.metadata.namespace = Some(NS.into());
            server.expect(Method::GET, LEASE).await.respond(ok(lease));
        });
        let action = within(reconcile(&ctx, &b)).await.expect("reconciled");
        within(script).await.expect("script");
        assert_eq!(action, Action::requeue(WAIT_FOR_AGENT));
        assert_eq!(
            events(&published),
            [(
                "Backup/backup-1".to_owned(),
                false,
                "DeleteWaiting".to_owned()
            )]
        );
    }

    const LEASE: &str =
        "/apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases/bulwark-agent-node-1";

    #[tokio::test]
    async fn backups_of_a_dead_agent_are_deleted_anyway() {
        let (_dir, url) = file_store(&[("vol-a", "backup-1")]).await;
        let (client, mut server) = ApiServer::start();
        let (ctx, published) = context(client);
        let mut b = deleting("backup-1", Some("main"));
        let status = b.status.as_mut().expect("status");
        status.state = Some(BackupState::InProgress);
        status.owner_id = Some("node-1".into());
        let (response, target_object) = (b.clone(), target("main", &url));
        let script = tokio::spawn(async move {
            let stale = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600);
            server
                .expect(Method::GET, LEASE)
                .await
                .respond(ok(presence::build_lease("node-1", stale)));
            expect_delete(&mut server, target_object, response).await;
        });
        within(reconcile(&ctx, &b)).await.expect("reconciled");
        within(script).await.expect("script");
        ctx.stores.close_all().await;
        assert!(names_in_store(&url, "vol-a").await.is_empty());
        assert_eq!(
            events(&published),
            [("Backup/backup-1".to_owned(), false, "Deleted".to_owned())]
        );
    }

    #[tokio::test]
    async fn objects_not_being_deleted_or_without_our_finalizer_are_ignored() {
        let (client, _server) = ApiServer::start();
        let (ctx, published) = context(client);
        let mut alive = deleting("backup-1", Some("main"));
        alive.metadata.deletion_timestamp = None;
        let mut foreign = deleting("backup-2", Some("main"));
        foreign.metadata.finalizers = Some(vec!["example.com/other".into()]);
        for b in [alive, foreign] {
            let action = within(reconcile(&ctx, &b)).await.expect("reconciled");
            assert_eq!(action, Action::await_change());
        }
        assert!(events(&published).is_empty());
    }

    /// A deletion that fails: the status patch body it wrote and the error.
    async fn failing(
        b: Backup,
        target_answer: Option<BackupTarget>,
    ) -> (serde_json::Value, Error, Vec<(String, bool, String)>) {
        let (client, mut server) = ApiServer::start();
        let (ctx, published) = context(client);
        let response = b.clone();
        let script = tokio::spawn(async move {
            let get = server
                .expect(Method::GET, &format!("{API}/backuptargets/main"))
                .await;
            match target_answer {
                Some(t) => get.respond(ok(t)),
                None => get.respond(not_found()),
            }
            let patch = server
                .expect(Method::PATCH, &format!("{API}/backups/backup-1/status"))
                .await;
            assert_eq!(
                patch.content_type.as_deref(),
                Some("application/apply-patch+yaml")
            );
            assert!(
                patch.query.contains("fieldManager=bulwark-backup"),
                "{}",
                patch.query
            );
            let body = patch.json();
            patch.respond(ok(response));
            body
        });
        let error = within(reconcile(&ctx, &b)).await.expect_err("failed");
        let body = within(script).await.expect("script");
        (body, error, events(&published))
    }

    #[tokio::test]
    async fn store_errors_are_reported_and_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("gone");
        let (body, error, events) = failing(
            deleting("backup-1", Some("main")),
            Some(target("main", &file_url(&missing))),
        )
        .await;
        let conditions = body["status"]["conditions"].as_array().expect("conditions");
        assert_eq!(conditions.len(), 1, "{body}");
        assert_eq!(conditions[0]["type"], REMOTE_DELETED);
        assert_eq!(conditions[0]["status"], "False");
        assert_eq!(conditions[0]["reason"], "TargetUnavailable");
        assert_eq!(conditions[0]["observedGeneration"], 2);
        let message = conditions[0]["message"].as_str().expect("message");
        assert!(message.contains("does not exist"), "{message}");
        assert!(matches!(error, Error::Delete { .. }));
        assert_eq!(
            events,
            [(
                "Backup/backup-1".to_owned(),
                true,
                "TargetUnavailable".to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn a_missing_target_is_reported_with_the_way_out() {
        let (body, error, _) = failing(deleting("backup-1", Some("main")), None).await;
        let condition = &body["status"]["conditions"][0];
        assert_eq!(condition["reason"], "TargetMissing");
        assert!(
            condition["message"]
                .as_str()
                .is_some_and(|m| m.contains("bulwark.io/remote-gone")),
            "{condition}"
        );
        assert_eq!(error.category(), ErrorCategory::NotFound);
    }
}
