//! The two long-running modes: `run` (controller) and `agent` (node agent).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use config::{AgentConfig, ControllerConfig};
use engine::frontend::{FuseOptions, MountedVolumes};
use tokio_util::sync::CancellationToken;

use crate::agent::{self, AgentContext};
use crate::caches::Caches;
use crate::controllers::{self, Context};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::stores::Stores;
use crate::{cluster, crds, http, leader, shutdown};

/// How often a missing CRD is looked for again.
const CRD_RECHECK: Duration = Duration::from_secs(10);

pub async fn controller(config: ControllerConfig) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    readiness.wait_for("cluster", "connecting to the API server");
    let server = http::serve(
        config.common.http_addr,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let client = cluster::client(&config.common.cluster).await?;
    readiness.done("cluster");

    if config.install_crds {
        crds::install(&client).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot install the CRDs (--install-crds): {e}; {}",
                crds::install_hint(&e)
            )
        })?;
    }
    if !wait_for_crds(&client, &readiness, &shutdown).await {
        return finish(server).await;
    }
    let caches = Caches::start(&client, &config.common.namespace, &readiness, &shutdown);
    // The CSI controller plugin answers on every replica: its sidecars elect their own leader.
    if let Some(socket) = config.csi_socket.clone() {
        tokio::spawn(crate::csi::run_controller_plugin(
            socket,
            config.csi_driver_name.clone(),
            client.clone(),
            config.common.namespace.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
    }

    readiness.wait_for("leader election", "Lease not acquired or observed yet");
    let (mut leading, lease_task) =
        leader::elect(&client, &config.common.namespace, &config.lease).await?;
    let ctx = Arc::new(Context {
        events: Events::new(
            client.clone(),
            "bulwark-controller",
            std::env::var("POD_NAME").ok(),
        ),
        client,
        config: Arc::new(config),
        metrics: metrics.clone(),
        caches,
        stores: Arc::new(Stores::default()),
    });
    let mut running: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        let is_leader = *leading.borrow_and_update();
        // Followers are ready too: they serve metrics and take over when the leader goes.
        readiness.done("leader election");
        metrics.leader.set(i64::from(is_leader));
        match (is_leader, running.take()) {
            (true, None) => {
                tracing::info!("became leader, starting controllers");
                let stop = shutdown.child_token();
                running = Some((
                    stop.clone(),
                    tokio::spawn(controllers::run(ctx.clone(), stop)),
                ));
            }
            (false, Some((stop, task))) => {
                tracing::warn!("lost leadership, stopping controllers");
                stop.cancel();
                let _ = task.await;
            }
            (_, still) => running = still,
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.changed() => if changed.is_err() {
                anyhow::bail!("leader election stopped unexpectedly: {:?}", lease_task.await);
            },
        }
    }
    if let Some((stop, task)) = running {
        stop.cancel();
        let _ = task.await;
    }
    // Dropping the receiver makes the lease task release the Lease, so a successor need not wait
    // for it to expire.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Err(error))) => tracing::warn!(%error, "could not release the Lease"),
        Err(_) => tracing::warn!("releasing the Lease timed out"),
        _ => tracing::info!("Lease released"),
    }
    finish(server).await
}

