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
/// subresource.
pub async fn apply<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
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
}
