//! The issue-7 flow against a real cluster (`KUBECONFIG`, e.g. kind), with the operator run as
//! local processes: `bulwark run` plus one `bulwark agent` with its own data dir and a file://
//! backup target. Volume → write through the FUSE file → Snapshot → Backup → restore into a
//! new Volume → identical bytes; then an incremental backup reads only what changed.
//! Needs root and /dev/fuse. Run: `cargo test -p operator --test cluster_flow -- --ignored`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crd_types::{Backup, Snapshot, Volume};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

struct Processes(Vec<Child>);

impl Processes {
    /// Fails the test at once when `bulwark run` or the agent has exited: nothing the test
    /// waits for can happen any more.
    fn assert_alive(&mut self) {
        for (name, child) in ["`bulwark run`", "`bulwark agent`"].iter().zip(&mut self.0) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited ({status}): see its log above");
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

fn kubectl(args: &[&str]) -> bool {
    Command::new("kubectl")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_for<K, F>(
    processes: &mut Processes,
    api: &Api<K>,
    name: &str,
    what: &str,
    done: F,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        processes.assert_alive();
        if let Ok(Some(object)) = api.get_opt(name).await
            && done(&object)
        {
            return object;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn volume(name: &str, from_backup: Option<&str>) -> Volume {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name},
        "spec": {"size": "64Mi", "fromBackup": from_backup},
    }))
    .expect("a valid Volume")
}

fn ready(v: &Volume) -> bool {
    v.status.as_ref().and_then(|s| s.state) == Some(crd_types::volume::VolumeState::Ready)
}

#[tokio::test]
#[ignore = "needs a cluster in KUBECONFIG, root and /dev/fuse"]
async fn volume_snapshot_backup_restore_round_trip() {
    let namespace = format!("bulwark-flow-{}", std::process::id());
    assert!(
        kubectl(&["create", "namespace", &namespace]),
        "kubectl create namespace"
    );
    let work = tempfile::tempdir().expect("temp dir");
    let store = work.path().join("store");
    std::fs::create_dir_all(&store).expect("store dir");
    let node = "flow-node";
    let bin = env!("CARGO_BIN_EXE_bulwark");
    let common = |port: u16| {
        vec![
            "--namespace".to_owned(),
            namespace.clone(),
            "--http-addr".to_owned(),
            format!("127.0.0.1:{port}"),
        ]
    };
    let mut controller_args = vec!["run".to_owned()];
    // A Kubernetes 1.24 API server cannot compile the CEL transition rules (`oldSelf`) of our
    // CRDs: there a copy without them is installed by hand (`BULWARK_CRDS=preinstalled`).
    if std::env::var("BULWARK_CRDS").as_deref() != Ok("preinstalled") {
        controller_args.push("--install-crds".to_owned());
    }
    controller_args.extend([
        "--default-backup-target".to_owned(),
        format!("file://{}", store.display()),
    ]);
    controller_args.extend(common(free_port()));
    let mut agent_args = vec![
        "agent".to_owned(),
        "--node-name".to_owned(),
        node.to_owned(),
        "--data-dir".to_owned(),
        work.path().join("node").display().to_string(),
    ];
    agent_args.extend(common(free_port()));
    let mut processes = Processes(vec![
        Command::new(bin)
            .args(&controller_args)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bulwark run starts"),
        Command::new(bin)
            .args(&agent_args)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bulwark agent starts"),
    ]);

    let client = kube::Client::try_default().await.expect("a kubeconfig");
    let volumes: Api<Volume> = Api::namespaced(client.clone(), &namespace);
    let snapshots: Api<Snapshot> = Api::namespaced(client.clone(), &namespace);
    let backups: Api<Backup> = Api::namespaced(client.clone(), &namespace);
    // The CRDs appear once `bulwark run` installed them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while volumes.list(&Default::default()).await.is_err() {
        processes.assert_alive();
        assert!(Instant::now() < deadline, "the CRDs were never installed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    volumes
        .create(&PostParams::default(), &volume("source", None))
        .await
        .expect("create volume");
    let source = wait_for(&mut processes, &volumes, "source", "Ready", ready).await;
    assert_eq!(
        source.status.as_ref().and_then(|s| s.owner_id.as_deref()),
        Some(node)
    );
    let file = work.path().join("node/mnt/source");
    let mut data = vec![0u8; 8 << 20];
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = (i * 7 % 251) as u8;
    }
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("the volume's FUSE file");
        f.write_all_at(&data, 4 << 20).expect("write");
        f.sync_all().expect("fsync");
    }

    let snapshot: Snapshot = serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Snapshot",
        "metadata": {"name": "snap-1"}, "spec": {"volume": "source"}
    }))
    .expect("a valid Snapshot");
    snapshots
        .create(&PostParams::default(), &snapshot)
        .await
        .expect("create snapshot");
    wait_for(&mut processes, &snapshots, "snap-1", "readyToUse", |s| {
        s.status.as_ref().and_then(|s| s.ready_to_use) == Some(true)
    })
    .await;

    let backup: Backup = serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Backup",
        "metadata": {"name": "backup-0000000000000001"}, "spec": {"volume": "source", "snapshotName": "snap-1"}
    }))
    .expect("a valid Backup");
    backups
        .create(&PostParams::default(), &backup)
        .await
        .expect("create backup");
    let done = wait_for(
        &mut processes,
        &backups,
        "backup-0000000000000001",
        "Completed",
        |b| {
            b.status.as_ref().and_then(|s| s.state)
                == Some(crd_types::backup::BackupState::Completed)
        },
    )
    .await;
    let url = done
        .status
        .as_ref()
        .and_then(|s| s.url.clone())
        .expect("a completed backup has a URL");

    volumes
        .create(&PostParams::default(), &volume("restored", Some(&url)))
        .await
        .expect("create restored volume");
    wait_for(&mut processes, &volumes, "restored", "Ready", ready).await;
    let original = std::fs::read(&file).expect("read source");
    let restored = std::fs::read(work.path().join("node/mnt/restored")).expect("read restored");
    assert!(
        original == restored,
        "the restored volume differs from the source"
    );

    // Incremental: change 1 MiB, snapshot, back up; the backup reads about that much.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("the volume's FUSE file");
        f.write_all_at(&vec![0xAB; 1 << 20], 32 << 20)
            .expect("write");
        f.sync_all().expect("fsync");
    }
    let mut snapshot2 = snapshot.clone();
    snapshot2.metadata.name = Some("snap-2".into());
    snapshots
        .create(&PostParams::default(), &snapshot2)
        .await
        .expect("create snapshot 2");
    let mut backup2 = backup.clone();
    backup2.metadata.name = Some("backup-0000000000000002".into());
    backup2.spec.snapshot_name = Some("snap-2".into());
    backups
        .create(&PostParams::default(), &backup2)
        .await
        .expect("create backup 2");
    let done2 = wait_for(
        &mut processes,
        &backups,
        "backup-0000000000000002",
        "Completed",
        |b| {
            b.status.as_ref().and_then(|s| s.state)
                == Some(crd_types::backup::BackupState::Completed)
        },
    )
    .await;
    let read = done2
        .status
        .as_ref()
        .and_then(|s| s.bytes_read)
        .expect("bytesRead");
    assert!(
        read <= 2 << 20,
        "the incremental backup read {read} bytes for a 1 MiB change"
    );

    for name in ["restored", "source"] {
        let _ = volumes.delete(name, &DeleteParams::default()).await;
    }
    kubectl(&["delete", "namespace", &namespace, "--wait=false"]);
}
