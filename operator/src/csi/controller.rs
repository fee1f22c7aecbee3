//! The CSI Controller service: volumes of PVCs as Volume objects in the operator's namespace.
//!
//! CreateVolume validates everything before it creates anything (capabilities, size, content
//! source, StorageClass parameters), is idempotent by name as the spec demands, and answers
//! once the volume is Ready; while it is still being placed or created it answers `ABORTED`,
//! which the external-provisioner retries. DeleteVolume deletes the Volume and answers once it
//! is gone (its finalizer keeps it until the agent removed the data); a missing one is already
//! deleted.

// `tonic::Status` is the error type of every RPC; the helpers here return it as the RPCs do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crd_types::Volume;
use crd_types::volume::VolumeState;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tonic::{Code, Request, Response, Status};

use super::TOPOLOGY_NODE_KEY;
use super::parameters::{self, VolumeParameters};
use super::proto::{self, volume_capability, volume_content_source};
use super::snapshots;
use crate::controllers::snapshot_content::resolve::{self, Outcome};

/// A volume no size was asked for gets this many bytes.
pub const DEFAULT_SIZE: i64 = 1 << 30;
/// Volume sizes are whole 4 KiB sectors.
const SECTOR: i64 = 4096;
/// Label marking the Volumes this driver created.
pub const CREATED_BY_LABEL: &str = "bulwark.io/created-by";

/// What CreateVolume makes before the Volume.
#[derive(Default)]
struct Prerequisites {
    recurring_jobs: Vec<crd_types::RecurringJob>,
    backing_image: Option<crd_types::BackingImage>,
}

/// The Controller service of `bulwark run`.
#[derive(Clone)]
pub struct ControllerService {
    pub client: kube::Client,
    /// Where Volume objects live.
    pub namespace: String,
    /// How long CreateVolume waits for a new volume to become Ready before it answers
    /// `ABORTED` (the sidecar retries).
    pub ready_wait: Duration,
}

impl ControllerService {
    /// Objects of a kind in the operator's namespace.
    pub(super) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn volumes(&self) -> Api<Volume> {
        self.api()
    }
}

/// A volume's size in bytes, as CSI counts them.
pub(super) fn size_of(volume: &Volume) -> Option<i64> {
    volume.spec.size_bytes().and_then(|b| i64::try_from(b).ok())
}

pub(super) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

pub(super) fn api_error(what: &str, error: kube::Error) -> Status {
    let code = match &error {
        kube::Error::Api(status) if status.code == 403 => Code::PermissionDenied,
        kube::Error::Api(status) if status.code == 409 => Code::Aborted,
        kube::Error::Api(status) if status.code == 422 => Code::InvalidArgument,
        kube::Error::Api(status) if status.code >= 500 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, format!("{what}: {error}"))
}

/// Why a capability cannot be had, naming the field and what Bulwark offers.
pub fn check_capability(index: usize, capability: &proto::VolumeCapability) -> Result<(), String> {
    use volume_capability::access_mode::Mode;
    let field = format!("volume_capabilities[{index}]");
    let mode = capability
        .access_mode
        .as_ref()
        .map(|m| Mode::try_from(m.mode).unwrap_or(Mode::Unknown))
        .unwrap_or(Mode::Unknown);
    match mode {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => {}
        Mode::Unknown => {
            return Err(format!(
                "{field}.access_mode is missing or unknown: ask for ReadWriteOnce (SINGLE_NODE_WRITER)"
            ));
        }
        other => {
            return Err(format!(
                "{field}.access_mode {} is not supported: a Bulwark volume is used on one node at a time; use ReadWriteOnce or ReadWriteOncePod",
                other.as_str_name()
            ));
        }
    }
    match &capability.access_type {
        Some(volume_capability::AccessType::Block(_)) => Ok(()),
        Some(volume_capability::AccessType::Mount(mount)) => match mount.fs_type.as_str() {
            "" | "ext4" | "xfs" => Ok(()),
            other => Err(format!(
                "{field}.mount.fs_type {other:?} is not supported: use ext4 (the default) or xfs"
            )),
        },
        None => Err(format!(
            "{field}.access_type is missing: ask for a block or a mount (filesystem) volume"
        )),
    }
}

