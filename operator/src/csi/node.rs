//! The CSI Node service of `bulwark agent`: a volume served by the agent as the file
//! `<mount-dir>/<volume>` gets a loop device (direct I/O, so no second page cache), a file
//! system when it has none (ext4 unless the capability names xfs), and a mount at the staging
//! path; publishing bind-mounts that (read-only when asked) or, for raw block, the loop device.
//! Every step is idempotent: what is already in place is kept, what is already gone is fine.

// `tonic::Status` is the error type of every RPC; the helpers here return it as the RPCs do.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::TOPOLOGY_NODE_KEY;
use super::controller::check_capability;
use super::proto::{self, node_service_capability, volume_capability};

/// The Node service of one agent.
#[derive(Clone)]
pub struct NodeService {
    /// This node's name: the CSI node ID and its topology.
    pub node_id: String,
    /// Where the agent serves volume files (`--mount-dir`).
    pub volume_dir: PathBuf,
    /// How long NodeStage waits for the agent to serve a volume's file.
    pub file_wait: Duration,
    /// The Volumes (operator namespace): NodeExpandVolume grows one whose `spec.size` is still
    /// smaller than asked (a kubelet retry after a lost ControllerExpandVolume, or a CO that
    /// expands on the node only). None: only what the controller grew is grown.
    pub volumes: Option<kube::Api<crd_types::Volume>>,
}

/// A command that failed, with what it printed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Whether `path` is a mount point, from this process's mount table (octal escapes decoded).
pub fn is_mount_point(path: &Path) -> bool {
    mount_source(path).is_some()
}

/// One entry of this process's mount table (`/proc/self/mountinfo`), escapes decoded.
struct Mount {
    /// `major:minor` of the mounted file system.
    numbers: String,
    /// The path within that file system that is mounted (`/loop3` for a bound device node).
    root: String,
    point: PathBuf,
    /// What was mounted (e.g. `/dev/loop3`): the field after the " - " separator's type.
    source: String,
}

fn mounts() -> Vec<Mount> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let source = line.split(" - ").nth(1)?.split(' ').nth(1)?;
            Some(Mount {
                numbers: (*fields.get(2)?).to_owned(),
                root: unescape(fields.get(3)?),
                point: PathBuf::from(unescape(fields.get(4)?)),
                source: unescape(source),
            })
        })
        .collect()
}

