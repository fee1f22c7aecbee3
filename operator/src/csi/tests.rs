//! Every RPC over a real unix socket with tonic's client; the Controller service against the
//! mock API server, whose script checks each request the driver makes.

use std::path::PathBuf;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use super::controller::ControllerService;
use super::identity::IdentityService;
use super::proto::controller_client::ControllerClient;
use super::proto::identity_client::IdentityClient;
use super::proto::{self, volume_capability, volume_content_source};
use crate::controllers::testing::{ApiServer, json_response, not_found};
use crate::readiness::Readiness;

const VOLUMES: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes";

/// The driver serving on a socket in a temp dir, and a client channel to it.
struct Driver {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    channel: Channel,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<Result<(), super::ServeError>>,
}

impl Driver {
    async fn start(readiness: Readiness, controller: Option<ControllerService>) -> Driver {
        Self::start_services(readiness, controller, None).await
    }

    async fn start_services(
        readiness: Readiness,
        controller: Option<ControllerService>,
        node: Option<super::node::NodeService>,
    ) -> Driver {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("plugin/csi.sock");
        // A socket file left by an earlier process must not stop the driver.
        std::fs::create_dir_all(socket.parent().expect("parent")).expect("dir");
        std::fs::write(&socket, b"stale").expect("stale socket file");
        let identity = IdentityService {
            driver_name: "driver.bulwark.io".into(),
            readiness,
            controller: controller.is_some(),
        };
        let stop = CancellationToken::new();
        let served = {
            let socket = socket.clone();
            let stop = stop.clone();
            tokio::spawn(
                async move { super::serve(&socket, identity, controller, node, stop).await },
            )
        };
        // The server may not listen yet on the first try.
        let channel = match connect(&socket).await {
            Ok(channel) => channel,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                connect(&socket)
                    .await
                    .expect("the driver listens on its socket")
            }
        };
        Driver {
            _dir: dir,
            socket,
            channel,
            stop,
            served,
        }
    }

    /// The Controller service alone, answering at once (no waiting for Ready).
    async fn controller_only(client: kube::Client) -> Driver {
        Self::start(
            Readiness::default(),
            Some(controller_service(client, Duration::ZERO)),
        )
        .await
    }

    fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel.clone())
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("the server stops when told to")
            .expect("no panic")
            .expect("served without error");
        assert!(!self.socket.exists(), "the socket file is removed");
    }
}

/// A client channel over the unix socket at `socket`.
async fn connect(socket: &std::path::Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_owned();
    Endpoint::try_from("http://driver.invalid")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            tokio::net::UnixStream::connect(path.clone())
        }))
        .await
}

fn controller_service(client: kube::Client, ready_wait: Duration) -> ControllerService {
    ControllerService {
        client,
        namespace: "bulwark-system".into(),
        ready_wait,
    }
}

fn rwo_mount() -> proto::VolumeCapability {
    capability(
        volume_capability::access_mode::Mode::SingleNodeWriter,
        volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        }),
    )
}

fn capability(
    mode: volume_capability::access_mode::Mode,
    access: volume_capability::AccessType,
) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(access),
    }
}

fn create_request(name: &str, required: i64) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwo_mount()],
        ..Default::default()
    }
}

fn volume_json(name: &str, size: &str, state: Option<&str>, owner: Option<&str>) -> Value {
    json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name, "namespace": "bulwark-system", "resourceVersion": "7"},
        "spec": {"size": size},
        "status": {"state": state, "ownerID": owner},
    })
}

/// The script's result; a script still waiting for a request the driver never sent fails the
/// test instead of hanging it.
async fn finish<T>(script: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), script)
        .await
        .expect("the driver sent every request the script expects")
        .expect("script")
}

#[tokio::test]
async fn identity_names_the_driver_its_services_and_readiness() {
    let readiness = Readiness::default();
    readiness.wait_for("leader election", "not yet");
    let driver = Driver::start(readiness.clone(), None).await;
    let mut identity = IdentityClient::new(driver.channel.clone());
    let info = identity
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.name, "driver.bulwark.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let capabilities = identity
        .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
        .await
        .expect("capabilities")
        .into_inner()
        .capabilities;
    use proto::plugin_capability::{Type, service};
    let services: Vec<i32> = capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert_eq!(
        services,
        vec![service::Type::VolumeAccessibilityConstraints as i32],
        "a node-only driver does not announce the Controller service"
    );
    assert!(
        capabilities.iter().any(|c| matches!(
            &c.r#type,
            Some(Type::VolumeExpansion(e))
                if e.r#type == proto::plugin_capability::volume_expansion::Type::Online as i32
        )),
        "volumes grow while mounted"
    );
    let probe = |mut identity: IdentityClient<Channel>| async move {
        identity
            .probe(proto::ProbeRequest {})
            .await
            .expect("probe")
            .into_inner()
            .ready
    };
    assert_eq!(probe(identity.clone()).await, Some(false));
    readiness.done("leader election");
    assert_eq!(probe(identity).await, Some(true));
    driver.stop().await;
}

#[tokio::test]
async fn bad_create_requests_are_refused_with_the_field_before_anything_is_made() {
    use volume_capability::access_mode::Mode;
    let (client, server) = ApiServer::start();
    // Any request to the API server would fail the RPC with another code: none may be sent.
    drop(server);
    let driver = Driver::controller_only(client).await;
    let mut controller = driver.controller();
    let mut multi = create_request("pvc-1", 1 << 20);
    multi.volume_capabilities = vec![capability(
        Mode::MultiNodeMultiWriter,
        volume_capability::AccessType::Mount(Default::default()),
    )];
    let mut no_caps = create_request("pvc-1", 1 << 20);
    no_caps.volume_capabilities.clear();
    let mut bad_fs = create_request("pvc-1", 1 << 20);
    bad_fs.volume_capabilities = vec![capability(
        Mode::SingleNodeWriter,
        volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type: "ntfs".into(),
            ..Default::default()
        }),
    )];
    let mut unknown_parameter = create_request("pvc-1", 1 << 20);
    unknown_parameter
        .parameters
        .insert("numberOfReplicas".into(), "3".into());
    let mut bad_handle = create_request("pvc-1", 1 << 20);
    bad_handle.volume_content_source = Some(proto::VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "ftp://x".into(),
            },
        )),
    });
    let mut too_big = create_request("pvc-1", 10_000);
    too_big.capacity_range = Some(proto::CapacityRange {
        required_bytes: 10_000,
        limit_bytes: 10_000,
    });
    for (request, code, expected) in [
        (
            create_request("", 1),
            Code::InvalidArgument,
            "name is required",
        ),
        (
            no_caps,
            Code::InvalidArgument,
            "volume_capabilities is required",
        ),
        (
            multi,
            Code::InvalidArgument,
            "volume_capabilities[0].access_mode MULTI_NODE_MULTI_WRITER is not supported",
        ),
        (
            bad_fs,
            Code::InvalidArgument,
            "volume_capabilities[0].mount.fs_type \"ntfs\" is not supported",
        ),
        (
            unknown_parameter,
            Code::InvalidArgument,
            "StorageClass parameter `numberOfReplicas` is not supported",
        ),
        (
            bad_handle,
            Code::NotFound,
            "volume_content_source.snapshot.snapshot_id \"ftp://x\"",
        ),
        (
            too_big,
            Code::OutOfRange,
            "rounded up to whole 4 KiB sectors is 12288, more than limit_bytes 10000",
        ),
    ] {
        let status = controller
            .create_volume(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(expected), "{}", status.message());
    }
    driver.stop().await;
}

