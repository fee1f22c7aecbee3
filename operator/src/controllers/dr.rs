//! Disaster-recovery tracking (controller side): every standby volume follows the backup volume
//! its `fromBackup` names. Every `--dr-poll-interval` (30 s by default) one HEAD of that backup
//! volume's `volume.cfg` says whether anything changed; only then is `volume.cfg` read. The
//! newest backup goes to the volume's status (`lastBackup`, `lastBackupAt`, `restoreRequired`,
//! `drLagSeconds`), where the owner agent picks it up and restores incrementally.
//!
//! `restoreRequired` and `drLagSeconds` say where the volume stands against that newest backup
//! ([`standing`]): the lag is the time since the newest backup while it is not restored, 0 once
//! it is. Every poll restates them when they moved (the lag grows while the volume is behind),
//! and the volume controller calls [`settle`] on every change of a volume, so they turn
//! `false`/`0` as soon as the agent records the newest backup as restored, not a poll later.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use backupstore::Store;
use backupstore::target::BackupUrl;
use crd_types::{BackupTarget, Volume};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::metrics::ErrorCategory;
use crate::status;
use crate::stores::pick_target;

const CONTROLLER: &str = "dr";

/// Why a standby volume cannot be tracked; the message goes to the `Standby` condition.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    #[error("spec.fromBackup {url:?} is not a backup URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "no BackupTarget has spec.backupTargetURL {url}: create one (with its credential Secret) so the standby volume can follow its backups"
    )]
    NoTarget { url: String },
    #[error("BackupTarget {target:?}: {source}")]
    Open {
        target: String,
        #[source]
        source: crate::stores::OpenError,
    },
    #[error("{0}")]
    Store(#[from] backupstore::Error),
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

impl TrackError {
    fn category(&self) -> ErrorCategory {
        match self {
            TrackError::BadUrl { .. } | TrackError::NoTarget { .. } => ErrorCategory::Invalid,
            TrackError::Open { .. } | TrackError::Store(_) => ErrorCategory::Store,
            TrackError::Kube(_) => ErrorCategory::Kubernetes,
        }
    }
}

/// What the store says about the followed backup volume: its newest backup and when it was
/// taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    pub backup: String,
    pub at: Option<jiff::Timestamp>,
}

/// Where a standby volume stands against the newest backup of the backup volume it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The newest backup is not restored yet.
    pub restore_required: bool,
    /// Seconds since the newest backup was taken while it is not restored; 0 once it is. None
    /// when the newest backup's time is unknown.
    pub lag_seconds: Option<i64>,
}

/// Where a volume that restored `last_restored` stands at `now` against the `newest` backup,
/// taken at `newest_at`: caught up (not required, lag 0) once the newest backup is the restored
/// one; otherwise behind by the time since the newest backup was taken. (Not the distance
/// between the two backups: a volume that restored the previous backup long ago and misses one
/// taken a second ago is a second behind what the store offers.)
pub fn standing(
    newest: &str,
    newest_at: Option<jiff::Timestamp>,
    last_restored: Option<&str>,
    now: jiff::Timestamp,
) -> Standing {
    if newest.is_empty() || last_restored == Some(newest) {
        // Caught up, or the backup volume holds no backup: nothing to restore.
        return Standing {
            restore_required: false,
            lag_seconds: Some(0),
        };
    }
    Standing {
        restore_required: true,
        lag_seconds: newest_at.map(|at| (now.as_second() - at.as_second()).max(0)),
    }
}

/// The status fields this tracker owns, for `newest` and where the volume stands against it
/// (the `Standby` condition is added by the caller).
pub fn status_body(newest: &Newest, standing: Standing) -> serde_json::Value {
    serde_json::json!({
        "lastBackup": newest.backup,
        "lastBackupAt": newest.at.map(status::Time),
        "restoreRequired": standing.restore_required,
        "drLagSeconds": standing.lag_seconds,
    })
}

/// Where `volume` stands at `now` by its own status: the newest backup the tracker published
/// (`lastBackup`, `lastBackupAt`) against the one the agent restored (`lastRestoredBackup`).
/// None until the tracker published a newest backup.
pub fn standing_of(volume: &Volume, now: jiff::Timestamp) -> Option<Standing> {
    let status = volume.status.as_ref()?;
    let newest = status.last_backup.as_deref()?;
    Some(standing(
        newest,
        status.last_backup_at.as_ref().map(|t| t.0),
        status.last_restored_backup.as_deref(),
        now,
    ))
}

