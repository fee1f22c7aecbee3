//! Status writes: server-side apply of `status` under one field manager per writer, and
//! conditions that keep their `lastTransitionTime` while their status does not change.
//!
//! Conditions are a list map keyed by `type` in every schema, so the controller and the agent
//! each apply only the conditions they own and the API server merges them.

pub use crd_types::common::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Field managers: one per writer, so `kubectl get -o yaml --show-managed-fields` says who
/// wrote what.
pub mod managers {
    pub const BACKUP_TARGET: &str = "bulwark-backup-target";
    pub const VOLUME: &str = "bulwark-volume";
    pub const BACKUP: &str = "bulwark-backup";
    /// The agent on one node (`bulwark-agent-<node>` would make every node a new owner of the
    /// same fields when a volume moves; one name keeps apply conflicts away).
    pub const AGENT: &str = "bulwark-agent";
    /// The agent's backup work: Backup status and the Volume's `lastBackup`/`lastBackupAt`
    /// (a separate manager, so applies of volume state never drop the backup fields).
    pub const AGENT_BACKUP: &str = "bulwark-agent-backup";
    /// DR tracking (controller): a standby volume's `lastBackup`, `lastBackupAt`,
    /// `restoreRequired`, `drLagSeconds` and its `Standby` condition.
    pub const DR: &str = "bulwark-dr";
}

/// A condition of `type_`, carrying over `lastTransitionTime` from `existing` when the status
/// is unchanged.
pub fn condition(
    existing: Option<&[Condition]>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    condition_at(
        existing,
        type_,
        ok,
        reason,
        message,
        observed_generation,
        jiff::Timestamp::now(),
    )
}

/// [`condition`] with the clock's reading passed in (the scheduler's clock is injectable).
pub fn condition_at(
    existing: Option<&[Condition]>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = match find(existing, type_) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        last_transition_time,
        observed_generation,
    }
}

/// The condition of `type_` in `conditions`, if any.
pub fn find<'a>(conditions: Option<&'a [Condition]>, type_: &str) -> Option<&'a Condition> {
    conditions
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == type_)
}

/// Now, as the API's time type.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Server-side apply `status` (a JSON object: the fields this manager owns) to `name`'s status
/// subresource. Where the API server cannot apply to the object as it stands (see
/// [`cannot_apply`]), the same fields are written with a merge patch instead.
pub async fn apply<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    match api
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Err(error) if cannot_apply(&error) => {
            tracing::warn!(%error, kind = K::kind(&()).as_ref(), name,
                "server-side apply refused by the object's current state; writing status with a merge patch");
            merge(api, name, manager, status).await
        }
        applied => applied,
    }
}

/// Server-side apply types the live object first; when that fails, as it does for a finalizer
/// that another controller appended twice ("duplicate entries for key"; the external
/// snapshot-controller does that to VolumeSnapshotContents), every apply fails with 500 for as
/// long as the object stays so. Plain patches are not refused for it.
fn cannot_apply(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 500
        && (status.message.contains("duplicate entries for key")
            || status.message.contains("failed to create typed live object")))
}