#[tokio::test]
async fn a_new_volume_is_created_with_its_parameters_and_answered_once_ready() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::start(
        Readiness::default(),
        Some(controller_service(client, Duration::from_secs(30))),
    )
    .await;
    let script = tokio::spawn(async move {
        missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        // The source backup is looked at: completed, of a smaller volume.
        answer(
            &mut server,
            &format!("{BACKUPS}/backup-0123456789abcdef"),
            backup_json("backup-0123456789abcdef", "vol-a", completed(1 << 20)),
        )
        .await;
        missing(&mut server, &format!("{VOLUMES}/vol-a")).await;
        // node-b is preferred, but its agent's Lease is stale: node-a, the next, is taken.
        let lease = |node: &str, renewed: &str| {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": format!("bulwark-agent-{node}"), "namespace": "bulwark-system"},
                   "spec": {"holderIdentity": node, "renewTime": renewed, "leaseDurationSeconds": 30}})
        };
        let now = jiff::Timestamp::now().to_string();
        answer(
            &mut server,
            "/apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases",
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [
                lease("node-b", "2026-01-01T00:00:00.000000Z"),
                lease("node-a", &now),
            ]}),
        )
        .await;
        let body = created(&mut server, VOLUMES).await;
        // Still being created on the first look, Ready on the second.
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1052672", Some("Creating"), Some("node-a")),
        )
        .await;
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1052672", Some("Ready"), Some("node-a")),
        )
        .await;
        body
    });
    let mut request = create_request("pvc-1", (1 << 20) + 1);
    request.parameters.extend([
        (
            "recurringJobSelector".to_owned(),
            r#"[{"name":"nightly","isGroup":true}]"#.to_owned(),
        ),
        ("backupBlockSize".to_owned(), "16Mi".to_owned()),
        ("csi.storage.k8s.io/pvc/name".to_owned(), "data".to_owned()),
    ]);
    // The first preferred node whose agent runs is where the volume goes.
    let node = |name: &str| proto::Topology {
        segments: [(super::TOPOLOGY_NODE_KEY.to_owned(), name.to_owned())].into(),
    };
    request.accessibility_requirements = Some(proto::TopologyRequirement {
        requisite: vec![node("node-a"), node("node-c")],
        preferred: vec![node("node-b"), node("node-a")],
    });
    request.volume_content_source = Some(proto::VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: "bak://vol-a/backup-0123456789abcdef".into(),
            },
        )),
    });
    let volume = driver
        .controller()
        .create_volume(request)
        .await
        .expect("created")
        .into_inner()
        .volume
        .expect("a volume");
    let created = finish(script).await;
    assert_eq!(
        created["metadata"]["labels"],
        json!({"recurring-job-group.bulwark.io/nightly": "enabled", "bulwark.io/created-by": "csi"})
    );
    assert_eq!(
        created["spec"],
        json!({
            "size": "1052672", "dataSource": "bak://vol-a/backup-0123456789abcdef",
            "nodeID": "node-a", "backupBlockSize": "16Mi", "backupTargetName": "default", "standby": false
        })
    );
    assert_eq!(volume.volume_id, "pvc-1");
    assert_eq!(volume.capacity_bytes, 1_052_672);
    assert_eq!(
        volume.accessible_topology[0].segments[super::TOPOLOGY_NODE_KEY],
        "node-a"
    );
    assert!(volume.content_source.is_some(), "the source is echoed");
    driver.stop().await;
}

#[tokio::test]
async fn create_is_idempotent_by_name_and_refuses_a_different_volume_of_that_name() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        for _ in 0..2 {
            answer(
                &mut server,
                &format!("{VOLUMES}/pvc-1"),
                volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
            )
            .await;
        }
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
        )
        .await;
    });
    let mut controller = driver.controller();
    let again = controller
        .create_volume(create_request("pvc-1", 1 << 20))
        .await
        .expect("the same request again succeeds")
        .into_inner();
    assert_eq!(again.volume.expect("volume").capacity_bytes, 1 << 20);
    let other = controller
        .create_volume(create_request("pvc-1", 2 << 20))
        .await
        .expect_err("another size under the same name");
    assert_eq!(other.code(), Code::AlreadyExists, "{}", other.message());
    assert!(
        other.message().contains("exists with size 1048576"),
        "{}",
        other.message()
    );
    finish(script).await;
    driver.stop().await;
}

#[test]
fn any_csi_name_gets_a_stable_volume_name() {
    use super::controller::volume_name;
    assert_eq!(volume_name("pvc-0f1e2d3c"), "pvc-0f1e2d3c");
    let odd = "sanity-Node-Stage-955DB3B6_CD647CE3";
    assert_eq!(volume_name(odd), volume_name(odd));
    assert!(volume_name(odd).starts_with("csi-") && volume_name(odd).len() == 28);
    assert_ne!(volume_name(odd), volume_name(&odd.to_lowercase()));
    assert_eq!(volume_name(&"a".repeat(128)).len(), 28);
}

#[tokio::test]
async fn a_volume_not_ready_in_time_is_aborted_for_a_retry() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        for _ in 0..2 {
            answer(
                &mut server,
                &format!("{VOLUMES}/pvc-1"),
                volume_json("pvc-1", "1048576", None, None),
            )
            .await;
        }
    });
    let status = driver
        .controller()
        .create_volume(create_request("pvc-1", 1 << 20))
        .await
        .expect_err("not ready");
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status.message().contains("not ready yet (state Pending)"),
        "{}",
        status.message()
    );
    finish(script).await;
    driver.stop().await;
}

#[tokio::test]
async fn delete_and_validate_answer_for_missing_and_existing_volumes() {
    use volume_capability::access_mode::Mode;
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        // Deleted, and gone on the first look.
        server
            .expect(Method::DELETE, &format!("{VOLUMES}/pvc-old"))
            .await
            .respond(json_response(
                StatusCode::OK,
                volume_json("pvc-old", "1048576", Some("Deleting"), Some("node-a")),
            ));
        missing(&mut server, &format!("{VOLUMES}/pvc-old")).await;
        server
            .expect(Method::DELETE, &format!("{VOLUMES}/pvc-gone"))
            .await
            .respond(not_found());
        missing(&mut server, &format!("{VOLUMES}/pvc-gone")).await;
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
        )
        .await;
    });
    let mut controller = driver.controller();
    controller
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: "pvc-old".into(),
            ..Default::default()
        })
        .await
        .expect("answered once the volume is gone");
    controller
        .delete_volume(proto::DeleteVolumeRequest {
            volume_id: "pvc-gone".into(),
            ..Default::default()
        })
        .await
        .expect("deleting a missing volume succeeds");
    let missing = controller
        .validate_volume_capabilities(proto::ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-gone".into(),
            volume_capabilities: vec![rwo_mount()],
            ..Default::default()
        })
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    let answer = controller
        .validate_volume_capabilities(proto::ValidateVolumeCapabilitiesRequest {
            volume_id: "pvc-1".into(),
            volume_capabilities: vec![capability(
                Mode::MultiNodeReaderOnly,
                volume_capability::AccessType::Block(Default::default()),
            )],
            ..Default::default()
        })
        .await
        .expect("answered")
        .into_inner();
    assert!(answer.confirmed.is_none());
    assert!(
        answer
            .message
            .contains("MULTI_NODE_READER_ONLY is not supported"),
        "{}",
        answer.message
    );
    finish(script).await;
    let capabilities = controller
        .controller_get_capabilities(proto::ControllerGetCapabilitiesRequest {})
        .await
        .expect("capabilities")
        .into_inner()
        .capabilities;
    use proto::controller_service_capability::{Type, rpc};
    let offered: Vec<rpc::Type> = capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(Type::Rpc(rpc)) => rpc::Type::try_from(rpc.r#type).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(
        offered,
        [
            rpc::Type::CreateDeleteVolume,
            rpc::Type::CloneVolume,
            rpc::Type::CreateDeleteSnapshot,
            rpc::Type::ListSnapshots,
            rpc::Type::ListVolumes,
            rpc::Type::ExpandVolume,
            rpc::Type::GetCapacity,
            rpc::Type::SingleNodeMultiWriter,
        ]
    );
    let unoffered = controller
        .controller_publish_volume(proto::ControllerPublishVolumeRequest::default())
        .await
        .expect_err("volumes are placed by the operator, not attached");
    assert_eq!(unoffered.code(), Code::Unimplemented);
    driver.stop().await;
}

// ---------------------------------------------------------------- Node service (root)

fn node_request_capability(block: bool) -> proto::VolumeCapability {
    if block {
        capability(
            volume_capability::access_mode::Mode::SingleNodeWriter,
            volume_capability::AccessType::Block(Default::default()),
        )
    } else {
        rwo_mount()
    }
}

