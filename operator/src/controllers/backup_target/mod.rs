//! The BackupTarget controller: check each target (URL, duplicates, credential Secret), probe
//! its store, mirror the store into BackupVolume and Backup objects, and report `available`,
//! the `Unavailable` and `Synced` conditions and `lastSyncedAt`.
//!
//! Pipeline per reconcile: check (pure, [`check`]) → open the store (reads the Secret) → list
//! the objects, then the store (the probe) → plan (pure, [`sync::plan`]) → apply → status.
//! A reconcile runs when the spec changes (generation: the URL, the Secret's name,
//! `syncRequestedAt`), when a credential Secret changes, and every `pollInterval` (never
//! when it is `0`). Our own status writes do not trigger one.

pub mod check;
pub mod sync;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::Instant;

use backupstore::Store;
use crd_types::{Backup, BackupTarget, BackupVolume};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::backups::Backoff;
use crate::metrics::ErrorCategory;
use crate::status::{self, managers};

pub const CONTROLLER: &str = "backup-target";
pub const UNAVAILABLE: &str = "Unavailable";
pub const SYNCED: &str = "Synced";

/// A reconcile that could not finish (the API server failed); retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
}

/// Run the controller until `stop` fires.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let namespace = ctx.config.common.namespace.clone();
    let targets: Api<BackupTarget> = Api::namespaced(ctx.client.clone(), &namespace);
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.client.clone(), &namespace);
    let (reader, writer) = reflector::store();
    // Only spec changes (generation) trigger: our status writes must not start another sync.
    let trigger = watcher(targets, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let by_secret = reader.clone();
    let backoff = Arc::new(Backoff::default());
    let policy_backoff = backoff.clone();
    // Metadata only: the controller needs to know that a Secret changed, not its keys.
    let secret_changes = watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    Controller::for_stream(trigger, reader)
        .watches_stream(secret_changes, move |secret| {
            let name = secret.name_any();
            by_secret
                .state()
                .into_iter()
                .filter(|t| t.spec.credential_secret.as_deref() == Some(name.as_str()))
                .map(|t| ObjectRef::from_obj(t.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            move |target, ctx| {
                let backoff = backoff.clone();
                async move {
                    let namespace = ctx.config.common.namespace.as_str();
                    let others: Vec<Arc<BackupTarget>> = ctx
                        .caches
                        .backup_targets
                        .state()
                        .into_iter()
                        .filter(|t| t.namespace().as_deref() == Some(namespace))
                        .collect();
                    forget_deleted_targets(&ctx, &others);
                    let result = reconcile(&ctx, &target, &others).await;
                    if result.is_ok() {
                        backoff.reset(&target.name_any());
                    }
                    result
                }
            },
            move |target, error, _ctx| {
                tracing::warn!(%error, target = %target.name_any(), "backup target reconcile failed");
                Action::requeue(policy_backoff.next(&target.name_any()))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Drop the availability series of targets that no longer exist (series of deleted objects
/// disappear). The cache lags a little; a series dropped too early is set again by the next
/// reconcile of its target.
fn forget_deleted_targets(ctx: &Context, targets: &[Arc<BackupTarget>]) {
    let live: std::collections::BTreeSet<String> = targets.iter().map(|t| t.name_any()).collect();
    let gauge = &ctx.metrics.backup_target_available;
    for family in prometheus::core::Collector::collect(gauge) {
        for metric in family.get_metric() {
            for label in metric.get_label() {
                if label.name() == "target" && !live.contains(label.value()) {
                    let _ = gauge.remove_label_values(&[label.value()]);
                }
            }
        }
    }
}

/// How one reconcile ended, before the status is written.
enum Outcome {
    Available {
        report: sync::Report,
    },
    Unavailable {
        reason: &'static str,
        message: String,
        category: ErrorCategory,
    },
}

/// Check, probe and sync `target`; `others` are the other targets (for the duplicate check).
pub async fn reconcile(
    ctx: &Context,
    target: &BackupTarget,
    others: &[Arc<BackupTarget>],
) -> Result<Action, Error> {
    let started = Instant::now();
    let name = target.name_any();
    let result = reconcile_inner(ctx, target, others).await;
    let outcome = match &result {
        Ok(Outcome::Available { .. }) => Ok(()),
        Ok(Outcome::Unavailable { category, .. }) => Err(*category),
        Err(_) => Err(ErrorCategory::Kubernetes),
    };
    ctx.metrics
        .reconciled(CONTROLLER, started.elapsed().as_secs_f64(), outcome);
    let outcome = result?;
    let available = matches!(outcome, Outcome::Available { .. });
    ctx.metrics
        .backup_target_available
        .with_label_values(&[name.as_str()])
        .set(i64::from(available));
    write_status(ctx, target, &outcome).await?;
    publish_events(ctx, target, &outcome).await;
    Ok(match target.spec.poll_interval() {
        Some(every) => Action::requeue(every),
        None => Action::await_change(),
    })
}

async fn reconcile_inner(
    ctx: &Context,
    target: &BackupTarget,
    others: &[Arc<BackupTarget>],
) -> Result<Outcome, kube::Error> {
    let url = match check::check(target, others) {
        Ok(url) => url,
        Err(refusal) => {
            return Ok(Outcome::Unavailable {
                reason: refusal.reason,
                message: refusal.message,
                category: refusal.category,
            });
        }
    };
    let namespace = &ctx.config.common.namespace;
    let store = match ctx.stores.open(&ctx.client, namespace, target).await {
        Ok(store) => store,
        Err(error) => {
            let (reason, category) = match &error {
                crate::stores::OpenError::SecretMissing { .. } => {
                    ("CredentialSecretMissing", ErrorCategory::NotFound)
                }
                crate::stores::OpenError::SecretUnreadable { .. } => {
                    ("CredentialSecretUnreadable", ErrorCategory::Kubernetes)
                }
                crate::stores::OpenError::Credentials { .. }
                | crate::stores::OpenError::SecretRequired { .. } => {
                    ("InvalidCredentials", ErrorCategory::Invalid)
                }
                crate::stores::OpenError::Url { .. } => ("InvalidURL", ErrorCategory::Invalid),
                crate::stores::OpenError::Target(_) => ("StoreUnreachable", ErrorCategory::Store),
            };
            return Ok(Outcome::Unavailable {
                reason,
                message: error.to_string(),
                category,
            });
        }
    };
    // Objects first, then the store: see `sync` for why the order matters.
    let bv_api: Api<BackupVolume> = Api::namespaced(ctx.client.clone(), namespace);
    let backup_api: Api<Backup> = Api::namespaced(ctx.client.clone(), namespace);
    let volume_objects = bv_api.list(&ListParams::default()).await?.items;
    let backup_objects = backup_api.list(&ListParams::default()).await?.items;
    let volumes = probe(ctx, &store).await;
    let volumes = match volumes {
        Ok(volumes) => volumes,
        Err(error) => {
            return Ok(Outcome::Unavailable {
                reason: "StoreError",
                message: error.to_string(),
                category: ErrorCategory::Store,
            });
        }
    };
    let report = sync::mirror(
        ctx,
        target,
        &url,
        &store,
        volumes,
        &volume_objects,
        &backup_objects,
    )
    .await?;
    Ok(Outcome::Available { report })
}

/// The cheapest request that proves the store answers and is readable: list its volumes.
async fn probe(ctx: &Context, store: &Store) -> backupstore::Result<Vec<String>> {
    let result = store.list_volumes().await;
    ctx.metrics.store_request("list", &result);
    result
}

/// The status this controller owns, all of it (server-side apply drops what is not sent).
fn status_body(target: &BackupTarget, outcome: &Outcome) -> serde_json::Value {
    let existing = target.status.as_ref();
    let conditions = existing.and_then(|s| s.conditions.as_deref());
    let generation = target.metadata.generation;
    let (unavailable, synced, last_synced_at) = match outcome {
        Outcome::Available { report } => (
            status::condition(
                conditions,
                UNAVAILABLE,
                false,
                "Available",
                "the store answered",
                generation,
            ),
            status::condition(
                conditions,
                SYNCED,
                true,
                if report.problems.is_empty() {
                    "Synced"
                } else {
                    "SyncedWithProblems"
                },
                report.summary(),
                generation,
            ),
            Some(status::now()),
        ),
        Outcome::Unavailable {
            reason, message, ..
        } => (
            status::condition(conditions, UNAVAILABLE, true, reason, message, generation),
            status::condition(
                conditions,
                SYNCED,
                false,
                "Unavailable",
                "not synced: the target is unavailable (see the Unavailable condition)",
                generation,
            ),
            existing.and_then(|s| s.last_synced_at.clone()),
        ),
    };
    let mut body = json!({
        "available": matches!(outcome, Outcome::Available { .. }),
        "conditions": [unavailable, synced],
    });
    // Absent fields, never nulls: in an apply, a null would ask to remove the field.
    if let Some(generation) = generation {
        body["observedGeneration"] = json!(generation);
    }
    if let Some(at) = last_synced_at {
        body["lastSyncedAt"] = json!(at);
    }
    body
}

async fn write_status(
    ctx: &Context,
    target: &BackupTarget,
    outcome: &Outcome,
) -> Result<(), kube::Error> {
    let api: Api<BackupTarget> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    let body = status_body(target, outcome);
    match status::apply(&api, &target.name_any(), managers::BACKUP_TARGET, body).await {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing left to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Events: transitions of availability, and syncs that changed something or hit problems.
async fn publish_events(ctx: &Context, target: &BackupTarget, outcome: &Outcome) {
    let was_available = target.status.as_ref().and_then(|s| s.available);
    let previous_message = target
        .status
        .as_ref()
        .and_then(|s| status::find(s.conditions.as_deref(), UNAVAILABLE))
        .map(|c| c.message.as_str());
    match outcome {
        Outcome::Available { report } => {
            if was_available != Some(true) {
                ctx.events
                    .normal(target, "Available", "the store answered")
                    .await;
            }
            if !report.problems.is_empty() {
                ctx.events
                    .warning(target, "SyncIncomplete", report.summary())
                    .await;
            } else if report.changed() {
                ctx.events.normal(target, "Synced", report.summary()).await;
            }
        }
        Outcome::Unavailable { message, .. } => {
            if was_available != Some(false) || previous_message != Some(message.as_str()) {
                ctx.events
                    .warning(target, "Unavailable", message.clone())
                    .await;
            }
        }
    }
}
