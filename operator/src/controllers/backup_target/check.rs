//! Pure checks of a BackupTarget before anything is opened: the URL (as the CRD's CEL rules and
//! the store's parser see it), the poll interval, and that no earlier target points at the
//! same place (two targets on one store would mirror, and delete, each other's objects).

use std::path::PathBuf;
use std::sync::Arc;

use backupstore::target::{TargetKind, TargetUrl};
use crd_types::BackupTarget;
use crd_types::backup_target::{rules, validate_target_url};
use crd_types::common::parse_go_duration;
use kube::ResourceExt;

use crate::metrics::ErrorCategory;

/// Why a target is refused before any I/O: a condition reason, a message naming the field and
/// the fix, and the category for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
    pub category: ErrorCategory,
}

impl Refusal {
    fn invalid(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            category: ErrorCategory::Invalid,
        }
    }
}

/// The parsed URL of `target`, or why it cannot be used. `others` are the other targets
/// (of the same namespace) as the cache holds them.
pub fn check(target: &BackupTarget, others: &[Arc<BackupTarget>]) -> Result<TargetUrl, Refusal> {
    let text = &target.spec.backup_target_url;
    if text.is_empty() {
        return Err(Refusal::invalid(
            "NoURL",
            "spec.backupTargetURL is empty: set it to s3://<bucket>@<region>/<path>/, nfs://<host>:/<path> or file:///<path> to use this target",
        ));
    }
    // The CRD's rules (`$` and `,` in the path, shapes) again: objects created before a rule
    // existed, or written around admission, must not slip through.
    if let Err(errors) = validate_target_url(text) {
        return Err(Refusal::invalid("InvalidURL", errors.to_string()));
    }
    let url = crate::stores::target_url(target)
        .map_err(|e| Refusal::invalid("InvalidURL", e.to_string()))?;
    if parse_go_duration(&target.spec.poll_interval).is_none() {
        return Err(Refusal::invalid(
            "InvalidPollInterval",
            format!(
                "{} (got {:?})",
                rules::POLL_INTERVAL_MSG,
                target.spec.poll_interval
            ),
        ));
    }
    if let Some(first) = earlier_at_same_place(target, &url, others) {
        return Err(Refusal::invalid(
            "DuplicateURL",
            format!(
                "spec.backupTargetURL {text:?} points at the same place as BackupTarget {:?} ({:?}), which was created first; two targets must never share a store: point this one elsewhere or delete it",
                first.name_any(),
                first.spec.backup_target_url
            ),
        ));
    }
    Ok(url)
}

/// Where a URL stores its data, in a form in which two spellings of one place are equal:
/// file paths without trailing or repeated slashes, NFS without mount options, S3 without
/// the region (a bucket name designates one bucket; the region only says where it lives).
pub fn place(url: &TargetUrl) -> String {
    match url.kind() {
        TargetKind::File { path } => {
            let normal: PathBuf = path.components().collect();
            format!("file:{}", normal.display())
        }
        TargetKind::Nfs { host, export, .. } => {
            let export: PathBuf = std::path::Path::new(export).components().collect();
            format!("nfs:{}:{}", host.to_ascii_lowercase(), export.display())
        }
        TargetKind::S3 { bucket, prefix, .. } => {
            let prefix: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
            format!("s3:{bucket}/{}", prefix.join("/"))
        }
    }
}