/// The size to create for `range`: at least `required_bytes` rounded up to whole sectors, at
/// most `limit_bytes` (0: no limit), [`DEFAULT_SIZE`] when neither is given.
pub fn volume_size(range: Option<&proto::CapacityRange>) -> Result<i64, String> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err("capacity_range must not be negative".into());
    }
    let wanted = if required == 0 {
        if limit == 0 {
            DEFAULT_SIZE
        } else {
            limit.min(DEFAULT_SIZE)
        }
    } else {
        required
    };
    let size = wanted
        .checked_add(SECTOR - 1)
        .ok_or_else(|| format!("capacity_range: {wanted} bytes is too large"))?
        / SECTOR
        * SECTOR;
    if limit != 0 && size > limit {
        return Err(format!(
            "capacity_range: required_bytes {required} rounded up to whole 4 KiB sectors is {size}, more than limit_bytes {limit}"
        ));
    }
    Ok(size)
}

/// `spec.dataSource` for a content source: a snapshot handle (`snap://`, `bak://`, legacy
/// `bs://`, `bi://`) as it is, after checking it decodes; a volume as `vol://<id>`.
pub fn data_source(source: Option<&proto::VolumeContentSource>) -> Result<Option<String>, Status> {
    // A handle that does not decode names no snapshot there is: NOT_FOUND, as the spec asks
    // for a missing source, with what is wrong with it.
    match source.and_then(|s| s.r#type.as_ref()) {
        None => Ok(None),
        Some(volume_content_source::Type::Snapshot(snapshot)) => {
            handle_codec::decode(&snapshot.snapshot_id).map_err(|e| {
                Status::not_found(format!(
                    "volume_content_source.snapshot.snapshot_id {:?}: {e}",
                    snapshot.snapshot_id
                ))
            })?;
            Ok(Some(snapshot.snapshot_id.clone()))
        }
        Some(volume_content_source::Type::Volume(volume)) => {
            if is_volume_name(&volume.volume_id) {
                Ok(Some(format!("vol://{}", volume.volume_id)))
            } else {
                Err(Status::not_found(format!(
                    "volume_content_source.volume.volume_id {:?} is not a Bulwark volume",
                    volume.volume_id
                )))
            }
        }
    }
}

/// Where a Volume whose CSI name is not an object name keeps that name.
pub const CSI_NAME_ANNOTATION: &str = "bulwark.io/csi-name";