/// What is mounted at `path` (the device, e.g. `/dev/loop3`), if anything: the last mount on a
/// path is the one seen there.
fn mount_source(path: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|mount| mount.point == path)
        .map(|mount| mount.source)
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(byte) => out.push(char::from(byte)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Loop devices backed by `file`.
fn loop_devices(file: &Path) -> Result<Vec<String>, String> {
    let listed = run("losetup", &["-j", &file.to_string_lossy()])?;
    Ok(listed
        .lines()
        .filter_map(|line| line.split(':').next())
        .map(str::to_owned)
        .collect())
}

/// The loop device of `file`, attached when it has none.
fn attach(file: &Path) -> Result<String, String> {
    if let Some(device) = loop_devices(file)?.into_iter().next() {
        return Ok(device);
    }
    run(
        "losetup",
        &["-f", "--show", "--direct-io=on", &file.to_string_lossy()],
    )
}

fn staging_path(path: &str) -> Result<PathBuf, Status> {
    required(path, "staging_target_path").map(PathBuf::from)
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

fn capability(
    capability: Option<&proto::VolumeCapability>,
) -> Result<&proto::VolumeCapability, Status> {
    let capability =
        capability.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    check_capability(0, capability).map_err(|e| {
        Status::invalid_argument(e.replace("volume_capabilities[0]", "volume_capability"))
    })?;
    Ok(capability)
}

fn internal(error: String) -> Status {
    Status::internal(error)
}

impl NodeService {
    /// The volume's file, once the agent serves it.
    async fn volume_file(&self, volume: &str) -> Result<PathBuf, Status> {
        if volume.contains('/') || volume == "." || volume == ".." {
            return Err(Status::not_found(format!(
                "volume {volume:?} is not a Bulwark volume"
            )));
        }
        let file = self.volume_dir.join(volume);
        let deadline = tokio::time::Instant::now() + self.file_wait;
        while !file.is_file() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::failed_precondition(format!(
                    "volume {volume} is not served on node {} (no {}): the volume is placed on another node or its agent has not created it yet",
                    self.node_id,
                    file.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(file)
    }
}

/// The file in a block volume's staging directory naming its loop device: unstage detaches
/// that one even when the volume's file was served anew since (an agent restart).
const STAGED_DEVICE: &str = "loop-device";

fn stage(file: &Path, staging: &Path, capability: &proto::VolumeCapability) -> Result<(), String> {
    let Some(volume_capability::AccessType::Mount(mount)) = &capability.access_type else {
        // Raw block: the loop device is all there is to stage.
        let device = attach(file)?;
        std::fs::create_dir_all(staging)
            .and_then(|()| std::fs::write(staging.join(STAGED_DEVICE), &device))
            .map_err(|e| {
                format!(
                    "cannot record the loop device in {}: {e}",
                    staging.display()
                )
            })?;
        return Ok(());
    };
    if is_mount_point(staging) {
        // Staged already (kubelet asks again after it restarts): fine while the device still
        // holds the file the agent serves.
        let condition = volume_condition(file, staging);
        if condition.abnormal {
            return Err(condition.message);
        }
        return Ok(());
    }
    let device = attach(file)?;
    let wanted = if mount.fs_type.is_empty() {
        "ext4"
    } else {
        mount.fs_type.as_str()
    };
    // `blkid` exits 2 when it finds no file system: an empty volume gets one.
    let found = run("blkid", &["-p", "-s", "TYPE", "-o", "value", &device]).unwrap_or_default();
    match found.as_str() {
        "" => {
            let mkfs = format!("mkfs.{wanted}");
            let quiet: &[&str] = if wanted == "xfs" {
                &["-q"]
            } else {
                &["-q", "-F"]
            };
            let mut args = quiet.to_vec();
            args.push(&device);
            run(&mkfs, &args)?;
        }
        found if found == wanted => {}
        found => {
            return Err(format!(
                "the volume holds a {found} file system, the request asks for {wanted}: ask for {found} (or use a new volume)"
            ));
        }
    }
    std::fs::create_dir_all(staging)
        .map_err(|e| format!("cannot create the staging path {}: {e}", staging.display()))?;
    let mut args = vec!["-t", wanted];
    let flags = mount.mount_flags.join(",");
    if !flags.is_empty() {
        args.extend(["-o", &flags]);
    }
    let staging_text = staging.to_string_lossy();
    args.extend([device.as_str(), &staging_text]);
    run("mount", &args).map(drop)
}

fn unstage(file: &Path, staging: &Path) -> Result<(), String> {
    // The staged file system's own device: after an agent restart its file is on a FUSE mount
    // that is gone, so `losetup -j` on the served file no longer finds it.
    let mut devices: Vec<String> = mount_source(staging)
        .filter(|source| source.starts_with("/dev/loop"))
        .into_iter()
        .collect();
    let record = staging.join(STAGED_DEVICE);
    if let Ok(device) = std::fs::read_to_string(&record) {
        // Only while it still holds this volume's file (by name: the file itself may be the
        // one of a FUSE mount that is gone); a device since reused by another volume stays.
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let device = device.trim().to_owned();
        let holds = run(
            "losetup",
            &["--list", "--noheadings", "--output", "BACK-FILE", &device],
        )
        .is_ok_and(|back| name.is_some_and(|name| back.contains(&name)));
        if holds {
            devices.push(device);
        }
    }
    if is_mount_point(staging) {
        run("umount", &[&staging.to_string_lossy()])?;
    }
    if file.exists() {
        devices.extend(loop_devices(file)?);
    }
    devices.sort();
    devices.dedup();
    for device in devices {
        match run("losetup", &["-d", &device]) {
            Ok(_) => {}
            // Detached already (a repeated unstage): nothing left to release.
            Err(error) if !Path::new(&device).exists() || error.contains("No such device") => {}
            Err(error) => return Err(error),
        }
    }
    let _ = std::fs::remove_file(record);
    Ok(())
}

/// Major number of loop devices.
const LOOP_MAJOR: u32 = 7;

/// Whether a published volume can do I/O: its loop device must still hold the file the agent
/// serves. After an agent restart it holds the file of a FUSE mount that is gone, and every
/// read and write fails until the volume is staged again (kubelet shows this on the pod's
/// volume health).
pub fn volume_condition(file: &Path, volume_path: &Path) -> proto::VolumeCondition {
    use std::os::unix::fs::MetadataExt;
    let healthy = proto::VolumeCondition {
        abnormal: false,
        message: "the volume's loop device holds the file its agent serves".into(),
    };
    let Ok(published) = std::fs::metadata(volume_path) else {
        return healthy;
    };
    let device = if published.file_type().is_block_device() {
        published.rdev()
    } else {
        published.dev()
    };
    let (major, minor) = (rustix::fs::major(device), rustix::fs::minor(device));
    if major != LOOP_MAJOR {
        // Not on a loop device of ours: nothing to judge.
        return healthy;
    }
    let abnormal = |message: String| proto::VolumeCondition {
        abnormal: true,
        message,
    };
    let Ok(served) = std::fs::metadata(file) else {
        return abnormal(format!(
            "its agent no longer serves the volume on this node ({} is missing): I/O fails; move the pod or restart the agent",
            file.display()
        ));
    };
    let loop_device = format!("/dev/loop{minor}");
    let Ok(backing) = run(
        "losetup",
        &[
            "--list",
            "--noheadings",
            "--output",
            "BACK-INO,BACK-MAJ:MIN",
            &loop_device,
        ],
    ) else {
        return healthy;
    };
    let wanted = format!(
        "{} {}:{}",
        served.ino(),
        rustix::fs::major(served.dev()),
        rustix::fs::minor(served.dev())
    );
    if backing.split_whitespace().collect::<Vec<_>>().join(" ") == wanted {
        healthy
    } else {
        abnormal(format!(
            "{loop_device} still holds the volume's file as it was before its agent restarted: I/O fails until the volume is staged again; restart the pod"
        ))
    }
}

/// Grows the Volume's `spec.size` to `wanted` bytes when it is smaller (never shrinks it).
pub(super) async fn grow_spec(
    volumes: &kube::Api<crd_types::Volume>,
    volume: &str,
    wanted: u64,
) -> Result<(), Status> {
    let current = volumes
        .get_opt(volume)
        .await
        .map_err(|e| Status::unavailable(format!("reading volume {volume}: {e}")))?
        .ok_or_else(|| Status::not_found(format!("volume {volume} does not exist")))?;
    if current.spec.size_bytes().is_some_and(|size| size >= wanted) {
        return Ok(());
    }
    // Guarded: a concurrent, larger growth is never overwritten (409: kubelet asks again).
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "spec": {"size": wanted.to_string()},
    });
    volumes
        .patch(
            volume,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            let code = match &e {
                kube::Error::Api(status) if status.code == 409 => tonic::Code::Aborted,
                kube::Error::Api(status) if status.code == 403 => tonic::Code::PermissionDenied,
                _ => tonic::Code::Unavailable,
            };
            Status::new(
                code,
                format!("growing volume {volume} to {wanted} bytes: {e}"),
            )
        })?;
    tracing::info!(
        volume,
        size = wanted,
        "CSI: Volume grown by NodeExpandVolume"
    );
    Ok(())
}

/// Makes the loop device of a staged volume as large as its grown file, then the file system on
/// it (mounted at `volume_path`) as large as the device. Answers the device's new size.
fn expand(file: &Path, volume_path: &Path, block: bool) -> Result<i64, String> {
    let device = loop_devices(file)?.into_iter().next().ok_or_else(|| {
        format!(
            "the volume is not staged on this node (no loop device on {}): stage it first",
            file.display()
        )
    })?;
    run("losetup", &["-c", &device])?;
    if !block {
        match run("blkid", &["-p", "-s", "TYPE", "-o", "value", &device])?.as_str() {
            "ext4" | "ext3" | "ext2" => run("resize2fs", &[&device]).map(drop).map_err(|e| {
                if e.contains("Permission denied") {
                    format!("{e}: growing a mounted ext4 file system needs CAP_SYS_RESOURCE; run the node plugin container privileged")
                } else {
                    e
                }
            })?,
            "xfs" => run("xfs_growfs", &[&volume_path.to_string_lossy()]).map(drop)?,
            other => return Err(format!("cannot grow a {other:?} file system: only ext4 and xfs grow")),
        }
    }
    let bytes = run("blockdev", &["--getsize64", &device])?;
    bytes
        .parse()
        .map_err(|e| format!("blockdev --getsize64 {device} said {bytes:?}: {e}"))
}

/// Where the volume is published other than at `target` (and its staging path), if anywhere:
/// a mount of its staged file system, or a bind mount of its loop device.
fn published_elsewhere(file: &Path, staging: &Path, target: &Path, block: bool) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let (device_numbers, device_root) = if block {
        let device = loop_devices(file).ok()?.into_iter().next()?;
        let name = device.rsplit('/').next()?.to_owned();
        (None, Some(format!("/{name}")))
    } else {
        let dev = std::fs::metadata(staging).ok()?.dev();
        let numbers = format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev));
        (Some(numbers), None)
    };
    mounts()
        .into_iter()
        .find(|mount| {
            let same = device_numbers.as_deref() == Some(mount.numbers.as_str())
                || device_root.as_deref() == Some(mount.root.as_str());
            same && mount.point != staging && mount.point != target
        })
        .map(|mount| mount.point)
}