fn stage_request(
    volume: &str,
    staging: &std::path::Path,
    block: bool,
) -> proto::NodeStageVolumeRequest {
    proto::NodeStageVolumeRequest {
        volume_id: volume.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(node_request_capability(block)),
        ..Default::default()
    }
}

fn publish_request(
    volume: &str,
    staging: &std::path::Path,
    target: &std::path::Path,
    block: bool,
    readonly: bool,
) -> proto::NodePublishVolumeRequest {
    proto::NodePublishVolumeRequest {
        volume_id: volume.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(node_request_capability(block)),
        readonly,
        ..Default::default()
    }
}

fn unpublish_request(volume: &str, target: &std::path::Path) -> proto::NodeUnpublishVolumeRequest {
    proto::NodeUnpublishVolumeRequest {
        volume_id: volume.into(),
        target_path: target.display().to_string(),
    }
}

/// A Node service of node `node-a` serving `volume` as a sparse file of `size` bytes (the
/// Node service only needs the file the agent serves), with a client to it.
async fn node_driver(
    volume: &str,
    size: u64,
) -> (
    tempfile::TempDir,
    PathBuf,
    Driver,
    super::proto::node_client::NodeClient<Channel>,
) {
    let work = tempfile::tempdir().expect("temp dir");
    let volumes = work.path().join("mnt");
    std::fs::create_dir_all(&volumes).expect("dir");
    let file = volumes.join(volume);
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(size))
        .expect("a sparse volume file");
    let node = super::node::NodeService {
        node_id: "node-a".into(),
        volume_dir: volumes,
        file_wait: Duration::ZERO,
        volumes: None,
    };
    let driver = Driver::start_services(Readiness::default(), None, Some(node)).await;
    let client = super::proto::node_client::NodeClient::new(driver.channel.clone());
    (work, file, driver, client)
}

fn loop_devices_of(file: &std::path::Path) -> String {
    let out = std::process::Command::new("losetup")
        .args(["-j", &file.display().to_string()])
        .output()
        .expect("losetup runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A volume file as the agent serves it (a sparse file here: the Node service only needs the
/// file), staged with a new ext4, published read-write and read-only, unpublished, unstaged
/// (loop device gone), staged again with its data kept; every step twice (idempotent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_volume_is_staged_published_read_only_honoured_and_released() {
    if !crate::agent::volumes::tests::fuse_available() {
        return;
    }
    let (work, file, driver, mut client) = node_driver("pvc-1", 64 << 20).await;
    let staging = work.path().join("staging/pvc-1");
    let target = work.path().join("pods/p1/volumes/data");
    let readonly = work.path().join("pods/p2/volumes/data");

    let info = client
        .node_get_info(proto::NodeGetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.node_id, "node-a");
    assert_eq!(
        info.accessible_topology.expect("topology").segments[super::TOPOLOGY_NODE_KEY],
        "node-a"
    );
    let missing = client
        .node_stage_volume(stage_request("pvc-elsewhere", &staging, false))
        .await
        .expect_err("not served here");
    assert_eq!(missing.code(), Code::FailedPrecondition);
    assert!(
        missing.message().contains("not served on node node-a"),
        "{}",
        missing.message()
    );

    for _ in 0..2 {
        client
            .node_stage_volume(stage_request("pvc-1", &staging, false))
            .await
            .expect("staged");
    }
    assert!(super::node::is_mount_point(&staging));
    assert!(
        !loop_devices_of(&file).is_empty(),
        "a loop device backs the volume"
    );
    for _ in 0..2 {
        client
            .node_publish_volume(publish_request("pvc-1", &staging, &target, false, false))
            .await
            .expect("published");
    }
    std::fs::write(target.join("hello"), b"written by a pod").expect("write through the volume");
    client
        .node_publish_volume(publish_request("pvc-1", &staging, &readonly, false, true))
        .await
        .expect("published read-only");
    assert_eq!(
        std::fs::read(readonly.join("hello")).expect("read"),
        b"written by a pod"
    );
    let refused = std::fs::write(readonly.join("other"), b"x").expect_err("read-only");
    assert_eq!(
        refused.raw_os_error(),
        Some(rustix::io::Errno::ROFS.raw_os_error())
    );
    let stats = client
        .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
            volume_id: "pvc-1".into(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert!(
        stats.usage[0].total > 40 << 20 && stats.usage[0].total <= 64 << 20,
        "{stats:?}"
    );
    for path in [&target, &readonly] {
        for _ in 0..2 {
            client
                .node_unpublish_volume(unpublish_request("pvc-1", path))
                .await
                .expect("unpublished");
        }
        assert!(!path.exists(), "the target path is removed");
    }
    for _ in 0..2 {
        client
            .node_unstage_volume(proto::NodeUnstageVolumeRequest {
                volume_id: "pvc-1".into(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .expect("unstaged");
    }
    assert!(!super::node::is_mount_point(&staging));
    assert_eq!(loop_devices_of(&file), "", "the loop device is detached");

    // Staged again: the file system is kept, not made anew.
    client
        .node_stage_volume(stage_request("pvc-1", &staging, false))
        .await
        .expect("staged again");
    assert_eq!(
        std::fs::read(staging.join("hello")).expect("the data survived"),
        b"written by a pod"
    );
    client
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: "pvc-1".into(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstaged");
    driver.stop().await;
}

/// Raw block: the pod's target is the loop device itself; bytes written there land in the
/// volume file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_volume_is_published_as_its_device() {
    use std::os::unix::fs::FileExt;
    if !crate::agent::volumes::tests::fuse_available() {
        return;
    }
    let (work, file, driver, mut client) = node_driver("pvc-2", 16 << 20).await;
    let staging = work.path().join("staging/pvc-2");
    let target = work.path().join("pods/p1/volumeDevices/pvc-2");
    client
        .node_stage_volume(stage_request("pvc-2", &staging, true))
        .await
        .expect("staged");
    client
        .node_publish_volume(publish_request("pvc-2", &staging, &target, true, false))
        .await
        .expect("published");
    let stats = client
        .node_get_volume_stats(proto::NodeGetVolumeStatsRequest {
            volume_id: "pvc-2".into(),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        stats.usage.len(),
        1,
        "a block volume has a size, no file system"
    );
    assert_eq!(stats.usage[0].total, 16 << 20);
    assert!(!stats.volume_condition.expect("a condition").abnormal);
    let data = vec![0x5a; 4096];
    {
        let device = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .expect("the published device opens");
        device.write_all_at(&data, 1 << 20).expect("write");
        device.sync_all().expect("fsync");
    }
    client
        .node_unpublish_volume(unpublish_request("pvc-2", &target))
        .await
        .expect("unpublished");
    client
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: "pvc-2".into(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstaged");
    let mut back = vec![0; 4096];
    std::fs::File::open(&file)
        .expect("volume file")
        .read_exact_at(&mut back, 1 << 20)
        .expect("read");
    assert_eq!(back, data, "the bytes reached the volume file");
    assert_eq!(loop_devices_of(&file), "");
    driver.stop().await;
}

#[tokio::test]
async fn a_clone_of_a_missing_volume_is_not_found_and_creates_nothing() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        missing(&mut server, &format!("{VOLUMES}/pvc-gone")).await;
    });
    let mut request = create_request("pvc-1", 1 << 20);
    request.volume_content_source = Some(proto::VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: "pvc-gone".into(),
            },
        )),
    });
    let status = driver
        .controller()
        .create_volume(request)
        .await
        .expect_err("no source");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("volume pvc-gone does not exist"),
        "{}",
        status.message()
    );
    finish(script).await;
    driver.stop().await;
}

const SNAPSHOTS: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/snapshots";