/// The tracker's status fields restating the newest backup `volume`'s status already holds with
/// a new `standing`, and its `Standby` condition as it is (server-side apply drops the fields of
/// a manager that it stops sending).
pub fn restated(volume: &Volume, standing: Standing) -> serde_json::Value {
    let status = volume.status.clone().unwrap_or_default();
    let newest = Newest {
        backup: status.last_backup.unwrap_or_default(),
        at: status.last_backup_at.map(|t| t.0),
    };
    let mut body = status_body(&newest, standing);
    let standby = status::find(status.conditions.as_deref(), "Standby").cloned();
    body["conditions"] = serde_json::json!(standby.into_iter().collect::<Vec<_>>());
    body
}

/// What the volume's status says now about where it stands.
fn stated(volume: &Volume) -> (Option<bool>, Option<i64>) {
    let status = volume.status.as_ref();
    (
        status.and_then(|s| s.restore_required),
        status.and_then(|s| s.dr_lag_seconds),
    )
}

/// Called by the volume controller on every change of a volume: once the agent recorded the
/// newest backup the tracker published as restored (or a restore left a volume behind again),
/// `restoreRequired` and `drLagSeconds` are restated at once instead of at the next poll. A lag
/// that only grew is left to the poll (writing it here would trigger the next change). An
/// activated volume is only ever cleared.
pub async fn settle(ctx: &Context, volume: &Volume) -> Result<(), kube::Error> {
    if volume.spec.from_backup.is_none() {
        return Ok(());
    }
    let Some(standing) = standing_of(volume, jiff::Timestamp::now()) else {
        return Ok(());
    };
    let followed = is_followed(volume);
    if standing.restore_required && !followed {
        return Ok(());
    }
    let (required, lag) = stated(volume);
    let settled = required == Some(standing.restore_required)
        && (standing.restore_required || lag == standing.lag_seconds);
    if settled {
        return Ok(());
    }
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    let applied = restate(&api, volume, standing).await?;
    if applied
        && followed
        && let Some(lag) = standing.lag_seconds
    {
        ctx.metrics
            .dr_lag
            .with_label_values(&[&volume.name_any()])
            .set(lag);
    }
    Ok(())
}

/// Apply [`restated`] fields to `volume` only while it is still the version they were computed
/// from (`metadata.resourceVersion` as a precondition): restating an older `lastBackup` must
/// never undo a newer one the tracker just published. A conflict means the volume changed; that
/// change brings it back here (or to the next poll), so it is no error. Whether it applied.
async fn restate(
    api: &Api<Volume>,
    volume: &Volume,
    standing: Standing,
) -> Result<bool, kube::Error> {
    let mut body = serde_json::json!({
        "apiVersion": <Volume as kube::Resource>::api_version(&()),
        "kind": <Volume as kube::Resource>::kind(&()),
        "status": restated(volume, standing),
    });
    if let Some(version) = volume.resource_version() {
        body["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    let params = kube::api::PatchParams::apply(status::managers::DR).force();
    match api
        .patch_status(&volume.name_any(), &params, &kube::api::Patch::Apply(&body))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

fn timestamp(text: &str) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_str(text).ok()
}

/// Volumes the tracker follows: standby ones, and activated ones until their last restore is
/// done (activation completes only once the newest backup is restored).
pub fn is_followed(volume: &Volume) -> bool {
    let status = volume.status.as_ref();
    volume.spec.from_backup.is_some()
        && (volume.spec.standby || status.and_then(|s| s.is_standby) == Some(true))
}

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let mut stamps: HashMap<String, String> = HashMap::new();
    loop {
        // The caches hold only the operator's namespace.
        let targets: Vec<BackupTarget> = ctx
            .caches
            .backup_targets
            .state()
            .iter()
            .map(|t| (**t).clone())
            .collect();
        let followed: Vec<Arc<Volume>> = ctx
            .caches
            .volumes
            .state()
            .into_iter()
            .filter(|v| is_followed(v))
            .collect();
        stamps.retain(|name, _| {
            let still = followed.iter().any(|v| v.name_any() == *name);
            if !still {
                // Series of volumes no longer followed go with them.
                let _ = ctx.metrics.dr_lag.remove_label_values(&[name]);
            }
            still
        });
        for target in &targets {
            if let Err(error) = protect_target(&ctx, target, &followed).await {
                tracing::warn!(target = %target.name_any(), %error, "cannot update the standby protection of a target");
            }
        }
        for volume in &followed {
            let started = Instant::now();
            let result = track(&ctx, volume, &targets, &mut stamps).await;
            if let Err(error) = &result {
                tracing::warn!(volume = %volume.name_any(), %error, "cannot follow the standby volume's backups");
                ctx.metrics
                    .dr_track_failures
                    .with_label_values(&[error.category().as_str()])
                    .inc();
            }
            ctx.metrics.reconciled(
                CONTROLLER,
                started.elapsed().as_secs_f64(),
                result.map_err(|e| e.category()),
            );
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.dr_poll_interval) => {}
        }
    }
}