fn publish(
    file: &Path,
    staging: &Path,
    target: &Path,
    block: bool,
    readonly: bool,
) -> Result<(), String> {
    if is_mount_point(target) {
        return Ok(());
    }
    let source = if block {
        let device = loop_devices(file)?.into_iter().next().ok_or_else(|| {
            format!(
                "{} has no loop device: NodeStageVolume first",
                file.display()
            )
        })?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map_err(|e| format!("cannot create the target file {}: {e}", target.display()))?;
        device
    } else {
        if !is_mount_point(staging) {
            return Err(format!(
                "the staging path {} is not mounted: NodeStageVolume first",
                staging.display()
            ));
        }
        std::fs::create_dir_all(target)
            .map_err(|e| format!("cannot create the target path {}: {e}", target.display()))?;
        staging.to_string_lossy().into_owned()
    };
    let target_text = target.to_string_lossy();
    run("mount", &["--bind", &source, &target_text])?;
    if readonly {
        // A bind mount takes its read-only flag only on a remount.
        if let Err(error) = run("mount", &["-o", "remount,bind,ro", &target_text]) {
            let _ = run("umount", &[&target_text]);
            return Err(error);
        }
    }
    Ok(())
}

fn unpublish(target: &Path) -> Result<(), String> {
    if is_mount_point(target) {
        run("umount", &[&target.to_string_lossy()])?;
    }
    let removed = if target.is_dir() {
        std::fs::remove_dir(target)
    } else {
        std::fs::remove_file(target)
    };
    match removed {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(format!(
            "cannot remove the target path {}: {error}",
            target.display()
        )),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(internal)
}

#[tonic::async_trait]
impl proto::node_server::Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<proto::NodeStageVolumeRequest>,
    ) -> Result<Response<proto::NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume = required(&request.volume_id, "volume_id")?;
        let staging = staging_path(&request.staging_target_path)?;
        let capability = capability(request.volume_capability.as_ref())?.clone();
        let file = self.volume_file(volume).await?;
        blocking(move || stage(&file, &staging, &capability)).await?;
        Ok(Response::new(proto::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume = required(&request.volume_id, "volume_id")?;
        let staging = staging_path(&request.staging_target_path)?;
        let file = self.volume_dir.join(volume);
        blocking(move || unstage(&file, &staging)).await?;
        Ok(Response::new(proto::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume = required(&request.volume_id, "volume_id")?;
        let staging = staging_path(&request.staging_target_path)?;
        let target = PathBuf::from(required(&request.target_path, "target_path")?);
        let capability = capability(request.volume_capability.as_ref())?;
        let block = matches!(
            capability.access_type,
            Some(volume_capability::AccessType::Block(_))
        );
        let file = self.volume_file(volume).await?;
        let single_writer = capability.access_mode.as_ref().is_some_and(|m| {
            m.mode == volume_capability::access_mode::Mode::SingleNodeSingleWriter as i32
        });
        if single_writer {
            // ReadWriteOncePod: one publish at a time.
            let elsewhere = {
                let (file, staging, target) = (file.clone(), staging.clone(), target.clone());
                blocking(move || Ok(published_elsewhere(&file, &staging, &target, block))).await?
            };
            if let Some(other) = elsewhere {
                return Err(Status::failed_precondition(format!(
                    "volume {volume} is single-writer (ReadWriteOncePod) and already published at {}: unpublish it there first",
                    other.display()
                )));
            }
        }
        let readonly = request.readonly;
        blocking(move || publish(&file, &staging, &target, block, readonly)).await?;
        Ok(Response::new(proto::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let target = PathBuf::from(required(&request.target_path, "target_path")?);
        blocking(move || unpublish(&target)).await?;
        Ok(Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        let volume = required(&request.volume_id, "volume_id")?;
        let path = PathBuf::from(required(&request.volume_path, "volume_path")?);
        let Ok(metadata) = std::fs::metadata(&path) else {
            return Err(Status::not_found(format!(
                "volume_path {} does not exist",
                path.display()
            )));
        };
        let file = self.volume_dir.join(volume);
        let condition = {
            let path = path.clone();
            blocking(move || Ok(volume_condition(&file, &path))).await?
        };
        use proto::volume_usage::Unit;
        let usage = if metadata.file_type().is_block_device() {
            // A raw block volume: its size is all there is to say.
            let size = {
                let path = path.clone();
                blocking(move || run("blockdev", &["--getsize64", &path.to_string_lossy()])).await?
            };
            vec![proto::VolumeUsage {
                total: size.parse().unwrap_or(0),
                unit: Unit::Bytes as i32,
                ..Default::default()
            }]
        } else {
            let stats = rustix::fs::statvfs(&path)
                .map_err(|e| Status::internal(format!("statvfs {}: {e}", path.display())))?;
            let blocks = |count: u64| {
                i64::try_from(count.saturating_mul(stats.f_frsize)).unwrap_or(i64::MAX)
            };
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            vec![
                proto::VolumeUsage {
                    available: blocks(stats.f_bavail),
                    total: blocks(stats.f_blocks),
                    used: blocks(stats.f_blocks.saturating_sub(stats.f_bfree)),
                    unit: Unit::Bytes as i32,
                },
                proto::VolumeUsage {
                    available: count(stats.f_favail),
                    total: count(stats.f_files),
                    used: count(stats.f_files.saturating_sub(stats.f_ffree)),
                    unit: Unit::Inodes as i32,
                },
            ]
        };
        Ok(Response::new(proto::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition),
        }))
    }

    async fn node_expand_volume(
        &self,
        request: Request<proto::NodeExpandVolumeRequest>,
    ) -> Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let volume = required(&request.volume_id, "volume_id")?;
        let path = PathBuf::from(required(&request.volume_path, "volume_path")?);
        if !path.exists() {
            return Err(Status::not_found(format!(
                "volume_path {} does not exist",
                path.display()
            )));
        }
        let wanted = request
            .capacity_range
            .as_ref()
            .map_or(0, |r| r.required_bytes)
            .max(0) as u64;
        let block = match request
            .volume_capability
            .as_ref()
            .and_then(|c| c.access_type.as_ref())
        {
            Some(volume_capability::AccessType::Block(_)) => true,
            Some(volume_capability::AccessType::Mount(_)) => false,
            None => std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
                .unwrap_or(false),
        };
        let file = self.volume_file(volume).await?;
        let condition = {
            let (file, path) = (file.clone(), path.clone());
            blocking(move || Ok(volume_condition(&file, &path))).await?
        };
        if condition.abnormal {
            return Err(Status::failed_precondition(format!(
                "volume {volume} cannot grow on node {}: {}; it grows once staged again",
                self.node_id, condition.message
            )));
        }
        if let Some(volumes) = &self.volumes {
            grow_spec(volumes, volume, wanted).await?;
        }
        // The agent grows the data after `spec.size` grew; until then there is nothing to grow
        // here, and kubelet asks again.
        let deadline = tokio::time::Instant::now() + self.file_wait;
        loop {
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if size >= wanted {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "volume {volume} is {size} bytes on node {}, not yet the {wanted} bytes asked for: its agent grows it after the Volume's spec.size grew; the request is retried",
                    self.node_id
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let capacity = blocking(move || expand(&file, &path, block)).await?;
        Ok(Response::new(proto::NodeExpandVolumeResponse {
            capacity_bytes: capacity,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::{Rpc, Type, rpc};
        let capabilities = [
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::ExpandVolume,
            rpc::Type::VolumeCondition,
            // ReadWriteOncePod reaches the driver as SINGLE_NODE_SINGLE_WRITER.
            rpc::Type::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|kind| proto::NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc {
                r#type: kind as i32,
            })),
        })
        .collect();
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(proto::Topology {
                segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_owned(), self.node_id.clone())]),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_of_a_mount_point_is_read_from_the_mount_table() {
        assert_eq!(mount_source(Path::new("/proc")).as_deref(), Some("proc"));
        assert_eq!(mount_source(Path::new("/no/such/mount/point")), None);
    }

    #[test]
    fn mount_table_paths_are_unescaped() {
        assert_eq!(unescape("/var/lib/a\\040b"), "/var/lib/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/odd\\x"), "/odd\\x");
    }
}