#[tokio::test]
async fn a_snap_class_snapshot_is_a_snapshot_object_reported_ready_when_it_is() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let snapshot_json = |status: Value| {
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
            "metadata": {"name": "snapshot-1", "namespace": "bulwark-system",
                         "creationTimestamp": "2026-12-07T01:00:00Z"},
            "spec": {"volume": "pvc-1"},
            "status": status,
        })
    };
    let ready = snapshot_json(json!({"readyToUse": true, "restoreSize": 1048576,
        "creationTime": "2026-12-07T01:00:01Z"}));
    let script = tokio::spawn(async move {
        missing(&mut server, &format!("{SNAPSHOTS}/snapshot-1")).await;
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
        )
        .await;
        let create = server.expect(Method::POST, SNAPSHOTS).await;
        let body = create.json();
        create.respond(json_response(
            StatusCode::CREATED,
            snapshot_json(json!(null)),
        ));
        // Asked again by the csi-snapshotter: now ready.
        server
            .expect(Method::GET, &format!("{SNAPSHOTS}/snapshot-1"))
            .await
            .respond(json_response(StatusCode::OK, ready));
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
        )
        .await;
        // Deleting one that is gone already deletes nothing.
        missing(&mut server, &format!("{SNAPSHOTS}/snapshot-1")).await;
        missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        body
    });
    let mut controller = driver.controller();
    let request = |class_type: &str| proto::CreateSnapshotRequest {
        source_volume_id: "pvc-1".into(),
        name: "snapshot-1".into(),
        parameters: [("type".to_owned(), class_type.to_owned())].into(),
        ..Default::default()
    };
    let first = controller
        .create_snapshot(request("snap"))
        .await
        .expect("created")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(first.snapshot_id, "snap://pvc-1/snapshot-1");
    assert!(!first.ready_to_use);
    let again = controller
        .create_snapshot(request("snap"))
        .await
        .expect("asked again")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert!(again.ready_to_use);
    assert_eq!(again.size_bytes, 1 << 20);
    assert_eq!(
        again.creation_time.expect("time").seconds,
        "2026-12-07T01:00:01Z"
            .parse::<jiff::Timestamp>()
            .expect("time")
            .as_second()
    );
    controller
        .delete_snapshot(proto::DeleteSnapshotRequest {
            snapshot_id: "snap://pvc-1/snapshot-1".into(),
            ..Default::default()
        })
        .await
        .expect("deleting a snapshot that is gone succeeds");
    let created = finish(script).await;
    assert_eq!(created["spec"], json!({"volume": "pvc-1"}));
    assert_eq!(
        created["metadata"]["labels"],
        json!({"bulwark.io/created-by": "csi"})
    );

    let bad = controller
        .create_snapshot(request("tape"))
        .await
        .expect_err("unknown type");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("VolumeSnapshotClass parameter type"),
        "{}",
        bad.message()
    );
    controller
        .delete_snapshot(proto::DeleteSnapshotRequest {
            snapshot_id: "not-a-handle".into(),
            ..Default::default()
        })
        .await
        .expect("an ID that was never ours is deleted already");
    driver.stop().await;
}

/// The next request is a POST to `path`, answered with what it sent; answers that.
async fn created(server: &mut ApiServer, path: &str) -> Value {
    let create = server.expect(Method::POST, path).await;
    let body = create.json();
    create.respond(json_response(StatusCode::CREATED, body.clone()));
    body
}

/// The next request is a GET of `path`, answered with `body`.
async fn answer(server: &mut ApiServer, path: &str, body: Value) {
    server
        .expect(Method::GET, path)
        .await
        .respond(json_response(StatusCode::OK, body));
}

/// The next request is a GET of `path`, which does not exist.
async fn missing(server: &mut ApiServer, path: &str) {
    server.expect(Method::GET, path).await.respond(not_found());
}

const BACKUPS: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/backups";
const IMAGES: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/backingimages";

fn backup_json(name: &str, volume: &str, status: Value) -> Value {
    json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
        "metadata": {"name": name, "namespace": "bulwark-system",
                     "creationTimestamp": "2026-12-07T02:00:00Z"},
        "spec": {"volume": volume},
        "status": status,
    })
}

fn completed(volume_size: i64) -> Value {
    json!({"state": "Completed", "volumeSize": volume_size,
           "url": "s3://bucket@us-east-1/?backup=snapshot-2&volume=pvc-1",
           "backupCreatedAt": "2026-12-07T02:00:05Z"})
}