/// Finalizer on a BackupTarget that standby volumes follow: deleting it waits for them.
pub const TARGET_IN_USE: &str = "bulwark.io/standby-volumes";
/// The URL the standby volumes follow, recorded when the finalizer is added: a later change of
/// `spec.backupTargetURL` is reported (and the standby volumes keep their data) instead of
/// silently pointing them elsewhere.
pub const FOLLOWED_URL: &str = "bulwark.io/standby-url";

/// The followed volumes that use `target`: their `fromBackup` points at the URL the target had
/// when they started following it (or has now).
pub fn standby_users(target: &BackupTarget, followed: &[Arc<Volume>]) -> Vec<String> {
    let url = target
        .annotations()
        .get(FOLLOWED_URL)
        .filter(|_| target.finalizers().iter().any(|f| f == TARGET_IN_USE))
        .cloned()
        .unwrap_or_else(|| target.spec.backup_target_url.clone());
    let Ok(url) = backupstore::target::TargetUrl::parse(&url) else {
        return Vec::new();
    };
    let mut users: Vec<String> = followed
        .iter()
        .filter(|v| {
            v.spec
                .from_backup
                .as_deref()
                .and_then(|u| BackupUrl::parse(u).ok())
                .is_some_and(|b| b.target.as_str() == url.as_str())
        })
        .map(|v| v.name_any())
        .collect();
    users.sort();
    users
}

