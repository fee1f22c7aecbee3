//! The CSI driver `driver.bulwark.io`: the Identity and Controller services of the CSI v1 spec
//! over a unix socket (gRPC), turning the requests of the standard sidecars into our objects.
//! A CreateVolume becomes a Volume (placed and created by the controller and the agents as any
//! other), its StorageClass parameters parsed strictly ([`parameters`]). Errors carry the gRPC
//! code the spec asks for and a message naming the field or parameter and the fix.

pub mod controller;
pub mod identity;
pub mod node;
pub mod parameters;
pub mod snapshots;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bpfman_csi::v1 as proto;
use tokio_util::sync::CancellationToken;

/// The topology key of a volume's node (`NodeGetInfo` and `accessible_topology`).
pub const TOPOLOGY_NODE_KEY: &str = "topology.bulwark.io/node";

/// Why the driver could not serve its socket.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on the CSI socket {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CSI gRPC server stopped: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// Serves `identity` and, when given, `controller` on the unix socket at `path` until
/// `shutdown`. A socket file left by an earlier process is replaced.
pub async fn serve(
    path: &Path,
    identity: identity::IdentityService,
    controller: Option<controller::ControllerService>,
    node: Option<node::NodeService>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listen_error = |source| ServeError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(listen_error)?;
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(listen_error(error));
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(listen_error)?;
    tracing::info!(socket = %path.display(), "CSI driver listening");
    tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(identity))
        .add_optional_service(controller.map(proto::controller_server::ControllerServer::new))
        .add_optional_service(node.map(proto::node_server::NodeServer::new))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// How long CreateVolume waits for a new volume to become Ready before it asks the sidecar to
/// retry.
const READY_WAIT: Duration = Duration::from_secs(20);

/// The CSI services of `bulwark run` on `socket`, until `shutdown`; errors are logged and
/// make `/readyz` say that the driver is not served.
pub async fn run_controller_plugin(
    socket: PathBuf,
    driver_name: String,
    client: kube::Client,
    namespace: String,
    readiness: crate::readiness::Readiness,
    shutdown: CancellationToken,
) {
    let identity = identity::IdentityService {
        driver_name,
        readiness: readiness.clone(),
        controller: true,
    };
    let controller = controller::ControllerService {
        client,
        namespace,
        ready_wait: READY_WAIT,
    };
    if let Err(error) = serve(&socket, identity, Some(controller), None, shutdown).await {
        not_served(&readiness, error);
    }
}

/// The CSI services of `bulwark agent` (Identity and Node) on `socket`, until `shutdown`.
pub async fn run_node_plugin(
    socket: PathBuf,
    driver_name: String,
    node: node::NodeService,
    readiness: crate::readiness::Readiness,
    shutdown: CancellationToken,
) {
    let identity = identity::IdentityService {
        driver_name,
        readiness: readiness.clone(),
        controller: false,
    };
    if let Err(error) = serve(&socket, identity, None, Some(node), shutdown).await {
        not_served(&readiness, error);
    }
}

fn not_served(readiness: &crate::readiness::Readiness, error: ServeError) {
    tracing::error!(%error, "the CSI driver is not served");
    readiness.wait_for(
        "csi",
        format!("{error} (--csi-endpoint / BULWARK_CSI_ENDPOINT)"),
    );
}