fn snapshot_request(name: &str, parameters: &[(&str, &str)]) -> proto::CreateSnapshotRequest {
    proto::CreateSnapshotRequest {
        source_volume_id: "pvc-1".into(),
        name: name.into(),
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_bak_class_snapshot_is_a_backup_listed_by_its_id_and_deleted_with_it() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let volume = volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a"));
    let script = tokio::spawn(async move {
        // CreateSnapshot: no Backup yet, so one is made.
        missing(&mut server, &format!("{BACKUPS}/snapshot-2")).await;
        answer(&mut server, &format!("{VOLUMES}/pvc-1"), volume.clone()).await;
        let create = server.expect(Method::POST, BACKUPS).await;
        let body = create.json();
        create.respond(json_response(
            StatusCode::CREATED,
            backup_json("snapshot-2", "pvc-1", json!(null)),
        ));
        // Asked again (the csi-snapshotter polls), then listed by ID: completed.
        for _ in 0..2 {
            server
                .expect(Method::GET, &format!("{BACKUPS}/snapshot-2"))
                .await
                .respond(json_response(
                    StatusCode::OK,
                    backup_json("snapshot-2", "pvc-1", completed(4 << 20)),
                ));
            answer(&mut server, &format!("{VOLUMES}/pvc-1"), volume.clone()).await;
        }
        // Listed by an ID naming no backup: nothing.
        missing(&mut server, &format!("{BACKUPS}/nothing")).await;
        answer(&mut server, &format!("{VOLUMES}/pvc-1"), volume.clone()).await;
        // Deleted: the Backup goes (its finalizer removes it from the store).
        server
            .expect(Method::GET, &format!("{BACKUPS}/snapshot-2"))
            .await
            .respond(json_response(
                StatusCode::OK,
                backup_json("snapshot-2", "pvc-1", completed(4 << 20)),
            ));
        answer(&mut server, &format!("{VOLUMES}/pvc-1"), volume.clone()).await;
        server
            .expect(Method::DELETE, &format!("{BACKUPS}/snapshot-2"))
            .await
            .respond(json_response(
                StatusCode::OK,
                backup_json("snapshot-2", "pvc-1", completed(4 << 20)),
            ));
        body
    });
    let mut controller = driver.controller();
    let request = snapshot_request("snapshot-2", &[("type", "bak"), ("backupMode", "full")]);
    let first = controller
        .create_snapshot(request.clone())
        .await
        .expect("created")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(first.snapshot_id, "bak://pvc-1/snapshot-2");
    assert!(!first.ready_to_use, "a backup just asked for is not ready");
    assert_eq!(first.size_bytes, 1 << 20, "the volume's size until done");
    let done = controller
        .create_snapshot(request)
        .await
        .expect("asked again")
        .into_inner()
        .snapshot
        .expect("snapshot");
    assert_eq!(done.snapshot_id, first.snapshot_id, "the ID never changes");
    assert!(done.ready_to_use);
    assert_eq!(done.size_bytes, 4 << 20, "the backup's volume size");
    let backed_up_at = "2026-12-07T02:00:05Z"
        .parse::<jiff::Timestamp>()
        .expect("time")
        .as_second();
    assert_eq!(done.creation_time.expect("time").seconds, backed_up_at);

    let listed = controller
        .list_snapshots(proto::ListSnapshotsRequest {
            snapshot_id: "bak://pvc-1/snapshot-2".into(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    let entry = listed.entries[0].snapshot.clone().expect("snapshot");
    assert_eq!(
        (
            entry.snapshot_id.as_str(),
            entry.source_volume_id.as_str(),
            entry.ready_to_use
        ),
        ("bak://pvc-1/snapshot-2", "pvc-1", true)
    );
    let none = controller
        .list_snapshots(proto::ListSnapshotsRequest {
            snapshot_id: "bak://pvc-1/nothing".into(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert!(none.entries.is_empty());
    controller
        .delete_snapshot(proto::DeleteSnapshotRequest {
            snapshot_id: "bak://pvc-1/snapshot-2".into(),
            ..Default::default()
        })
        .await
        .expect("deleted");
    let created = finish(script).await;
    assert_eq!(
        created["spec"],
        json!({"volume": "pvc-1", "backupMode": "full"})
    );
    assert_eq!(
        created["metadata"]["labels"]["bulwark.io/created-by"],
        "csi"
    );
    driver.stop().await;
}

#[tokio::test]
async fn a_bi_class_snapshot_exports_the_volume_as_a_backing_image_with_a_stable_id() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let image = |status: Value| {
        json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
            "metadata": {"name": "snapshot-3", "namespace": "bulwark-system",
                         "creationTimestamp": "2026-12-07T03:00:00Z"},
            "spec": {"sourceType": "export-from-volume",
                     "sourceParameters": {"export-type": "qcow2", "volume-name": "pvc-1"}},
            "status": status,
        })
    };
    let volume = volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a"));
    let script = tokio::spawn(async move {
        missing(&mut server, &format!("{IMAGES}/snapshot-3")).await;
        server
            .expect(Method::GET, &format!("{VOLUMES}/pvc-1"))
            .await
            .respond(json_response(StatusCode::OK, volume.clone()));
        let create = server.expect(Method::POST, IMAGES).await;
        let body = create.json();
        create.respond(json_response(StatusCode::CREATED, image(json!(null))));
        server
            .expect(Method::GET, &format!("{IMAGES}/snapshot-3"))
            .await
            .respond(json_response(
                StatusCode::OK,
                image(
                    json!({"state": "ready", "size": 2097152, "checksum": "ab".repeat(64),
                             "readyAt": "2026-12-07T03:00:09Z"}),
                ),
            ));
        server
            .expect(Method::GET, &format!("{VOLUMES}/pvc-1"))
            .await
            .respond(json_response(StatusCode::OK, volume));
        body
    });
    let mut controller = driver.controller();
    let request = snapshot_request("snapshot-3", &[("type", "bi"), ("export-type", "qcow2")]);
    let first = controller
        .create_snapshot(request.clone())
        .await
        .expect("created")
        .into_inner()
        .snapshot
        .expect("snapshot");
    let ready = controller
        .create_snapshot(request)
        .await
        .expect("asked again")
        .into_inner()
        .snapshot
        .expect("snapshot");
    let created = finish(script).await;
    assert_eq!(
        created["spec"],
        json!({"sourceType": "export-from-volume",
               "sourceParameters": {"export-type": "qcow2", "volume-name": "pvc-1"}})
    );
    assert!(!first.ready_to_use);
    assert!(ready.ready_to_use);
    assert_eq!(ready.size_bytes, 2 << 20);
    assert_eq!(
        ready.snapshot_id, first.snapshot_id,
        "no checksum added later"
    );
    match handle_codec::decode(&ready.snapshot_id).expect("a bi:// handle") {
        handle_codec::SnapshotHandle::BackingImage(handle) => {
            assert_eq!(handle.name.as_str(), "snapshot-3");
            assert_eq!(
                handle.source,
                handle_codec::BackingImageSource::ExportFromVolume {
                    volume_name: handle_codec::Name::new("pvc-1").expect("name"),
                    export_type: handle_codec::ExportType::Qcow2,
                }
            );
        }
        other => panic!("not a backing image handle: {other:?}"),
    }
    driver.stop().await;
}

#[tokio::test]
async fn list_snapshots_gives_every_usable_kind_filtered_by_volume_and_paged() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let list = |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items});
    let snapshot = |name: &str, volume: &str, status: Value| {
        json!({"apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
               "metadata": {"name": name, "namespace": "bulwark-system",
                            "creationTimestamp": "2026-12-07T01:00:00Z"},
               "spec": {"volume": volume}, "status": status})
    };
    let responses = vec![
        list(vec![
            volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
            volume_json("pvc-2", "2097152", Some("Ready"), Some("node-a")),
        ]),
        list(vec![
            snapshot(
                "s-ready",
                "pvc-1",
                json!({"readyToUse": true, "restoreSize": 1048576}),
            ),
            snapshot("s-making", "pvc-2", json!({})),
            snapshot("s-failed", "pvc-1", json!({"error": "disk full"})),
            // Deleted (DeleteSnapshot answered) while its agent still removes the data.
            json!({"apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
                   "metadata": {"name": "s-deleting", "namespace": "bulwark-system",
                                "deletionTimestamp": "2026-12-07T01:00:09Z",
                                "finalizers": ["bulwark.io/snapshot-data"]},
                   "spec": {"volume": "pvc-1"}, "status": {"readyToUse": true}}),
        ]),
        list(vec![
            backup_json("b-done", "pvc-1", completed(1 << 20)),
            backup_json(
                "b-error",
                "pvc-1",
                json!({"state": "Error", "error": "target gone"}),
            ),
        ]),
        list(vec![json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
            "metadata": {"name": "img-1", "namespace": "bulwark-system"},
            "spec": {"sourceType": "download", "sourceParameters": {"url": "https://example.invalid/a.img"}},
        })]),
    ];
    let script = tokio::spawn(async move {
        for _ in 0..3 {
            for (path, body) in [VOLUMES, SNAPSHOTS, BACKUPS, IMAGES].iter().zip(&responses) {
                let list = server.expect(Method::GET, path).await;
                // Only what the driver made is listed (not the snapshots backups take).
                let ours = list
                    .query
                    .contains("labelSelector=bulwark.io%2Fcreated-by%3Dcsi");
                assert_eq!(ours, *path != VOLUMES, "{path}?{}", list.query);
                list.respond(json_response(StatusCode::OK, body.clone()));
            }
        }
    });
    let mut controller = driver.controller();
    let ids = |response: proto::ListSnapshotsResponse| -> (Vec<(String, bool)>, String) {
        (
            response
                .entries
                .into_iter()
                .map(|e| e.snapshot.expect("snapshot"))
                .map(|s| (s.snapshot_id, s.ready_to_use))
                .collect(),
            response.next_token,
        )
    };
    let all = controller
        .list_snapshots(proto::ListSnapshotsRequest::default())
        .await
        .expect("listed")
        .into_inner();
    // Failed and deleted ones are not offered; a downloaded image is no snapshot of a volume.
    assert_eq!(
        ids(all),
        (
            vec![
                ("bak://pvc-1/b-done".to_owned(), true),
                ("snap://pvc-1/s-ready".to_owned(), true),
                ("snap://pvc-2/s-making".to_owned(), false),
            ],
            String::new()
        )
    );
    let first_page = controller
        .list_snapshots(proto::ListSnapshotsRequest {
            source_volume_id: "pvc-1".into(),
            max_entries: 1,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    let (first, token) = ids(first_page);
    assert_eq!(first, vec![("bak://pvc-1/b-done".to_owned(), true)]);
    assert_eq!(token, "1");
    let second_page = controller
        .list_snapshots(proto::ListSnapshotsRequest {
            source_volume_id: "pvc-1".into(),
            max_entries: 1,
            starting_token: token,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(
        ids(second_page),
        (
            vec![("snap://pvc-1/s-ready".to_owned(), true)],
            String::new()
        )
    );
    finish(script).await;
    let status = controller
        .list_snapshots(proto::ListSnapshotsRequest {
            starting_token: "not-ours".into(),
            ..Default::default()
        })
        .await
        .expect_err("a token the driver never gave");
    assert_eq!(status.code(), Code::Aborted);
    driver.stop().await;
}

#[tokio::test]
async fn a_volume_from_a_backup_is_as_large_as_the_backup_and_refused_until_it_is_usable() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        // 1: the backup is still being made.
        missing(&mut server, &format!("{VOLUMES}/pvc-new")).await;
        server
            .expect(Method::GET, &format!("{BACKUPS}/b-1"))
            .await
            .respond(json_response(
                StatusCode::OK,
                backup_json("b-1", "pvc-1", json!({"state": "InProgress"})),
            ));
        missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        // 2: no such backup.
        missing(&mut server, &format!("{VOLUMES}/pvc-new")).await;
        missing(&mut server, &format!("{BACKUPS}/b-gone")).await;
        missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        // 3: completed, 4 MiB; too small a request.
        for _ in 0..2 {
            missing(&mut server, &format!("{VOLUMES}/pvc-new")).await;
            server
                .expect(Method::GET, &format!("{BACKUPS}/b-1"))
                .await
                .respond(json_response(
                    StatusCode::OK,
                    backup_json("b-1", "pvc-1", completed(4 << 20)),
                ));
            missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        }
        // 4: no size asked: the backup's.
        let body = created(&mut server, VOLUMES).await;
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-new"),
            volume_json("pvc-new", "4194304", Some("Ready"), Some("node-a")),
        )
        .await;
        body
    });
    let mut controller = driver.controller();
    let from = |id: &str, required: i64| {
        let mut request = create_request("pvc-new", required);
        request.volume_content_source = Some(proto::VolumeContentSource {
            r#type: Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: id.into(),
                },
            )),
        });
        request
    };
    let busy = controller
        .create_volume(from("bak://pvc-1/b-1", 0))
        .await
        .expect_err("not completed");
    assert_eq!(busy.code(), Code::Aborted, "{}", busy.message());
    assert!(
        busy.message().contains("not completed yet"),
        "{}",
        busy.message()
    );
    let gone = controller
        .create_volume(from("bak://pvc-1/b-gone", 0))
        .await
        .expect_err("no backup");
    assert_eq!(gone.code(), Code::NotFound, "{}", gone.message());
    assert!(gone.message().contains("b-gone"), "{}", gone.message());
    let small = controller
        .create_volume(from("bak://pvc-1/b-1", 1 << 20))
        .await
        .expect_err("smaller than the backup");
    assert_eq!(small.code(), Code::OutOfRange);
    assert!(
        small
            .message()
            .contains("capacity_range.required_bytes 1048576 is smaller than the 4194304 bytes"),
        "{}",
        small.message()
    );
    let made = controller
        .create_volume(from("bak://pvc-1/b-1", 0))
        .await
        .expect("created")
        .into_inner()
        .volume
        .expect("volume");
    assert_eq!(made.capacity_bytes, 4 << 20);
    let created = finish(script).await;
    assert_eq!(created["spec"]["size"], "4194304");
    assert_eq!(created["spec"]["dataSource"], "bak://pvc-1/b-1");
    driver.stop().await;
}