/// Hold `target` while standby volumes follow it; report deletions and URL changes it refuses.
async fn protect_target(
    ctx: &Context,
    target: &BackupTarget,
    followed: &[Arc<Volume>],
) -> Result<(), kube::Error> {
    let api: Api<BackupTarget> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    let users = standby_users(target, followed);
    let held = target.finalizers().iter().any(|f| f == TARGET_IN_USE);
    if users.is_empty() {
        if held {
            crate::finalizers::remove(&api, target, TARGET_IN_USE).await?;
        }
        return Ok(());
    }
    let list = users.join(", ");
    if !held {
        let patch = serde_json::json!({"metadata": {"annotations": {FOLLOWED_URL: target.spec.backup_target_url}}});
        api.patch(
            &target.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
        crate::finalizers::add(&api, target, TARGET_IN_USE).await?;
        return Ok(());
    }
    if target.metadata.deletion_timestamp.is_some() {
        ctx.events
            .warning(target, "DeletionRefused", format!("standby volumes {list} follow backups in this target: activate or delete them first"))
            .await;
    }
    if let Some(followed_url) = target.annotations().get(FOLLOWED_URL)
        && *followed_url != target.spec.backup_target_url
    {
        ctx.events
            .warning(
                target,
                "URLChangeRefused",
                format!(
                    "spec.backupTargetURL changed from {followed_url} to {} while standby volumes {list} follow backups there; they keep their data but stop following: change it back, or activate or delete them first",
                    target.spec.backup_target_url
                ),
            )
            .await;
    }
    Ok(())
}

/// One check of one followed volume; `stamps` remembers the last `volume.cfg` seen per volume.
pub async fn track(
    ctx: &Context,
    volume: &Volume,
    targets: &[BackupTarget],
    stamps: &mut HashMap<String, String>,
) -> Result<(), TrackError> {
    let name = volume.name_any();
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    let result = newest_if_changed(ctx, volume, targets, stamps).await;
    let conditions = volume.status.as_ref().and_then(|s| s.conditions.as_deref());
    let generation = volume.metadata.generation;
    let last_restored = volume
        .status
        .as_ref()
        .and_then(|s| s.last_restored_backup.as_deref());
    let now = jiff::Timestamp::now();
    match result {
        Ok(None) => {
            // The store is unchanged, the volume may not be: its restore may have caught up,
            // and the lag grows while it is behind.
            let Some(standing) = standing_of(volume, now) else {
                return Ok(());
            };
            if let Some(lag) = standing.lag_seconds {
                ctx.metrics.dr_lag.with_label_values(&[&name]).set(lag);
            }
            if stated(volume) != (Some(standing.restore_required), standing.lag_seconds) {
                restate(&api, volume, standing).await?;
            }
            Ok(())
        }
        Ok(Some((newest, stamp))) => {
            let standing = standing(&newest.backup, newest.at, last_restored, now);
            let mut body = status_body(&newest, standing);
            let standby = status::condition(
                conditions,
                "Standby",
                true,
                "Following",
                format!("following backup volume; newest backup {}", newest.backup),
                generation,
            );
            body["conditions"] = serde_json::json!([standby]);
            status::apply(&api, &name, status::managers::DR, body).await?;
            if let Some(lag) = standing.lag_seconds {
                ctx.metrics.dr_lag.with_label_values(&[&name]).set(lag);
            }
            if standing.restore_required {
                ctx.events
                    .normal(volume, "NewBackup", format!("backup {} is newer than the restored one; the agent restores it incrementally", newest.backup))
                    .await;
            }
            stamps.insert(name, stamp);
            Ok(())
        }
        Err(error) => {
            let message = error.to_string();
            if status::find(conditions, "Standby").map(|c| c.message.as_str()) != Some(&message) {
                let standby = status::condition(
                    conditions,
                    "Standby",
                    false,
                    "CannotFollow",
                    &message,
                    generation,
                );
                status::apply(
                    &api,
                    &name,
                    status::managers::DR,
                    serde_json::json!({"conditions": [standby]}),
                )
                .await?;
                ctx.events.warning(volume, "CannotFollow", message).await;
            }
            Err(error)
        }
    }
}

async fn newest_if_changed(
    ctx: &Context,
    volume: &Volume,
    targets: &[BackupTarget],
    stamps: &HashMap<String, String>,
) -> Result<Option<(Newest, String)>, TrackError> {
    let from = volume.spec.from_backup.as_deref().unwrap_or_default();
    let url = BackupUrl::parse(from).map_err(|e| TrackError::BadUrl {
        url: from.to_owned(),
        reason: e.to_string(),
    })?;
    let target =
        pick_target(targets, &url.target, &volume.spec.backup_target_name).ok_or_else(|| {
            TrackError::NoTarget {
                url: url.target.as_str().to_owned(),
            }
        })?;
    let store = ctx
        .stores
        .open(&ctx.client, &ctx.config.common.namespace, target)
        .await
        .map_err(|source| TrackError::Open {
            target: target.name_any(),
            source,
        })?;
    let stamp = store.volume_stamp(&url.volume).await;
    ctx.metrics.store_request("stamp", &stamp);
    let Some(stamp) = stamp? else {
        return Err(TrackError::Store(backupstore::Error::VolumeNotFound {
            target: store.label().to_owned(),
            volume: url.volume.clone(),
        }));
    };
    let known = volume
        .status
        .as_ref()
        .is_some_and(|s| s.last_backup.is_some());
    if known && stamps.get(&volume.name_any()) == Some(&stamp) {
        return Ok(None);
    }
    Ok(Some((newest(&store, &url.volume).await?, stamp)))
}

async fn newest(store: &Store, volume: &str) -> Result<Newest, TrackError> {
    let config = store.inspect_volume(volume).await?;
    Ok(Newest {
        backup: config.last_backup_name,
        at: timestamp(&config.last_backup_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{self, json_response};
    use http::{Method, StatusCode};

    fn at(second: i64) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_second(second).ok()
    }

    fn instant(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).expect("a valid time")
    }

    #[test]
    fn lag_is_the_time_since_the_newest_backup_until_it_is_restored() {
        let newest = Newest {
            backup: "b3".into(),
            at: at(1000),
        };
        // Restored b1 long ago, b3 taken 4 s ago: 4 s behind what the store offers (not the
        // distance between b1 and b3).
        let behind = standing("b3", at(1000), Some("b1"), instant(1004));
        assert_eq!(
            behind,
            Standing {
                restore_required: true,
                lag_seconds: Some(4)
            }
        );
        // The lag grows while the newest backup waits.
        assert_eq!(
            standing("b3", at(1000), Some("b1"), instant(1090)).lag_seconds,
            Some(90)
        );
        // Nothing restored yet: behind as well.
        assert!(standing("b3", at(1000), None, instant(1004)).restore_required);
        // Caught up: not required, no lag, however old the backup.
        let caught_up = standing("b3", at(1000), Some("b3"), instant(5000));
        assert_eq!(
            caught_up,
            Standing {
                restore_required: false,
                lag_seconds: Some(0)
            }
        );
        // A clock behind the store's never makes a negative lag; an unknown time none.
        assert_eq!(
            standing("b3", at(1000), Some("b1"), instant(990)).lag_seconds,
            Some(0)
        );
        assert_eq!(
            standing("b3", None, Some("b1"), instant(990)).lag_seconds,
            None
        );
        let body = status_body(&newest, behind);
        assert_eq!(body["restoreRequired"], true);
        assert_eq!(body["drLagSeconds"], 4);
        assert_eq!(body["lastBackup"], "b3");
        let body = status_body(&newest, caught_up);
        assert_eq!(body["restoreRequired"], false);
        assert_eq!(body["drLagSeconds"], 0);
    }

    fn standby(json: serde_json::Value) -> Volume {
        let mut base = serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "dr-1", "namespace": "bulwark-system", "generation": 1},
            "spec": {"size": "8Mi", "standby": true}
        });
        if let (Some(b), serde_json::Value::Object(p)) = (base.as_object_mut(), json) {
            for (k, v) in p {
                if let (Some(serde_json::Value::Object(inner)), serde_json::Value::Object(v)) =
                    (b.get_mut(&k), &v)
                {
                    inner.extend(v.clone());
                } else {
                    b.insert(k, v);
                }
            }
        }
        serde_json::from_value(base).expect("a valid Volume")
    }

    #[test]
    fn a_target_is_held_by_the_standby_volumes_of_its_followed_url() {
        let target = |annotated: Option<&str>, url: &str| -> BackupTarget {
            let mut t = serde_json::json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
                "metadata": {"name": "default", "namespace": "bulwark-system"},
                "spec": {"backupTargetURL": url}
            });
            if let Some(a) = annotated {
                t["metadata"]["annotations"] = serde_json::json!({FOLLOWED_URL: a});
                t["metadata"]["finalizers"] = serde_json::json!([TARGET_IN_USE]);
            }
            serde_json::from_value(t).expect("target")
        };
        let on = |url: &str, name: &str| {
            let mut v = standby(
                serde_json::json!({"spec": {"fromBackup": format!("{url}?backup=b&volume=v")}}),
            );
            v.metadata.name = Some(name.into());
            Arc::new(v)
        };
        let followed = [
            on("s3://a@us-east-1/x/", "dr-b"),
            on("s3://a@us-east-1/x/", "dr-a"),
            on("file:///other", "dr-c"),
        ];
        assert_eq!(
            standby_users(&target(None, "s3://a@us-east-1/x/"), &followed),
            ["dr-a", "dr-b"]
        );
        // The URL was changed under them: they still hold the target by the URL they follow.
        assert_eq!(
            standby_users(
                &target(Some("s3://a@us-east-1/x/"), "s3://b@us-east-1/y/"),
                &followed
            ),
            ["dr-a", "dr-b"]
        );
        assert!(standby_users(&target(None, "s3://b@us-east-1/y/"), &followed).is_empty());
    }

    #[test]
    fn standby_and_activating_volumes_are_followed() {
        let url = "file:///x?backup=backup-1&volume=src";
        assert!(is_followed(&standby(
            serde_json::json!({"spec": {"fromBackup": url}})
        )));
        let activating = standby(
            serde_json::json!({"spec": {"fromBackup": url, "standby": false}, "status": {"isStandby": true}}),
        );
        assert!(is_followed(&activating));
        let active = standby(
            serde_json::json!({"spec": {"fromBackup": url, "standby": false}, "status": {"isStandby": false}}),
        );
        assert!(!is_followed(&active));
    }

    async fn store_with_two_backups(dir: &std::path::Path) -> (String, String) {
        let store = Store::new(
            backupstore::target::local::open_directory(dir).expect("dir"),
            Default::default(),
        );
        let image = dir.join("../image");
        let mut names = Vec::new();
        for round in 0..2u8 {
            std::fs::write(&image, vec![round + 1; 4 << 20]).expect("image");
            let source = Arc::new(backupstore::FileSource::open(&image).expect("source"));
            let outcome = store
                .backup(
                    source,
                    backupstore::BackupOptions::new("src", format!("snap-{round}")),
                )
                .await
                .expect("backup");
            names.push(outcome.name);
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        (names[0].clone(), names[1].clone())
    }

    #[tokio::test]
    async fn a_new_backup_is_published_once_and_an_unchanged_store_costs_one_head() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir).expect("store dir");
        let (first, second) = store_with_two_backups(&store_dir).await;
        let url = format!("file://{}", store_dir.display());
        let target: BackupTarget = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
            "metadata": {"name": "default", "namespace": "bulwark-system"},
            "spec": {"backupTargetURL": url}
        }))
        .expect("target");
        let volume = standby(serde_json::json!({
            "spec": {"fromBackup": format!("{url}?backup={first}&volume=src")},
            "status": {"lastRestoredBackup": first}
        }));
        let (ctx, mut server, events) = testing::context();
        let expected = second.clone();
        let answer = serde_json::to_value(&volume).expect("json");
        let script = tokio::spawn(async move {
            let patch = server
                .expect(
                    Method::PATCH,
                    "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes/dr-1/status",
                )
                .await;
            assert!(
                patch.query.contains("fieldManager=bulwark-dr"),
                "{}",
                patch.query
            );
            let body = patch.json();
            patch.respond(json_response(StatusCode::OK, answer));
            (server, body)
        });
        let mut stamps = HashMap::new();
        let before = jiff::Timestamp::now();
        track(&ctx, &volume, std::slice::from_ref(&target), &mut stamps)
            .await
            .expect("tracked");
        let after = jiff::Timestamp::now();
        let (server, body) = script.await.expect("script");
        assert_eq!(body["status"]["lastBackup"], expected.as_str());
        assert_eq!(body["status"]["restoreRequired"], true);
        assert_eq!(body["status"]["conditions"][0]["type"], "Standby");
        // The lag is the time since the newest backup, measured when it was written.
        let taken: jiff::Timestamp = body["status"]["lastBackupAt"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("lastBackupAt");
        let lag = body["status"]["drLagSeconds"].as_i64().expect("a lag");
        assert!(
            (before.as_second() - taken.as_second()..=after.as_second() - taken.as_second())
                .contains(&lag),
            "{body}"
        );
        assert_eq!(events.lock().expect("events")[0].reason, "NewBackup");
        // Same store, the volume caught up and says so: no request at all (the mock is gone,
        // any would fail).
        drop(server);
        let mut known = volume.clone();
        if let Some(status) = known.status.as_mut() {
            status.last_backup = Some(second.clone());
            status.last_restored_backup = Some(second);
            status.restore_required = Some(false);
            status.dr_lag_seconds = Some(0);
        }
        track(&ctx, &known, std::slice::from_ref(&target), &mut stamps)
            .await
            .expect("nothing changed");
    }

    /// The incident: the agent restored the newest backup 4 s after it was taken, and the
    /// volume kept `restoreRequired: true`, `drLagSeconds: 87` (the gap between the two
    /// backups), because an unchanged store wrote nothing. Now an unchanged store still
    /// restates where the volume stands: caught up, then (for another volume) behind by the
    /// time since the newest backup, which the metric follows.
    #[tokio::test]
    async fn a_poll_of_an_unchanged_store_restates_a_caught_up_or_lagging_volume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir).expect("store dir");
        let (first, second) = store_with_two_backups(&store_dir).await;
        let store = Store::new(
            backupstore::target::local::open_directory(&store_dir).expect("dir"),
            Default::default(),
        );
        let stamp = store
            .volume_stamp("src")
            .await
            .expect("stamp")
            .expect("the volume exists");
        let url = format!("file://{}", store_dir.display());
        let target: BackupTarget = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackupTarget",
            "metadata": {"name": "default", "namespace": "bulwark-system"},
            "spec": {"backupTargetURL": url}
        }))
        .expect("target");
        let following = serde_json::json!({
            "type": "Standby", "status": "True", "reason": "Following",
            "message": format!("following backup volume; newest backup {second}"),
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
        });
        let stale = |restored: &str, backup_at: &str| {
            standby(serde_json::json!({
                "spec": {"fromBackup": format!("{url}?backup={first}&volume=src")},
                "status": {"lastBackup": second, "lastBackupAt": backup_at,
                           "lastRestoredBackup": restored, "restoreRequired": true,
                           "drLagSeconds": 87, "conditions": [following]}
            }))
        };
        let caught_up = stale(&second, "2026-01-01T00:00:00Z");
        let lagging = stale(&first, "2020-01-01T00:00:00Z");
        let (ctx, mut server, events) = testing::context();
        let answer = serde_json::to_value(&caught_up).expect("json");
        let script = tokio::spawn(async move {
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let patch = server
                    .expect(
                        Method::PATCH,
                        "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes/dr-1/status",
                    )
                    .await;
                assert!(
                    patch.query.contains("fieldManager=bulwark-dr"),
                    "{}",
                    patch.query
                );
                bodies.push(patch.json());
                patch.respond(json_response(StatusCode::OK, answer.clone()));
            }
            bodies
        });
        let targets = std::slice::from_ref(&target);
        let mut stamps = HashMap::from([("dr-1".to_owned(), stamp)]);
        track(&ctx, &caught_up, targets, &mut stamps)
            .await
            .expect("tracked");
        let lag_0 = ctx.metrics.dr_lag.with_label_values(&["dr-1"]).get();
        let before = jiff::Timestamp::now();
        track(&ctx, &lagging, targets, &mut stamps)
            .await
            .expect("tracked");
        let lag_1 = ctx.metrics.dr_lag.with_label_values(&["dr-1"]).get();
        // With the client gone, a request the code did not make fails the script, not a hang.
        drop(ctx);
        let bodies = script.await.expect("two status writes");
        let status = &bodies[0]["status"];
        assert_eq!(status["restoreRequired"], false, "{status}");
        assert_eq!(status["drLagSeconds"], 0, "{status}");
        assert_eq!(status["lastBackup"], second.as_str());
        assert_eq!(status["lastBackupAt"], "2026-01-01T00:00:00Z");
        // The tracker's condition goes along unchanged (apply would drop it otherwise).
        assert_eq!(status["conditions"], serde_json::json!([following]));
        assert_eq!(lag_0, 0);
        let status = &bodies[1]["status"];
        assert_eq!(status["restoreRequired"], true, "{status}");
        let since: jiff::Timestamp = "2020-01-01T00:00:00Z".parse().expect("time");
        let lag = status["drLagSeconds"].as_i64().expect("a lag");
        assert!(lag >= before.as_second() - since.as_second(), "{status}");
        assert!(lag > 87, "{status}");
        assert_eq!(lag_1, lag);
        assert!(events.lock().expect("events").is_empty());
    }

    #[tokio::test]
    async fn a_missing_target_is_a_condition_not_a_crash() {
        let volume = standby(
            serde_json::json!({"spec": {"fromBackup": "s3://bucket@us-east-1/x/?backup=b&volume=v"}}),
        );
        let (ctx, mut server, events) = testing::context();
        let answer = serde_json::to_value(&volume).expect("json");
        let script = tokio::spawn(async move {
            let patch = server
                .expect(
                    Method::PATCH,
                    "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes/dr-1/status",
                )
                .await;
            let body = patch.json();
            let condition = &body["status"]["conditions"][0];
            assert_eq!(condition["status"], "False");
            assert!(
                condition["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no BackupTarget has spec.backupTargetURL s3://bucket@us-east-1/x/"),
                "{condition}"
            );
            patch.respond(json_response(StatusCode::OK, answer));
        });
        let error = track(&ctx, &volume, &[], &mut HashMap::new())
            .await
            .expect_err("no target");
        script.await.expect("script");
        assert!(matches!(error, TrackError::NoTarget { .. }));
        assert!(events.lock().expect("events")[0].warning);
    }
}