/// Wait until every CRD is installed and established; false if shut down first.
async fn wait_for_crds(
    client: &kube::Client,
    readiness: &Readiness,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        match crds::not_ready(client).await {
            Ok(waiting) if waiting.is_empty() => return true,
            Ok(waiting) => {
                for (what, why) in &waiting {
                    tracing::warn!(%what, %why, "waiting for CRD");
                    readiness.wait_for(what, why.clone());
                }
                for crd in crd_types::crds::all() {
                    let what = format!("crd {}", crd.metadata.name.unwrap_or_default());
                    if !waiting.iter().any(|(w, _)| *w == what) {
                        readiness.done(&what);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read CRDs, retrying");
                readiness.wait_for("crds", format!("cannot read CRDs: {error}"));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(CRD_RECHECK) => {}
        }
    }
}

async fn finish(server: tokio::task::JoinHandle<()>) -> anyhow::Result<()> {
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

pub async fn agent(config: AgentConfig) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal();
    let metrics = Metrics::new()?;
    let readiness = Readiness::default();
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot use data directory {} (--data-dir / BULWARK_DATA_DIR): {e}",
            config.data_dir.display()
        )
    })?;
    let engine = engine::Engine::open(&config.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the volume data in {} (--data-dir / BULWARK_DATA_DIR): {e}",
            config.data_dir.display()
        )
    })?;
    readiness.wait_for("cluster", "connecting to the API server");
    let server = http::serve(
        config.common.http_addr,
        metrics.clone(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await?;
    let client = cluster::client(&config.common.cluster).await?;
    readiness.done("cluster");
    let frontend = serve_volumes(&config.mount_dir, &readiness);
    if let Some(socket) = config.csi_socket.clone() {
        let node = crate::csi::node::NodeService {
            node_id: config.node_name.clone(),
            volume_dir: config.mount_dir.clone(),
            file_wait: CSI_FILE_WAIT,
            volumes: Some(kube::Api::namespaced(
                client.clone(),
                &config.common.namespace,
            )),
        };
        tokio::spawn(crate::csi::run_node_plugin(
            socket,
            config.csi_driver_name.clone(),
            node,
            readiness.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(node = %config.node_name, data_dir = %config.data_dir.display(), "agent started");
    // NFS exports are mounted under the data dir, the one host path the DaemonSet gives.
    let stores = Arc::new(Stores::new(backupstore::target::ConnectOptions {
        nfs_mount_root: config.data_dir.join("nfs"),
        ..Default::default()
    }));
    let ctx = Arc::new(AgentContext {
        events: Events::new(
            client.clone(),
            "bulwark-agent",
            Some(config.node_name.clone()),
        ),
        namespace: config.common.namespace.clone(),
        node: config.node_name.clone(),
        operations: Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_operations as usize,
        )),
        config: Arc::new(config),
        client,
        engine: Arc::new(engine),
        stores,
        metrics,
        frontend,
    });
    agent::run(ctx.clone(), shutdown.clone()).await;
    if let Ok(ctx) = Arc::try_unwrap(ctx)
        && let Some(frontend) = ctx.frontend
        && let Err(error) = frontend.unmount()
    {
        tracing::warn!(%error, "cannot unmount the FUSE frontend");
    }
    finish(server).await
}

/// How long NodeStage waits for this agent to serve a volume's file (a volume just created).
const CSI_FILE_WAIT: Duration = Duration::from_secs(10);

/// What `/readyz` waits for while the agent's volumes cannot be served.
const FRONTEND: &str = "volume frontend";

/// The FUSE directory serving this node's volumes at `mount_dir`, created when missing and
/// freed of a mount left by a killed agent. When it cannot be had, data work (snapshots,
/// backups, restores) still runs, but the agent is not ready and `/readyz` says why.
fn serve_volumes(mount_dir: &Path, readiness: &Readiness) -> Option<MountedVolumes> {
    let mounted = engine::frontend::prepare_mount_point(mount_dir)
        .and_then(|()| MountedVolumes::mount(mount_dir, &FuseOptions::default()));
    match mounted {
        Ok(mounted) => {
            readiness.done(FRONTEND);
            Some(mounted)
        }
        Err(error) => {
            tracing::error!(%error, dir = %mount_dir.display(),
                "cannot mount the FUSE frontend (--mount-dir / BULWARK_MOUNT_DIR): volumes will not be served");
            readiness.wait_for(
                FRONTEND,
                format!("volumes cannot be served (--mount-dir / BULWARK_MOUNT_DIR): {error}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_mount_dir_keeps_the_agent_unready_and_says_why() {
        let dir = tempfile::tempdir().expect("temp dir");
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"").expect("write");
        let readiness = Readiness::default();
        assert!(serve_volumes(&not_a_dir, &readiness).is_none());
        let waiting = readiness.waiting();
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        assert!(
            waiting[0].starts_with("volume frontend: volumes cannot be served (--mount-dir")
                && waiting[0].contains(&not_a_dir.display().to_string()),
            "{waiting:?}"
        );
    }

    /// The default mount dir (`<data-dir>/mnt`) does not exist on a fresh node.
    #[test]
    fn a_missing_mount_dir_is_created_and_served() {
        if !crate::agent::volumes::tests::fuse_available() {
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mount_dir = dir.path().join("data/mnt");
        let readiness = Readiness::default();
        let mounted = serve_volumes(&mount_dir, &readiness).expect("served");
        assert!(readiness.waiting().is_empty(), "{:?}", readiness.waiting());
        assert_eq!(mounted.mount_point(), mount_dir);
        mounted.unmount().expect("unmounted");
    }
}