/// Whether this process may grow a mounted ext4 file system (`CAP_SYS_RESOURCE`, which a
/// privileged node plugin has; some sandboxes drop it).
fn may_resize_ext4_online() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapEff");
    const CAP_SYS_RESOURCE: u64 = 24;
    effective & (1 << CAP_SYS_RESOURCE) != 0
}

/// Stages and publishes `fs_type` on a file of `size` bytes, grows the file to twice that,
/// and asks NodeExpandVolume: the result, the file system's size before and after, and
/// whether what was written before is still there.
async fn grow_online(fs_type: &str, size: u64) -> (Result<i64, tonic::Status>, u64, u64) {
    let volume = format!("pvc-grow-{fs_type}");
    let (work, file, driver, mut client) = node_driver(&volume, size).await;
    let staging = work.path().join("staging").join(&volume);
    let target = work.path().join("pods/p1/volumes").join(&volume);
    let mount = capability(
        volume_capability::access_mode::Mode::SingleNodeWriter,
        volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        }),
    );
    let mut stage = stage_request(&volume, &staging, false);
    stage.volume_capability = Some(mount.clone());
    client.node_stage_volume(stage).await.expect("staged");
    let mut publish = publish_request(&volume, &staging, &target, false, false);
    publish.volume_capability = Some(mount.clone());
    client
        .node_publish_volume(publish)
        .await
        .expect("published");
    std::fs::write(target.join("kept"), b"bytes from before").expect("write");
    let total = |path: &std::path::Path| {
        let stats = rustix::fs::statvfs(path).expect("statvfs");
        stats.f_blocks * stats.f_frsize
    };
    let before = total(&target);
    let wanted = 2 * size as i64;
    let expand = proto::NodeExpandVolumeRequest {
        volume_id: volume.clone(),
        volume_path: target.display().to_string(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: wanted,
            limit_bytes: 0,
        }),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(mount),
        ..Default::default()
    };
    // The agent has not grown the data yet: nothing to do here, kubelet asks again.
    let early = client
        .node_expand_volume(expand.clone())
        .await
        .expect_err("the file is not grown yet");
    assert_eq!(early.code(), Code::Unavailable);
    assert!(
        early
            .message()
            .contains(&format!("not yet the {wanted} bytes")),
        "{}",
        early.message()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(2 * size))
        .expect("the agent grows the file");
    let grown = client
        .node_expand_volume(expand.clone())
        .await
        .map(|r| r.into_inner().capacity_bytes);
    let after = total(&target);
    assert_eq!(
        std::fs::read(target.join("kept")).expect("read"),
        b"bytes from before"
    );
    client
        .node_unpublish_volume(unpublish_request(&volume, &target))
        .await
        .expect("unpublished");
    client
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: volume.clone(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstaged");
    let unstaged = client
        .node_expand_volume(expand)
        .await
        .expect_err("not staged any more");
    assert!(
        unstaged.message().contains("does not exist"),
        "{}",
        unstaged.message()
    );
    driver.stop().await;
    (grown, before, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_file_system_grows_once_its_file_has_grown() {
    if !crate::agent::volumes::tests::fuse_available() {
        return;
    }
    // XFS grows online with CAP_SYS_ADMIN alone (and is at least 300 MiB).
    let (grown, before, after) = grow_online("xfs", 320 << 20).await;
    assert_eq!(grown.expect("xfs grown"), 640 << 20);
    assert!(
        after > before + (256 << 20),
        "xfs grew: {before} → {after} bytes"
    );

    let (grown, before, after) = grow_online("ext4", 32 << 20).await;
    if may_resize_ext4_online() {
        assert_eq!(grown.expect("ext4 grown"), 64 << 20);
        assert!(
            after > before + (24 << 20),
            "ext4 grew: {before} → {after} bytes"
        );
    } else {
        let refused = grown.expect_err("no CAP_SYS_RESOURCE");
        assert!(
            refused.message().contains("CAP_SYS_RESOURCE"),
            "the message says what the node plugin lacks: {}",
            refused.message()
        );
        assert_eq!(after, before, "nothing changed");
    }
}

/// The API side of growing volume pvc-1 from `from` to `to`, asked twice: read and patched, then
/// read again and, already that large, not patched. Answers the patch.
async fn grown_once(server: &mut ApiServer, from: &str, to: &str) -> Value {
    let path = format!("{VOLUMES}/pvc-1");
    let ready = |size: &str| volume_json("pvc-1", size, Some("Ready"), Some("node-a"));
    answer(server, &path, ready(from)).await;
    let patch = server.expect(Method::PATCH, &path).await;
    let body = patch.json();
    patch.respond(json_response(StatusCode::OK, ready(to)));
    answer(server, &path, ready(to)).await;
    body
}

#[tokio::test]
async fn expand_grows_the_volume_spec_and_list_volumes_pages_through_volumes() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        let body = grown_once(&mut server, "1Mi", "4194304").await;
        missing(&mut server, &format!("{VOLUMES}/pvc-gone")).await;
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [
            volume_json("pvc-b", "2Mi", Some("Ready"), Some("node-b")),
            volume_json("pvc-a", "1Mi", Some("Ready"), Some("node-a")),
        ]});
        for _ in 0..2 {
            answer(&mut server, VOLUMES, list.clone()).await;
        }
        body
    });
    let mut controller = driver.controller();
    let expand = |id: &str, required: i64| proto::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    for _ in 0..2 {
        let grown = controller
            .controller_expand_volume(expand("pvc-1", 4 << 20))
            .await
            .expect("grown")
            .into_inner();
        assert_eq!(grown.capacity_bytes, 4 << 20);
        assert!(grown.node_expansion_required);
    }
    let gone = controller
        .controller_expand_volume(expand("pvc-gone", 4 << 20))
        .await
        .expect_err("no volume");
    assert_eq!(gone.code(), Code::NotFound);
    let first = controller
        .list_volumes(proto::ListVolumesRequest {
            max_entries: 1,
            starting_token: String::new(),
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(first.next_token, "1");
    let second = controller
        .list_volumes(proto::ListVolumesRequest {
            max_entries: 1,
            starting_token: first.next_token.clone(),
        })
        .await
        .expect("listed")
        .into_inner();
    let listed: Vec<(String, i64, String)> = first
        .entries
        .into_iter()
        .chain(second.entries)
        .map(|e| e.volume.expect("volume"))
        .map(|v| {
            (
                v.volume_id,
                v.capacity_bytes,
                v.accessible_topology[0].segments[super::TOPOLOGY_NODE_KEY].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("pvc-a".to_owned(), 1 << 20, "node-a".to_owned()),
            ("pvc-b".to_owned(), 2 << 20, "node-b".to_owned())
        ]
    );
    assert!(second.next_token.is_empty());
    let patch = finish(script).await;
    // Guarded: a concurrent expansion cannot be overwritten by a smaller size.
    assert_eq!(
        patch,
        json!({"metadata": {"resourceVersion": "7"}, "spec": {"size": "4194304"}})
    );
    let missing_range = controller
        .controller_expand_volume(proto::ControllerExpandVolumeRequest {
            volume_id: "pvc-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("no size");
    assert_eq!(missing_range.code(), Code::InvalidArgument);
    assert!(missing_range.message().contains("capacity_range"));
    driver.stop().await;
}

const JOBS: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/recurringjobs";

#[tokio::test]
async fn legacy_recurring_jobs_and_a_described_backing_image_are_made_before_the_volume() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::start(
        Readiness::default(),
        Some(controller_service(client, Duration::from_secs(5))),
    )
    .await;
    let existing_job = json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "RecurringJob",
        "metadata": {"name": "bak", "namespace": "bulwark-system"},
        "spec": {"task": "backup", "cron": "0 3 * * *", "retain": 2},
    });
    let script = tokio::spawn(async move {
        // A refused request: its backing image is missing and not described.
        missing(&mut server, &format!("{VOLUMES}/pvc-bad")).await;
        missing(&mut server, &format!("{JOBS}/snap")).await;
        answer(&mut server, &format!("{JOBS}/bak"), existing_job.clone()).await;
        missing(&mut server, &format!("{IMAGES}/base")).await;
        // The good one: same jobs, image described by the StorageClass.
        missing(&mut server, &format!("{VOLUMES}/pvc-1")).await;
        missing(&mut server, &format!("{JOBS}/snap")).await;
        answer(&mut server, &format!("{JOBS}/bak"), existing_job).await;
        missing(&mut server, &format!("{IMAGES}/base")).await;
        let mut bodies = Vec::new();
        for path in [JOBS, IMAGES, VOLUMES] {
            bodies.push(created(&mut server, path).await);
        }
        answer(
            &mut server,
            &format!("{VOLUMES}/pvc-1"),
            volume_json("pvc-1", "1048576", Some("Ready"), Some("node-a")),
        )
        .await;
        bodies
    });
    let mut controller = driver.controller();
    let request = |name: &str, with_source: bool| {
        let mut request = create_request(name, 1 << 20);
        request.parameters.extend(
            [
                (
                    "recurringJobs",
                    r#"[{"name":"snap","task":"snapshot","cron":"*/5 * * * *","retain":3},
                        {"name":"bak","task":"backup","cron":"@daily","retain":7}]"#,
                ),
                ("backingImage", "base"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if with_source {
            request.parameters.extend(
                [
                    ("backingImageDataSourceType", "download"),
                    (
                        "backingImageDataSourceParameters",
                        r#"{"url":"http://127.0.0.1:9/base.qcow2"}"#,
                    ),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
        }
        request
    };
    let refused = controller
        .create_volume(request("pvc-bad", false))
        .await
        .expect_err("no image");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("BackingImage base does not exist in namespace bulwark-system: create it, or give `backingImageDataSourceType`"),
        "{}",
        refused.message()
    );
    controller
        .create_volume(request("pvc-1", true))
        .await
        .expect("created");
    let created = finish(script).await;
    assert_eq!(
        created[0]["metadata"],
        json!({"name": "snap", "labels": {"bulwark.io/created-by": "csi"}})
    );
    assert_eq!(created[0]["spec"]["task"], "snapshot");
    assert_eq!(created[0]["spec"]["cron"], "*/5 * * * *");
    assert_eq!(created[0]["spec"]["retain"], 3);
    assert_eq!(created[1]["metadata"]["name"], "base");
    assert_eq!(
        created[1]["spec"],
        json!({"sourceType": "download", "sourceParameters": {"url": "http://127.0.0.1:9/base.qcow2"}})
    );
    assert_eq!(created[2]["spec"]["backingImage"], "base");
    assert_eq!(
        created[2]["metadata"]["labels"],
        json!({"recurring-job.bulwark.io/snap": "enabled",
               "recurring-job.bulwark.io/bak": "enabled",
               "bulwark.io/created-by": "csi"})
    );
    driver.stop().await;
}

#[tokio::test]
async fn node_expansion_grows_a_volume_spec_still_smaller_than_asked_and_never_shrinks_it() {
    let (client, mut server) = ApiServer::start();
    let volumes: kube::Api<crd_types::Volume> = kube::Api::namespaced(client, "bulwark-system");
    let script = tokio::spawn(async move { grown_once(&mut server, "64Mi", "134217728").await });
    super::node::grow_spec(&volumes, "pvc-1", 128 << 20)
        .await
        .expect("grown");
    super::node::grow_spec(&volumes, "pvc-1", 64 << 20)
        .await
        .expect("a smaller request changes nothing");
    assert_eq!(
        finish(script).await,
        json!({"metadata": {"resourceVersion": "7"}, "spec": {"size": "134217728"}}),
        "guarded by the version read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstage_releases_the_loop_device_even_when_the_file_was_served_anew() {
    if !crate::agent::volumes::tests::fuse_available() {
        return;
    }
    let (work, file, driver, mut client) = node_driver("pvc-5", 16 << 20).await;
    let staging = work.path().join("staging/pvc-5");
    client
        .node_stage_volume(stage_request("pvc-5", &staging, false))
        .await
        .expect("staged");
    let stats = |path: &std::path::Path| proto::NodeGetVolumeStatsRequest {
        volume_id: "pvc-5".into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    };
    let condition = client
        .node_get_volume_stats(stats(&staging))
        .await
        .expect("stats")
        .into_inner()
        .volume_condition
        .expect("a condition");
    assert!(!condition.abnormal, "{}", condition.message);
    // The agent restarted: the volume's file is a new one (its FUSE mount was remade), and the
    // staged loop device still holds the old one.
    let old = work.path().join("pvc-5.old");
    std::fs::rename(&file, &old).expect("rename");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(16 << 20))
        .expect("the file served anew");
    assert_ne!(loop_devices_of(&old), "", "staged on the old file");
    let condition = client
        .node_get_volume_stats(stats(&staging))
        .await
        .expect("stats")
        .into_inner()
        .volume_condition
        .expect("a condition");
    assert!(condition.abnormal, "the stale loop device is reported");
    let grow = client
        .node_expand_volume(proto::NodeExpandVolumeRequest {
            volume_id: "pvc-5".into(),
            volume_path: staging.display().to_string(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: 32 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .expect_err("a stale loop device cannot grow");
    assert_eq!(grow.code(), Code::FailedPrecondition);
    assert!(
        grow.message().contains("before its agent restarted"),
        "{}",
        grow.message()
    );
    assert!(
        condition.message.contains("before its agent restarted")
            && condition.message.contains("restart the pod"),
        "{}",
        condition.message
    );
    client
        .node_unstage_volume(proto::NodeUnstageVolumeRequest {
            volume_id: "pvc-5".into(),
            staging_target_path: staging.display().to_string(),
        })
        .await
        .expect("unstaged");
    assert_eq!(loop_devices_of(&old), "", "the old loop device is released");
    assert!(!super::node::is_mount_point(&staging));
    driver.stop().await;
}

#[tokio::test]
async fn a_pre_provisioned_download_handle_makes_its_backing_image_on_demand() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let id = "bi://backing?backingImage=base&backingImageDataSourceType=download&url=http%3A%2F%2F127.0.0.1%3A9%2Fbase.img";
    let script = tokio::spawn(async move {
        missing(&mut server, &format!("{IMAGES}/base")).await;
        created(&mut server, IMAGES).await
    });
    let listed = driver
        .controller()
        .list_snapshots(proto::ListSnapshotsRequest {
            snapshot_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    let created = finish(script).await;
    assert_eq!(created["metadata"]["name"], "base");
    assert_eq!(
        created["metadata"]["labels"]["bulwark.io/created-by"],
        "csi"
    );
    assert_eq!(
        created["spec"],
        json!({"sourceType": "download",
               "sourceParameters": {"url": "http://127.0.0.1:9/base.img"}})
    );
    assert_eq!(listed.entries.len(), 1, "the content exists, being made");
    let snapshot = listed.entries[0].snapshot.clone().expect("snapshot");
    assert_eq!(snapshot.snapshot_id, id);
    assert!(!snapshot.ready_to_use);
    driver.stop().await;
}

#[tokio::test]
async fn capacity_is_what_live_agents_report_free_per_node_or_together() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let now = jiff::Timestamp::now().to_string();
    let lease = |node: &str, renewed: &str, free: Option<&str>| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": format!("bulwark-agent-{node}"), "namespace": "bulwark-system",
                            "labels": {"bulwark.io/agent": "true"},
                            "annotations": free.map(|f| json!({"bulwark.io/free-bytes": f}))},
               "spec": {"holderIdentity": node, "renewTime": renewed, "leaseDurationSeconds": 30}})
    };
    let leases = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [
        lease("node-a", &now, Some("3000")),
        lease("node-b", &now, Some("5000")),
        lease("node-old", "2026-01-01T00:00:00.000000Z", Some("9000")),
        lease("node-c", &now, None),
    ]});
    let script = tokio::spawn(async move {
        for _ in 0..3 {
            let list = server
                .expect(
                    Method::GET,
                    "/apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases",
                )
                .await;
            assert!(
                list.query
                    .contains("labelSelector=bulwark.io%2Fagent%3Dtrue")
            );
            list.respond(json_response(StatusCode::OK, leases.clone()));
        }
    });
    let mut controller = driver.controller();
    let capacity = |node: Option<&str>| proto::GetCapacityRequest {
        accessible_topology: node.map(|n| proto::Topology {
            segments: [(super::TOPOLOGY_NODE_KEY.to_owned(), n.to_owned())].into(),
        }),
        ..Default::default()
    };
    let all = controller
        .get_capacity(capacity(None))
        .await
        .expect("capacity")
        .into_inner();
    // A stale agent's bytes do not count; one that reports nothing has none to offer.
    assert_eq!(all.available_capacity, 8000);
    assert_eq!(all.maximum_volume_size, None, "volumes are sparse");
    let on_a = controller
        .get_capacity(capacity(Some("node-a")))
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(on_a.available_capacity, 3000);
    let gone = controller
        .get_capacity(capacity(Some("node-old")))
        .await
        .expect("capacity")
        .into_inner();
    assert_eq!(gone.available_capacity, 0);
    finish(script).await;
    driver.stop().await;
}

#[tokio::test]
async fn a_malformed_from_backup_is_refused_before_anything_is_read_or_made() {
    let (client, _server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let mut request = create_request("pvc-1", 1 << 20);
    request.parameters.extend(
        [
            ("fromBackup", "backup-0123456789abcdef"),
            (
                "recurringJobs",
                r#"[{"name":"snap","task":"snapshot","cron":"@daily","retain":1}]"#,
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    // The mock server answers nothing: any request would stall the call.
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        driver.controller().create_volume(request),
    )
    .await
    .expect("refused without a request to the API server")
    .expect_err("not a backup URL");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("spec.fromBackup must be a backup URL")
            && refused
                .message()
                .contains("StorageClass parameter `fromBackup`"),
        "{}",
        refused.message()
    );
    driver.stop().await;
}

#[tokio::test]
async fn a_topology_without_a_live_agent_is_refused_not_placed_elsewhere() {
    let (client, mut server) = ApiServer::start();
    let driver = Driver::controller_only(client).await;
    let script = tokio::spawn(async move {
        missing(&mut server, &format!("{VOLUMES}/pvc-z")).await;
        let now = jiff::Timestamp::now().to_string();
        answer(
            &mut server,
            "/apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases",
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [
                {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "bulwark-agent-node-a", "namespace": "bulwark-system"},
                 "spec": {"holderIdentity": "node-a", "renewTime": now, "leaseDurationSeconds": 30}},
            ]}),
        )
        .await;
    });
    let mut request = create_request("pvc-z", 1 << 20);
    request.accessibility_requirements = Some(proto::TopologyRequirement {
        requisite: vec![proto::Topology {
            segments: [(super::TOPOLOGY_NODE_KEY.to_owned(), "node-z".to_owned())].into(),
        }],
        preferred: vec![],
    });
    let refused = driver
        .controller()
        .create_volume(request)
        .await
        .expect_err("node-z runs no agent");
    finish(script).await;
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains(
            "no node of the requested topology (node-z) runs a bulwark agent (live agents: node-a)"
        ),
        "{}",
        refused.message()
    );
    driver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_volume_unstaged_after_its_file_was_served_anew_releases_its_loop_device() {
    if !crate::agent::volumes::tests::fuse_available() {
        return;
    }
    let (work, file, driver, mut client) = node_driver("pvc-6", 16 << 20).await;
    let staging = work.path().join("staging/pvc-6");
    client
        .node_stage_volume(stage_request("pvc-6", &staging, true))
        .await
        .expect("staged");
    let old = work.path().join("pvc-6.old");
    std::fs::rename(&file, &old).expect("rename");
    std::fs::File::create(&file)
        .and_then(|f| f.set_len(16 << 20))
        .expect("the file served anew");
    assert_ne!(loop_devices_of(&old), "", "staged on the old file");
    let unstage = proto::NodeUnstageVolumeRequest {
        volume_id: "pvc-6".into(),
        staging_target_path: staging.display().to_string(),
    };
    client
        .node_unstage_volume(unstage.clone())
        .await
        .expect("unstaged");
    // A detach the kernel defers while udev still probes the device completes by itself.
    let mut held = loop_devices_of(&old);
    for _ in 0..50 {
        if held.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = loop_devices_of(&old);
    }
    assert_eq!(held, "", "the old loop device is released");
    client
        .node_unstage_volume(unstage)
        .await
        .expect("unstaging again is fine");
    driver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_writer_volume_is_published_at_one_target_at_a_time() {
    if !crate::agent::volumes::tests::fuse_available() {
        return;
    }
    for block in [false, true] {
        let volume = if block { "pvc-7b" } else { "pvc-7f" };
        let (work, _file, driver, mut client) = node_driver(volume, 16 << 20).await;
        let staging = work.path().join("staging").join(volume);
        let single_writer = |mut capability: proto::VolumeCapability| {
            capability.access_mode = Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeSingleWriter as i32,
            });
            capability
        };
        let mut stage = stage_request(volume, &staging, block);
        stage.volume_capability = stage.volume_capability.map(single_writer);
        client.node_stage_volume(stage).await.expect("staged");
        let publish = |target: &std::path::Path| {
            let mut request = publish_request(volume, &staging, target, block, false);
            request.volume_capability = request.volume_capability.map(single_writer);
            request
        };
        let first = work.path().join("pods/p1").join(volume);
        let second = work.path().join("pods/p2").join(volume);
        client
            .node_publish_volume(publish(&first))
            .await
            .expect("published");
        let refused = client
            .node_publish_volume(publish(&second))
            .await
            .expect_err("a second pod");
        assert_eq!(refused.code(), Code::FailedPrecondition, "block {block}");
        assert!(
            refused.message().contains("already published at")
                && refused.message().contains(&first.display().to_string()),
            "{}",
            refused.message()
        );
        client
            .node_publish_volume(publish(&first))
            .await
            .expect("the same target again is fine");
        client
            .node_unpublish_volume(unpublish_request(volume, &first))
            .await
            .expect("unpublished");
        client
            .node_publish_volume(publish(&second))
            .await
            .expect("free again");
        client
            .node_unpublish_volume(unpublish_request(volume, &second))
            .await
            .expect("unpublished");
        client
            .node_unstage_volume(proto::NodeUnstageVolumeRequest {
                volume_id: volume.into(),
                staging_target_path: staging.display().to_string(),
            })
            .await
            .expect("unstaged");
        driver.stop().await;
    }
}