/// Writes `status` as a JSON merge patch guarded by the resourceVersion it was merged against
/// (a concurrent write makes it fail with 409 rather than be overwritten). Objects merge field
/// by field on the server; `conditions` (a list, which a merge patch replaces whole) is merged
/// here by `type`, so conditions of other writers stay.
async fn merge<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    mut status: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let current: serde_json::Value =
        serde_json::to_value(api.get(name).await?).map_err(kube::Error::SerdeError)?;
    if let Some(ours) = status.get_mut("conditions")
        && let Some(ours_list) = ours.as_array()
    {
        let mut merged: Vec<serde_json::Value> = current["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for condition in ours_list {
            match merged.iter_mut().find(|c| c["type"] == condition["type"]) {
                Some(existing) => *existing = condition.clone(),
                None => merged.push(condition.clone()),
            }
        }
        *ours = serde_json::Value::Array(merged);
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
        "status": status,
    });
    let params = PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    };
    api.patch_status(name, &params, &Patch::Merge(&patch)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let old = condition(None, "Ready", true, "Created", "ok", Some(1));
        let mut aged = old.clone();
        aged.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        let existing = [aged.clone()];
        let same = condition(
            Some(&existing),
            "Ready",
            true,
            "Served",
            "still ok",
            Some(2),
        );
        assert_eq!(same.last_transition_time, aged.last_transition_time);
        assert_eq!(same.message, "still ok");
        let flipped = condition(Some(&existing), "Ready", false, "Faulted", "bad", Some(2));
        assert_ne!(flipped.last_transition_time, aged.last_transition_time);
        assert_eq!(flipped.status, "False");
    }

    /// When apply is refused for the object's state, conditions written by other managers
    /// survive the merge patch that replaces it, and ours replace their older selves.
    #[tokio::test]
    async fn a_refused_apply_becomes_a_guarded_merge_that_keeps_other_conditions() {
        use crate::controllers::testing::{ApiServer, json_response};
        use http::{Method, StatusCode};
        let path = "/apis/bulwark.io/v1beta1/namespaces/ns/volumes/v1";
        let (client, mut server) = ApiServer::start();
        let api: Api<crd_types::Volume> = Api::namespaced(client, "ns");
        let placed = serde_json::json!({"type": "Placed", "status": "True", "reason": "Placed",
            "message": "on n1", "lastTransitionTime": "2026-12-01T00:00:00Z"});
        let old_ready = serde_json::json!({"type": "Ready", "status": "False", "reason": "Creating",
            "message": "", "lastTransitionTime": "2026-12-01T00:00:00Z"});
        let new_ready = serde_json::json!({"type": "Ready", "status": "True", "reason": "Served",
            "message": "served", "lastTransitionTime": "2026-12-02T00:00:00Z"});
        let live = serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "v1", "namespace": "ns", "resourceVersion": "7",
                         "finalizers": ["x", "x"]},
            "spec": {"size": "1Mi"},
            "status": {"state": "Creating", "conditions": [placed, old_ready]}
        });
        let reply = live.clone();
        let script = tokio::spawn(async move {
            let apply = server
                .expect(Method::PATCH, &format!("{path}/status"))
                .await;
            apply.respond(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "code": 500, "message": ".metadata.finalizers: duplicate entries for key [value=\"x\"]"}),
            ));
            server
                .expect(Method::GET, path)
                .await
                .respond(json_response(StatusCode::OK, reply.clone()));
            let merge = server
                .expect(Method::PATCH, &format!("{path}/status"))
                .await;
            let body = merge.json();
            merge.respond(json_response(StatusCode::OK, reply));
            body
        });
        apply(
            &api,
            "v1",
            managers::AGENT,
            serde_json::json!({"state": "Ready", "conditions": [new_ready]}),
        )
        .await
        .expect("written");
        let body = tokio::time::timeout(std::time::Duration::from_secs(10), script)
            .await
            .expect("every request sent")
            .expect("script");
        assert_eq!(
            body,
            serde_json::json!({
                "metadata": {"resourceVersion": "7"},
                "status": {"state": "Ready", "conditions": [placed, new_ready]}
            })
        );
    }

    #[test]
    fn only_failures_to_type_the_live_object_switch_to_a_merge_patch() {
        let error = |code: u16, message: &str| {
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "code": code, "message": message, "reason": ""
                }))
                .expect("a Status"),
            ))
        };
        assert!(cannot_apply(&error(
            500,
            "failed to create typed live object: .metadata.finalizers: duplicate entries for key"
        )));
        assert!(!cannot_apply(&error(500, "etcdserver: request timed out")));
        assert!(!cannot_apply(&error(409, "duplicate entries for key")));
    }
}