/// The Volume (and volume ID) of CSI name `name`: the name itself when it can name a Volume
/// (the external-provisioner's `pvc-<uid>`), else `csi-` and 24 hex digits of its SHA-256, the
/// same for the same name, so CreateVolume stays idempotent for any name the spec allows.
pub fn volume_name(name: &str) -> String {
    use sha2::Digest;
    if is_volume_name(name) {
        return name.to_owned();
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    format!("csi-{}", &hex::encode(digest)[..24])
}

/// Volume names: DNS-1123 labels of at most 63 characters (the external-provisioner's
/// `pvc-<uid>` is one).
pub(super) fn is_volume_name(name: &str) -> bool {
    recurring::storage_class::check_dns_label(name).is_ok()
}

/// Keeps the CSI name of an object whose name had to be derived from it ([`volume_name`]).
pub(super) fn remember_csi_name(metadata: &mut kube::api::ObjectMeta, csi_name: &str) {
    if metadata.name.as_deref() != Some(csi_name) {
        metadata
            .annotations
            .get_or_insert_default()
            .insert(CSI_NAME_ANNOTATION.into(), csi_name.into());
    }
}

/// The Volume a validated request creates.
pub fn build_volume(
    name: &str,
    size: i64,
    source: Option<String>,
    parameters: &VolumeParameters,
) -> Volume {
    let mut labels: BTreeMap<String, String> = parameters.labels.clone();
    labels.insert(CREATED_BY_LABEL.into(), "csi".into());
    let mut spec = serde_json::json!({ "size": size.to_string() });
    let mut set = |key: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            spec[key] = value;
        }
    };
    set("dataSource", source.map(Into::into));
    set("fromBackup", parameters.from_backup.clone().map(Into::into));
    set(
        "backingImage",
        parameters
            .backing_image
            .as_ref()
            .map(|i| i.name.clone().into()),
    );
    set("nodeID", parameters.node_id.clone().map(Into::into));
    set(
        "backupTargetName",
        parameters.backup_target_name.clone().map(Into::into),
    );
    set(
        "backupCompressionMethod",
        parameters
            .backup_compression_method
            .map(|m| m.as_str().into()),
    );
    set(
        "backupBlockSize",
        parameters.backup_block_size.clone().map(Into::into),
    );
    serde_json::from_value(serde_json::json!({
        "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .expect("the Volume built here matches its schema")
}

/// The nodes a request's topology names, most preferred first (the node a WaitForFirstConsumer
/// pod was scheduled to leads `preferred`).
fn topology_nodes(requirement: Option<&proto::TopologyRequirement>) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    if let Some(requirement) = requirement {
        for topology in requirement.preferred.iter().chain(&requirement.requisite) {
            if let Some(node) = topology.segments.get(TOPOLOGY_NODE_KEY)
                && !nodes.contains(node)
            {
                nodes.push(node.clone());
            }
        }
    }
    nodes
}

/// Free bytes for new volumes in a topology: on its node, or (no topology) on all live nodes
/// together. No largest volume size is claimed: volumes are sparse and allocate their bytes
/// only as they are written (which is also why `deploy/` leaves the CSIDriver's
/// `storageCapacity` off: the scheduler would refuse PVCs larger than the free bytes).
pub fn node_capacity(live: &[(String, Option<u64>)], topology: Option<&proto::Topology>) -> i64 {
    let wanted = topology.and_then(|t| t.segments.get(TOPOLOGY_NODE_KEY));
    live.iter()
        .filter(|(node, _)| wanted.is_none_or(|w| w == node))
        .map(|(_, free)| free.map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX)))
        .fold(0i64, i64::saturating_add)
}

/// Whether an existing Volume is what the request asks for again (same size and source).
/// (The size matches when it fits the request's capacity range: a volume grown since, or made
/// as large as its snapshot, is still the one asked for.)
fn same_request(existing: &Volume, wanted: &Volume, range: Option<&proto::CapacityRange>) -> bool {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    let size_fits = match size_of(existing) {
        Some(size) => size >= required && (limit == 0 || size <= limit),
        None => false,
    };
    let sized_as_asked = if required == 0 && limit == 0 {
        size_fits
    } else {
        size_fits || existing.spec.size == wanted.spec.size
    };
    sized_as_asked
        && existing.spec.data_source == wanted.spec.data_source
        && existing.spec.from_backup == wanted.spec.from_backup
        && existing.spec.backing_image == wanted.spec.backing_image
}

fn csi_volume(
    volume: &Volume,
    size: i64,
    source: Option<proto::VolumeContentSource>,
) -> proto::Volume {
    let node = volume.status.as_ref().and_then(|s| s.owner_id.clone());
    proto::Volume {
        capacity_bytes: size,
        volume_id: volume.metadata.name.clone().unwrap_or_default(),
        volume_context: HashMap::new(),
        content_source: source,
        accessible_topology: node
            .map(|node| proto::Topology {
                segments: HashMap::from([(TOPOLOGY_NODE_KEY.to_owned(), node)]),
            })
            .into_iter()
            .collect(),
    }
}