/// The earliest-created other target at the same place as `url`, if it was created before
/// `target` (ties broken by name, so exactly one of two duplicates is refused).
fn earlier_at_same_place<'a>(
    target: &BackupTarget,
    url: &TargetUrl,
    others: &'a [Arc<BackupTarget>],
) -> Option<&'a BackupTarget> {
    let mine = place(url);
    let key = |t: &BackupTarget| {
        (
            t.metadata.creation_timestamp.as_ref().map(|c| c.0),
            t.name_any(),
        )
    };
    let own_key = key(target);
    others
        .iter()
        .map(|o| o.as_ref())
        .filter(|o| o.name_any() != target.name_any() && o.metadata.deletion_timestamp.is_none())
        .filter(|o| {
            TargetUrl::parse(&o.spec.backup_target_url).is_ok_and(|other| place(&other) == mine)
        })
        .filter(|o| key(o) < own_key)
        .min_by_key(|o| key(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crd_types::BackupTargetSpec;
    use crd_types::common::Time;

    fn target(name: &str, url: &str, created: i64) -> BackupTarget {
        let mut t = BackupTarget::new(
            name,
            BackupTargetSpec {
                backup_target_url: url.into(),
                credential_secret: None,
                poll_interval: "300s".into(),
                sync_requested_at: None,
            },
        );
        t.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_second(created).expect("valid time"),
        ));
        t
    }

    #[test]
    fn urls_are_checked_like_the_schema() {
        let others = [];
        for (url, reason) in [
            ("", "NoURL"),
            ("file:///backups/a$b", "InvalidURL"),
            ("file:///backups/a,b", "InvalidURL"),
            ("nfs://server:/export/x,y", "InvalidURL"),
            ("ftp://x/y", "InvalidURL"),
            ("s3://bucket", "InvalidURL"),
            ("file://relative", "InvalidURL"),
            ("cifs://server/share", "InvalidURL"),
        ] {
            let refusal = check(&target("t", url, 1), &others).expect_err(url);
            assert_eq!(refusal.reason, reason, "{url}: {}", refusal.message);
            assert!(
                refusal.message.contains("backupTargetURL") || refusal.message.contains("target"),
                "{url}: {}",
                refusal.message
            );
        }
        assert!(check(&target("t", "s3://bucket@us-east-1/backups/", 1), &others).is_ok());
        assert!(
            check(
                &target("t", "nfs://server:/export?nfsOptions=soft", 1),
                &others
            )
            .is_ok()
        );
    }

    #[test]
    fn a_bad_poll_interval_is_refused() {
        let mut t = target("t", "file:///backups", 1);
        t.spec.poll_interval = "5 minutes".into();
        let refusal = check(&t, &[]).expect_err("refused");
        assert_eq!(refusal.reason, "InvalidPollInterval");
        assert!(refusal.message.contains("spec.pollInterval"));
    }

    #[test]
    fn spellings_of_one_place_are_equal() {
        let same = [
            ("file:///backups/a", "file:///backups/a/"),
            (
                "nfs://server:/export",
                "nfs://server:/export/?nfsOptions=soft",
            ),
            ("s3://b@us-east-1/x/y/", "s3://b/x/y/"),
            ("s3://b@us-east-1/", "s3://b@eu-west-1/"),
        ];
        for (a, b) in same {
            let (a, b) = (TargetUrl::parse(a).expect(a), TargetUrl::parse(b).expect(b));
            assert_eq!(place(&a), place(&b));
        }
        let different = [
            ("file:///backups/a", "file:///backups/b"),
            ("s3://b@r/x/", "s3://c@r/x/"),
            ("s3://b@r/x/", "s3://b@r/x/y/"),
            ("nfs://one:/export", "nfs://two:/export"),
        ];
        for (a, b) in different {
            let (a, b) = (TargetUrl::parse(a).expect(a), TargetUrl::parse(b).expect(b));
            assert_ne!(place(&a), place(&b));
        }
    }

    #[test]
    fn the_later_of_two_targets_at_one_place_is_refused() {
        let first = Arc::new(target("first", "s3://b@us-east-1/backups/", 10));
        let second = Arc::new(target("second", "s3://b/backups", 20));
        let all = [first.clone(), second.clone()];
        assert!(check(&first, &all).is_ok());
        let refusal = check(&second, &all).expect_err("duplicate");
        assert_eq!(refusal.reason, "DuplicateURL");
        assert!(refusal.message.contains("\"first\""), "{}", refusal.message);
        // Same creation second: the name decides, so exactly one is refused.
        let twin = Arc::new(target("a-twin", "s3://b/backups/", 10));
        let all = [first.clone(), twin.clone()];
        assert!(check(&twin, &all).is_ok());
        assert_eq!(check(&first, &all).expect_err("dup").reason, "DuplicateURL");
        // A target being deleted no longer holds the place.
        let mut leaving = target("leaving", "s3://b/backups/", 1);
        leaving.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(check(&second, &[Arc::new(leaving)]).is_ok());
    }
}
