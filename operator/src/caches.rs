//! Watch caches of every Bulwark kind, primed before the process reports ready.

use std::fmt::Debug;
use std::hash::Hash;

use crd_types::{BackingImage, Backup, BackupTarget, BackupVolume, RecurringJob, Snapshot, Volume};
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;

/// Read-only views of every object of our kinds, kept current by watches.
#[derive(Clone)]
pub struct Caches {
    pub backup_targets: Store<BackupTarget>,
    pub backup_volumes: Store<BackupVolume>,
    pub backups: Store<Backup>,
    pub volumes: Store<Volume>,
    pub snapshots: Store<Snapshot>,
    pub backing_images: Store<BackingImage>,
    pub recurring_jobs: Store<RecurringJob>,
}

impl Caches {
    /// Start one watch per kind; each is listed in `/readyz` until its first listing arrived.
    /// Objects of `namespace` only: the operator's objects all live there, and the RBAC Role
    /// grants no more.
    pub fn start(
        client: &kube::Client,
        namespace: &str,
        readiness: &Readiness,
        shutdown: &CancellationToken,
    ) -> Caches {
        Caches {
            backup_targets: watch(client, namespace, readiness, shutdown),
            backup_volumes: watch(client, namespace, readiness, shutdown),
            backups: watch(client, namespace, readiness, shutdown),
            volumes: watch(client, namespace, readiness, shutdown),
            snapshots: watch(client, namespace, readiness, shutdown),
            backing_images: watch(client, namespace, readiness, shutdown),
            recurring_jobs: watch(client, namespace, readiness, shutdown),
        }
    }
}

impl Caches {
    /// Caches that stay empty (tests fill what they need through `reflector::store()` writers).
    pub fn empty() -> Caches {
        Caches {
            backup_targets: reflector::store().0,
            backup_volumes: reflector::store().0,
            backups: reflector::store().0,
            volumes: reflector::store().0,
            snapshots: reflector::store().0,
            backing_images: reflector::store().0,
            recurring_jobs: reflector::store().0,
        }
    }
}

fn watch<K>(
    client: &kube::Client,
    namespace: &str,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> Store<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let plural = K::plural(&K::DynamicType::default()).into_owned();
    let what = format!("cache {plural}");
    readiness.wait_for(&what, "first listing not received yet");
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<K>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    // The watcher retries with backoff; the error only needs to be seen.
                    Some(Err(error)) => tracing::warn!(%error, kind = %plural, "watch failed, retrying"),
                    None => return,
                },
            }
        }
    });
    let primed = reader.clone();
    let readiness = readiness.clone();
    tokio::spawn(async move {
        if primed.wait_until_ready().await.is_ok() {
            readiness.done(&what);
        }
    });
    reader
}
