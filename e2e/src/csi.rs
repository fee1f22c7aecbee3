//! kubelet's part in the CSI scenarios of local mode (a bare API server has no kubelet): stage
//! and publish a volume through a node's CSI socket as kubelet does for a pod, and undo it.

use std::path::{Path, PathBuf};

use bpfman_csi::v1 as proto;
use proto::node_client::NodeClient;
use proto::volume_capability;
use tonic::transport::{Channel, Endpoint, Uri};

/// kubelet of one simulated node.
pub struct Kubelet {
    node: NodeClient<Channel>,
    /// Where staging and publish paths go (kubelet's `/var/lib/kubelet`).
    dir: PathBuf,
}

fn ext4_read_write_once() -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            },
        )),
    }
}

impl Kubelet {
    /// Connects to the node plugin at `socket`; paths go under `dir`.
    pub async fn connect(socket: &Path, dir: PathBuf) -> Kubelet {
        let path = socket.to_owned();
        let channel = Endpoint::try_from("http://node-plugin.invalid")
            .expect("an endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                tokio::net::UnixStream::connect(path.clone())
            }))
            .await
            .unwrap_or_else(|e| panic!("the node plugin at {} answers: {e}", socket.display()));
        Kubelet {
            node: NodeClient::new(channel),
            dir,
        }
    }

    fn staging(&self, volume: &str) -> PathBuf {
        self.dir.join("plugins/staging").join(volume)
    }

    fn target(&self, volume: &str) -> PathBuf {
        self.dir.join("pods/volumes").join(volume)
    }

    /// Stages and publishes `volume` as an ext4 file system, as for a pod; answers where the
    /// pod sees it.
    pub async fn mount(&mut self, volume: &str) -> PathBuf {
        let staging = self.staging(volume);
        let target = self.target(volume);
        self.node
            .node_stage_volume(proto::NodeStageVolumeRequest {
                volume_id: volume.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(ext4_read_write_once()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("NodeStageVolume {volume}: {e}"));
        self.node
            .node_publish_volume(proto::NodePublishVolumeRequest {
                volume_id: volume.into(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(ext4_read_write_once()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("NodePublishVolume {volume}: {e}"));
        target
    }

    /// Unpublishes and unstages `volume`, as when its pod goes.
    pub async fn unmount(&mut self, volume: &str) {
        self.node
            .node_unpublish_volume(proto::NodeUnpublishVolumeRequest {
                volume_id: volume.into(),
                target_path: self.target(volume).display().to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("NodeUnpublishVolume {volume}: {e}"));
        self.node
            .node_unstage_volume(proto::NodeUnstageVolumeRequest {
                volume_id: volume.into(),
                staging_target_path: self.staging(volume).display().to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("NodeUnstageVolume {volume}: {e}"));
    }
}