impl ControllerService {
    /// The source of a new volume must be usable, or the spec's answer is NOT_FOUND (missing)
    /// or FAILED_PRECONDITION (failed), not a volume that never becomes ready. Answers the
    /// bytes a volume restored from it needs, when known.
    async fn check_source(
        &self,
        request: &proto::CreateVolumeRequest,
    ) -> Result<Option<i64>, Status> {
        let source = request
            .volume_content_source
            .as_ref()
            .and_then(|s| s.r#type.as_ref());
        match source {
            None => Ok(None),
            Some(volume_content_source::Type::Volume(source)) => {
                let id = &source.volume_id;
                let volume = self
                    .volumes()
                    .get_opt(id)
                    .await
                    .map_err(|e| api_error("reading the source Volume", e))?
                    .ok_or_else(|| {
                        Status::not_found(format!(
                            "volume_content_source.volume.volume_id: volume {id} does not exist"
                        ))
                    })?;
                Ok(size_of(&volume))
            }
            Some(volume_content_source::Type::Snapshot(source)) => {
                let field = "volume_content_source.snapshot.snapshot_id";
                let id = &source.snapshot_id;
                let handle = handle_codec::decode(id)
                    .map_err(|e| Status::not_found(format!("{field} {id:?}: {e}")))?;
                let objects = self.fetch_for_handle(&handle).await?;
                let outcome =
                    resolve::check_handle(&objects, &handle, &self.namespace, BTreeMap::new());
                let image = matches!(handle, handle_codec::SnapshotHandle::BackingImage(_));
                match outcome {
                    Outcome::Ready { restore_size, .. } => Ok(restore_size),
                    // A missing image a handle can make is made on demand by the Volume
                    // controller; an image being made is waited for by the volume.
                    Outcome::Create(_) | Outcome::InProgress(_) if image => Ok(None),
                    Outcome::Failed(why) if objects.has_object_of(&handle) => {
                        Err(Status::failed_precondition(format!("{field} {id}: {why}")))
                    }
                    Outcome::Failed(why) => Err(Status::not_found(format!("{field} {id}: {why}"))),
                    Outcome::InProgress(why) => Err(Status::aborted(format!(
                        "{field} {id}: {why}; the request is retried"
                    ))),
                    Outcome::Create(_) => Err(Status::not_found(format!(
                        "{field} {id}: it names nothing that exists"
                    ))),
                }
            }
        }
    }

    /// The objects a new volume of these parameters needs first: the RecurringJobs of the
    /// legacy `recurringJobs` that do not exist yet, and the backing image when it does not
    /// exist and the StorageClass says how to make it. Everything is checked before anything
    /// is created, so a refused request leaves nothing behind.
    async fn prerequisites(&self, parameters: &VolumeParameters) -> Result<Prerequisites, Status> {
        let mut needed = Prerequisites::default();
        let jobs: Api<crd_types::RecurringJob> = self.api();
        for job in &parameters.recurring_jobs {
            let mut wanted = parameters::recurring_job_object(job).map_err(invalid)?;
            let name = job.name.as_str();
            match jobs
                .get_opt(name)
                .await
                .map_err(|e| api_error(&format!("reading RecurringJob {name}"), e))?
            {
                Some(existing) => {
                    if (
                        existing.spec.task,
                        &existing.spec.cron,
                        existing.spec.retain,
                    ) != (wanted.spec.task, &wanted.spec.cron, wanted.spec.retain)
                    {
                        // Someone changed it since: theirs stands; the volume is bound to it.
                        tracing::info!(
                            job = name,
                            "CSI: RecurringJob of StorageClass parameter recurringJobs exists with another task, cron or retain; kept as it is"
                        );
                    }
                }
                None => {
                    wanted
                        .metadata
                        .labels
                        .get_or_insert_default()
                        .insert(CREATED_BY_LABEL.into(), "csi".into());
                    needed.recurring_jobs.push(wanted);
                }
            }
        }
        if let Some(image) = &parameters.backing_image {
            needed.backing_image = self.backing_image_to_create(image).await?;
        }
        Ok(needed)
    }

    async fn backing_image_to_create(
        &self,
        image: &parameters::BackingImageRequest,
    ) -> Result<Option<crd_types::BackingImage>, Status> {
        let images: Api<crd_types::BackingImage> = self.api();
        let name = image.name.as_str();
        if let Some(existing) = images
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading BackingImage {name}"), e))?
        {
            let known = existing
                .status
                .as_ref()
                .and_then(|s| s.checksum.clone())
                .or(existing.spec.checksum.clone());
            return match (&image.checksum, known) {
                (Some(wanted), Some(known)) if *wanted != known => Err(invalid(format!(
                    "StorageClass parameter `backingImageChecksum` is {wanted}, but BackingImage {name} has checksum {known}: fix the checksum or the image name"
                ))),
                _ => Ok(None),
            };
        }
        let Some(source_type) = &image.data_source_type else {
            return Err(invalid(format!(
                "StorageClass parameter `backingImage`: BackingImage {name} does not exist in namespace {}: create it, or give `backingImageDataSourceType` (and `backingImageDataSourceParameters`) so the driver creates it",
                self.namespace
            )));
        };
        let mut wanted: crd_types::BackingImage = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
            "metadata": {"name": name, "labels": {CREATED_BY_LABEL: "csi"}},
            "spec": {
                "sourceType": source_type,
                "sourceParameters": image.data_source_parameters,
            },
        }))
        .map_err(|_| {
            invalid(format!(
                "StorageClass parameter `backingImageDataSourceType` is `{source_type}`; use download or export-from-volume"
            ))
        })?;
        wanted.spec.checksum = image.checksum.clone();
        Ok(Some(wanted))
    }

    async fn create_prerequisites(&self, needed: Prerequisites) -> Result<(), Status> {
        let params = PostParams::default();
        let jobs: Api<crd_types::RecurringJob> = self.api();
        for job in &needed.recurring_jobs {
            let name = job.metadata.name.as_deref().unwrap_or_default();
            match jobs.create(&params, job).await {
                Ok(_) => tracing::info!(job = name, "CSI: RecurringJob created for recurringJobs"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => {
                    return Err(api_error(
                        &format!(
                            "creating RecurringJob {name} of StorageClass parameter recurringJobs"
                        ),
                        error,
                    ));
                }
            }
        }
        if let Some(image) = &needed.backing_image {
            let name = image.metadata.name.as_deref().unwrap_or_default();
            let images: Api<crd_types::BackingImage> = self.api();
            match images.create(&params, image).await {
                Ok(_) => tracing::info!(image = name, "CSI: BackingImage created for backingImage"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => {
                    return Err(api_error(
                        &format!(
                            "creating BackingImage {name} of StorageClass parameter backingImage"
                        ),
                        error,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Waits up to `ready_wait` for `name` to be Ready.
    async fn wait_ready(&self, name: &str) -> Result<Volume, Status> {
        let deadline = tokio::time::Instant::now() + self.ready_wait;
        loop {
            let volume = self
                .volumes()
                .get_opt(name)
                .await
                .map_err(|e| api_error("reading the new Volume", e))?
                .ok_or_else(|| {
                    Status::aborted(format!(
                        "volume {name} was deleted while it was being created"
                    ))
                })?;
            let status = volume.status.as_ref();
            match status.and_then(|s| s.state) {
                Some(VolumeState::Ready) => return Ok(volume),
                Some(VolumeState::Faulted) => {
                    let why = status
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.status == "False"))
                        .map_or_else(String::new, |c| format!(": {}", c.message));
                    return Err(Status::internal(format!(
                        "volume {name} could not be created{why} (kubectl describe volumes.bulwark.io {name} -n {})",
                        self.namespace
                    )));
                }
                state => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Status::aborted(format!(
                            "volume {name} is not ready yet (state {}): still being placed or created; the request is retried",
                            state.map_or("Pending".to_owned(), |s| format!("{s:?}"))
                        )));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tonic::async_trait]
impl proto::controller_server::Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<proto::CreateVolumeRequest>,
    ) -> Result<Response<proto::CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        let name = request.name.as_str();
        if name.is_empty() {
            return Err(invalid("name is required"));
        }
        let csi_name = name;
        let name = volume_name(csi_name);
        let name = name.as_str();
        if request.volume_capabilities.is_empty() {
            return Err(invalid(
                "volume_capabilities is required: ask for at least one",
            ));
        }
        for (index, capability) in request.volume_capabilities.iter().enumerate() {
            check_capability(index, capability).map_err(invalid)?;
        }
        let size = volume_size(request.capacity_range.as_ref()).map_err(Status::out_of_range)?;
        let source = data_source(request.volume_content_source.as_ref())?;
        let parameters = parameters::parse(
            request
                .parameters
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| invalid(e.to_string()))?;
        if source.is_some() && parameters.from_backup.is_some() {
            return Err(invalid(
                "volume_content_source and the StorageClass parameter `fromBackup` are exclusive: restore from one or the other",
            ));
        }
        let mut wanted = build_volume(name, size, source, &parameters);
        remember_csi_name(&mut wanted.metadata, csi_name);
        // The API server would refuse it only after the RecurringJobs and the backing image
        // were made: refuse it first, naming what the StorageClass set.
        crd_types::Validate::validate(&wanted).map_err(|errors| {
            invalid(format!(
                "the StorageClass parameters make an invalid volume ({errors}); StorageClass parameter `fromBackup` is the Volume's spec.fromBackup, `nodeID` its spec.nodeID"
            ))
        })?;

        let volumes = self.volumes();
        match volumes
            .get_opt(name)
            .await
            .map_err(|e| api_error("reading the Volume", e))?
        {
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                return Err(Status::aborted(format!(
                    "volume {name} of an earlier request with this name is still being deleted; the request is retried"
                )));
            }
            Some(existing) if same_request(&existing, &wanted, request.capacity_range.as_ref()) => {
            }
            Some(existing) => {
                return Err(Status::already_exists(format!(
                    "volume {name} exists with size {} and another source: a request with the same name must ask for the same volume",
                    existing.spec.size
                )));
            }
            None => {
                if let Some(needed) = self.check_source(&request).await? {
                    let given = request
                        .capacity_range
                        .as_ref()
                        .map_or(0, |r| r.required_bytes);
                    if given > 0 && given < needed {
                        return Err(Status::out_of_range(format!(
                            "capacity_range.required_bytes {given} is smaller than the {needed} bytes the content source needs: ask for at least that much"
                        )));
                    }
                    let limit = request.capacity_range.as_ref().map_or(0, |r| r.limit_bytes);
                    if limit > 0 && limit < needed {
                        return Err(Status::out_of_range(format!(
                            "capacity_range.limit_bytes {limit} is smaller than the {needed} bytes the content source needs"
                        )));
                    }
                    // No size asked for: the source's; else never smaller than it.
                    if needed > size || (given == 0 && limit == 0) {
                        wanted.spec.size = needed.to_string();
                    }
                }
                // The most preferred node whose agent runs (never one outside the topology).
                let candidates = topology_nodes(request.accessibility_requirements.as_ref());
                if wanted.spec.node_id.is_none() && !candidates.is_empty() {
                    let live = crate::presence::live_nodes(&self.client, &self.namespace)
                        .await
                        .map_err(|e| api_error("listing the nodes whose agent runs", e))?;
                    let Some(node) = candidates.iter().find(|n| live.contains(n)) else {
                        return Err(Status::resource_exhausted(format!(
                            "no node of the requested topology ({}) runs a bulwark agent (live agents: {}): start the agent there, or let the pod go to a node that runs one",
                            candidates.join(", "),
                            if live.is_empty() {
                                "none".to_owned()
                            } else {
                                live.join(", ")
                            }
                        )));
                    };
                    wanted.spec.node_id = Some(node.clone());
                }
                let prerequisites = self.prerequisites(&parameters).await?;
                self.create_prerequisites(prerequisites).await?;
                match volumes.create(&PostParams::default(), &wanted).await {
                    Ok(_) => tracing::info!(volume = name, size, "CSI: Volume created"),
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(api_error("creating the Volume", error)),
                }
            }
        }
        let ready = self.wait_ready(name).await?;
        let size = size_of(&ready).unwrap_or(size);
        Ok(Response::new(proto::CreateVolumeResponse {
            volume: Some(csi_volume(&ready, size, request.volume_content_source)),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<proto::DeleteVolumeRequest>,
    ) -> Result<Response<proto::DeleteVolumeResponse>, Status> {
        let id = request.into_inner().volume_id;
        if id.is_empty() {
            return Err(invalid("volume_id is required"));
        }
        if !is_volume_name(&id) {
            // Never one of ours: nothing to delete.
            return Ok(Response::new(proto::DeleteVolumeResponse {}));
        }
        match self.volumes().delete(&id, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(volume = id, "CSI: Volume deletion requested"),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(Response::new(proto::DeleteVolumeResponse {}));
            }
            Err(error) => return Err(api_error("deleting the Volume", error)),
        }
        // OK means gone: a CreateVolume of the same name right after must make a new volume.
        let deadline = tokio::time::Instant::now() + self.ready_wait;
        loop {
            let gone = self
                .volumes()
                .get_opt(&id)
                .await
                .map_err(|e| api_error("reading the Volume", e))?
                .is_none();
            if gone {
                return Ok(Response::new(proto::DeleteVolumeResponse {}));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::aborted(format!(
                    "volume {id} is still being deleted (its agent removes the data first); the request is retried"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<proto::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<proto::ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(invalid("volume_id is required"));
        }
        if request.volume_capabilities.is_empty() {
            return Err(invalid("volume_capabilities is required"));
        }
        let exists = is_volume_name(&request.volume_id)
            && self
                .volumes()
                .get_opt(&request.volume_id)
                .await
                .map_err(|e| api_error("reading the Volume", e))?
                .is_some();
        if !exists {
            return Err(Status::not_found(format!(
                "volume {} does not exist",
                request.volume_id
            )));
        }
        let refused: Vec<String> = request
            .volume_capabilities
            .iter()
            .enumerate()
            .filter_map(|(i, c)| check_capability(i, c).err())
            .collect();
        Ok(Response::new(if refused.is_empty() {
            proto::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(proto::validate_volume_capabilities_response::Confirmed {
                    volume_context: request.volume_context,
                    volume_capabilities: request.volume_capabilities,
                    parameters: request.parameters,
                    mutable_parameters: request.mutable_parameters,
                }),
                message: String::new(),
            }
        } else {
            proto::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: refused.join("; "),
            }
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<proto::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<proto::ControllerGetCapabilitiesResponse>, Status> {
        use proto::controller_service_capability::{Rpc, Type, rpc};
        let capabilities = [
            rpc::Type::CreateDeleteVolume,
            rpc::Type::CloneVolume,
            rpc::Type::CreateDeleteSnapshot,
            rpc::Type::ListSnapshots,
            rpc::Type::ListVolumes,
            rpc::Type::ExpandVolume,
            rpc::Type::GetCapacity,
            // ReadWriteOncePod reaches the driver as SINGLE_NODE_SINGLE_WRITER.
            rpc::Type::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|kind| proto::ControllerServiceCapability {
            r#type: Some(Type::Rpc(Rpc {
                r#type: kind as i32,
            })),
        })
        .collect();
        Ok(Response::new(proto::ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<proto::ControllerPublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerPublishVolumeResponse>, Status> {
        Err(not_offered("ControllerPublishVolume"))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<proto::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<proto::ControllerUnpublishVolumeResponse>, Status> {
        Err(not_offered("ControllerUnpublishVolume"))
    }

    async fn list_volumes(
        &self,
        request: Request<proto::ListVolumesRequest>,
    ) -> Result<Response<proto::ListVolumesResponse>, Status> {
        let request = request.into_inner();
        let start = snapshots::starting_index(&request.starting_token)?;
        let mut volumes = self
            .volumes()
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| api_error("listing Volumes", e))?
            .items;
        volumes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let (volumes, next_token) = snapshots::page(volumes, start, request.max_entries)?;
        let entries = volumes
            .iter()
            .map(|volume| {
                let size = size_of(volume).unwrap_or(0);
                proto::list_volumes_response::Entry {
                    volume: Some(csi_volume(volume, size, None)),
                    status: None,
                }
            })
            .collect();
        Ok(Response::new(proto::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        request: Request<proto::GetCapacityRequest>,
    ) -> Result<Response<proto::GetCapacityResponse>, Status> {
        let request = request.into_inner();
        for (index, capability) in request.volume_capabilities.iter().enumerate() {
            check_capability(index, capability).map_err(invalid)?;
        }
        let live = crate::presence::live_capacity(&self.client, &self.namespace)
            .await
            .map_err(|e| api_error("listing the nodes whose agent runs", e))?;
        Ok(Response::new(proto::GetCapacityResponse {
            available_capacity: node_capacity(&live, request.accessible_topology.as_ref()),
            maximum_volume_size: None,
            minimum_volume_size: None,
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<proto::CreateSnapshotRequest>,
    ) -> Result<Response<proto::CreateSnapshotResponse>, Status> {
        let snapshot = self.create_snapshot_object(request.into_inner()).await?;
        Ok(Response::new(proto::CreateSnapshotResponse {
            snapshot: Some(snapshot),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<proto::DeleteSnapshotRequest>,
    ) -> Result<Response<proto::DeleteSnapshotResponse>, Status> {
        self.delete_snapshot_object(&request.into_inner().snapshot_id)
            .await?;
        Ok(Response::new(proto::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        request: Request<proto::ListSnapshotsRequest>,
    ) -> Result<Response<proto::ListSnapshotsResponse>, Status> {
        Ok(Response::new(
            self.list_snapshot_objects(request.into_inner()).await?,
        ))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<proto::ControllerExpandVolumeRequest>,
    ) -> Result<Response<proto::ControllerExpandVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = request.volume_id.as_str();
        if id.is_empty() {
            return Err(invalid("volume_id is required"));
        }
        let Some(range) = request.capacity_range.as_ref() else {
            return Err(invalid(
                "capacity_range is required: say how large the volume becomes",
            ));
        };
        let size = volume_size(Some(range)).map_err(Status::out_of_range)?;
        let volumes = self.volumes();
        let volume = match is_volume_name(id) {
            true => volumes
                .get_opt(id)
                .await
                .map_err(|e| api_error("reading the Volume", e))?,
            false => None,
        }
        .ok_or_else(|| Status::not_found(format!("volume {id} does not exist")))?;
        let current = size_of(&volume).unwrap_or(0);
        // The node grows the loop device (and the file system on it) once the agent has grown
        // the data: kubelet calls NodeExpandVolume where the volume is staged.
        let answer = |capacity_bytes| {
            Ok(Response::new(proto::ControllerExpandVolumeResponse {
                capacity_bytes,
                node_expansion_required: true,
            }))
        };
        if current >= size {
            return answer(current);
        }
        // Guarded by the resourceVersion read: two expansions in flight cannot end smaller
        // (the loser gets 409, answered ABORTED and retried).
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": volume.metadata.resource_version},
            "spec": {"size": size.to_string()},
        });
        volumes
            .patch(
                id,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map_err(|e| api_error(&format!("growing volume {id} to {size} bytes"), e))?;
        tracing::info!(volume = id, from = current, to = size, "CSI: Volume grown");
        answer(size)
    }

    async fn controller_get_volume(
        &self,
        _: Request<proto::ControllerGetVolumeRequest>,
    ) -> Result<Response<proto::ControllerGetVolumeResponse>, Status> {
        Err(not_offered("ControllerGetVolume"))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<proto::ControllerModifyVolumeRequest>,
    ) -> Result<Response<proto::ControllerModifyVolumeResponse>, Status> {
        Err(not_offered("ControllerModifyVolume"))
    }
}

/// RPCs whose capability the driver does not announce (the spec's answer is UNIMPLEMENTED).
fn not_offered(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not offered by this driver (see ControllerGetCapabilities)"
    ))
}
