//! The controllers `bulwark run` runs while it leads. Each lives in its own module: wiring,
//! a reconcile pipeline (read → validate → build → apply → status), pure parts unit-tested.

pub mod backing_image;
pub mod backup_target;
pub mod backups;
pub mod default_target;
pub mod dr;
pub mod object_metrics;
pub mod pvc_labels;
pub mod snapshot_content;
#[cfg(test)]
pub mod testing;
pub mod volume;

use std::sync::Arc;
use std::time::Duration;

use config::ControllerConfig;
use tokio_util::sync::CancellationToken;

use crate::caches::Caches;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::stores::Stores;

/// What every controller gets.
pub struct Context {
    pub client: kube::Client,
    pub config: Arc<ControllerConfig>,
    pub metrics: Metrics,
    pub caches: Caches,
    pub events: Events,
    /// One open handle per BackupTarget.
    pub stores: Arc<Stores>,
}

/// VolumeSnapshotContents are fulfilled by the operator itself unless it serves the CSI
/// Controller service: then the csi-snapshotter sidecar does it through CreateSnapshot, and two
/// of them would make every snapshot twice.
async fn run_snapshot_content(ctx: Arc<Context>, stop: CancellationToken) {
    if ctx.config.csi_socket.is_some() {
        tracing::info!(
            "VolumeSnapshotContents are left to the csi-snapshotter sidecar (--csi-endpoint is set)"
        );
        return snapshot_content::release_finalizers(ctx, stop).await;
    }
    snapshot_content::run(ctx, stop).await
}

/// Run every controller until `stop` fires (leadership lost or shutdown).
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let bootstrap = tokio::spawn(ensure_default_target(ctx.clone(), stop.clone()));
    tokio::join!(
        backup_target::run(ctx.clone(), stop.clone()),
        backups::run(ctx.clone(), stop.clone()),
        volume::run(ctx.clone(), stop.clone()),
        object_metrics::run(ctx.clone(), stop.clone()),
        dr::run(ctx.clone(), stop.clone()),
        backing_image::run(ctx.clone(), stop.clone()),
        run_snapshot_content(ctx.clone(), stop.clone()),
        pvc_labels::run(ctx.clone(), stop.clone()),
        crate::scheduler::run(ctx.clone(), stop.clone()),
    );
    let _ = bootstrap.await;
}

/// Create the `default` BackupTarget from configuration, retrying until it is done.
async fn ensure_default_target(ctx: Arc<Context>, stop: CancellationToken) {
    let Some(url) = ctx.config.default_backup_target.clone() else {
        return;
    };
    let namespace = ctx.config.common.namespace.clone();
    let mut delay = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        let result = default_target::ensure(&ctx.client, &namespace, &url).await;
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|_| crate::metrics::ErrorCategory::Kubernetes);
        ctx.metrics.reconciled(
            "default-backup-target",
            started.elapsed().as_secs_f64(),
            outcome,
        );
        match result {
            Ok(outcome) => {
                tracing::info!(?outcome, %namespace, "default backup target checked");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot create the default backup target, retrying")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => delay = (delay * 2).min(Duration::from_secs(60)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wiring `bulwark run` starts while leading: every controller comes up against an API
    /// server with no objects, asks only for what the RBAC grants the controller, and stops
    /// when told to.
    #[tokio::test]
    async fn every_controller_starts_within_its_rbac_and_stops() {
        let (ctx, server, _events) = testing::context();
        let stop = CancellationToken::new();
        let running = tokio::spawn(run(Arc::new(ctx), stop.clone()));
        let seen = server.serve_empty(Duration::from_secs(3)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("every controller stops when told to")
            .expect("no controller panicked");
        let namespaced = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/";
        for kind in [
            "volumes",
            "backuptargets",
            "backups",
            "backingimages",
            "recurringjobs",
        ] {
            assert!(
                seen.iter()
                    .any(|r| r.starts_with(&format!("GET {namespaced}{kind}?"))),
                "nothing listed or watched {kind}: {seen:#?}"
            );
        }
        assert!(
            seen.iter().any(|r| r.starts_with(
                "POST /apis/bulwark.io/v1beta1/namespaces/bulwark-system/backuptargets?"
            )),
            "the default target was not created: {seen:#?}"
        );
        assert!(
            seen.iter().any(|r| r.contains("/volumesnapshotcontents?")),
            "VolumeSnapshotContents were not looked for: {seen:#?}"
        );
    }
}
