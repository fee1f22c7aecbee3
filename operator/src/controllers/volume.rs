//! Volume placement (controller side): validate the spec, hold the data finalizer, default the
//! backup settings from configuration, and place the volume on a node that runs an agent by
//! recording it in `status.ownerID`. Everything after placement is the owner agent's work,
//! except the DR fields of a standby volume, restated when its restore catches up
//! ([`super::dr::settle`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crd_types::volume::VolumeState;
use crd_types::{Validate, Volume};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::metrics::ErrorCategory;
use crate::{finalizers, presence, status};

const CONTROLLER: &str = "volume";
/// How often an unplaced volume looks for a node again.
const RETRY_PLACEMENT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
}

/// Why a volume cannot be placed now. The message is the `Scheduled` condition's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "no node runs a bulwark agent (no fresh agent Lease): check the bulwark-agent DaemonSet"
    )]
    NoAgents,
    #[error(
        "spec.nodeID {node:?} runs no bulwark agent (live agents: {live}): fix spec.nodeID or start the agent there"
    )]
    NodeUnavailable { node: String, live: String },
    #[error(
        "spec.dataSource names volume {source_volume:?}, which does not exist or is not placed yet; the clone is placed on its node once it is"
    )]
    SourceNotPlaced { source_volume: String },
    #[error(
        "spec.dataSource volume {source_volume:?} lives on node {node:?}, whose agent is not running; a clone is made on its source's node"
    )]
    SourceNodeUnavailable { source_volume: String, node: String },
    #[error("spec.backingImage {image:?} does not exist: create the BackingImage or fix the name")]
    ImageMissing { image: String },
    #[error(
        "spec.backingImage {image:?} was exported from a volume and exists only on node {node:?}, whose agent is not running"
    )]
    ImageNodeUnavailable { image: String, node: String },
    #[error(
        "spec.backingImage {image:?} is exported from a volume and not placed yet; the volume goes to its node once it is"
    )]
    ImageNotPlaced { image: String },
}

/// For a `bi://` handle in `spec.dataSource`: the image's name, after creating it from the
/// handle's parameters when it does not exist yet (the seeds' on-demand flow). A handle that
/// does not match an existing image is left to the agent, whose status says why.
async fn on_demand_image(
    volume: &Volume,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<String>, Error> {
    let Some(Ok(handle)) = volume.spec.data_source.as_deref().map(handle_codec::decode) else {
        return Ok(None);
    };
    let handle_codec::SnapshotHandle::BackingImage(image) = &handle else {
        return Ok(None);
    };
    let objects = super::snapshot_content::CachedObjects {
        caches: &ctx.caches,
        namespace,
    };
    if let Ok(plan) = super::snapshot_content::volume_source(&objects, &handle, namespace)
        && let Some(create) = plan.create_backing_image
    {
        let api: Api<crd_types::BackingImage> = Api::namespaced(ctx.client.clone(), namespace);
        match api.create(&kube::api::PostParams::default(), &create).await {
            Ok(_) => {
                ctx.events
                    .normal(
                        volume,
                        "BackingImageCreated",
                        format!(
                            "created backing image {:?} from spec.dataSource",
                            image.name.as_str()
                        ),
                    )
                    .await
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Some(image.name.as_str().to_owned()))
}

/// Where a volume's backing image forces it: None (any node; download images are copied where
/// needed), or the node holding an exported image (they are never copied).
pub fn image_pin(
    image_name: &str,
    image: Option<&crd_types::BackingImage>,
    live: &[String],
) -> Result<Option<String>, PlacementError> {
    let Some(image) = image else {
        return Err(PlacementError::ImageMissing {
            image: image_name.to_owned(),
        });
    };
    if image.spec.source_type == crd_types::backing_image::BackingImageSourceType::Download {
        // Copied to whichever node needs them.
        return Ok(None);
    }
    match super::backing_image::required_node(image) {
        None => Err(PlacementError::ImageNotPlaced {
            image: image_name.to_owned(),
        }),
        Some(node) if live.iter().any(|n| n == node) => Ok(Some(node.to_owned())),
        Some(node) => Err(PlacementError::ImageNodeUnavailable {
            image: image_name.to_owned(),
            node: node.to_owned(),
        }),
    }
}

/// The volume a `dataSource` (`vol://<v>` or `snap://<v>/<s>`) copies from.
pub fn source_volume(data_source: &str) -> Option<&str> {
    if let Some(rest) = data_source.strip_prefix("vol://") {
        return Some(rest);
    }
    let rest = data_source.strip_prefix("snap://")?;
    rest.split_once('/').map(|(volume, _)| volume)
}

/// Pick the node for a volume: its source's node for clones (the data is there), the node the
/// spec names, or the live node holding the fewest volumes (ties by name).
pub fn place(
    requested: Option<&str>,
    source: Option<(&str, Option<&str>)>,
    live: &[String],
    volumes_per_node: &BTreeMap<String, usize>,
) -> Result<String, PlacementError> {
    let is_live = |node: &str| live.iter().any(|n| n == node);
    if let Some((source_volume, source_node)) = source {
        let Some(node) = source_node else {
            return Err(PlacementError::SourceNotPlaced {
                source_volume: source_volume.to_owned(),
            });
        };
        if !is_live(node) {
            return Err(PlacementError::SourceNodeUnavailable {
                source_volume: source_volume.to_owned(),
                node: node.to_owned(),
            });
        }
        return Ok(node.to_owned());
    }
    if let Some(node) = requested.filter(|n| !n.is_empty()) {
        if is_live(node) {
            return Ok(node.to_owned());
        }
        return Err(PlacementError::NodeUnavailable {
            node: node.to_owned(),
            live: if live.is_empty() {
                "none".to_owned()
            } else {
                live.join(", ")
            },
        });
    }
    live.iter()
        .min_by_key(|n| (volumes_per_node.get(*n).copied().unwrap_or(0), (*n).clone()))
        .cloned()
        .ok_or(PlacementError::NoAgents)
}

/// The spec fields to default from configuration (a merge patch), or None when all are set.
pub fn defaults_patch(
    volume: &Volume,
    config: &config::ControllerConfig,
) -> Option<serde_json::Value> {
    let mut spec = serde_json::Map::new();
    if volume.spec.backup_compression_method.is_none() {
        spec.insert(
            "backupCompressionMethod".into(),
            config.default_compression.as_str().into(),
        );
    }
    if volume.spec.backup_block_size.is_none() {
        let size = if config.default_block_size == 16 << 20 {
            "16Mi"
        } else {
            "2Mi"
        };
        spec.insert("backupBlockSize".into(), size.into());
    }
    (!spec.is_empty()).then(|| serde_json::json!({ "spec": spec }))
}

pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), &ctx.config.common.namespace);
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile_timed, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

async fn reconcile_timed(volume: Arc<Volume>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .timed(CONTROLLER, reconcile(&volume, &ctx), |_| {
            ErrorCategory::Kubernetes
        })
        .await
}

fn error_policy(volume: Arc<Volume>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(volume = %volume.name_any(), %error, "volume reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// One pass over one volume: deletion, validation, finalizer, defaults, placement.
pub async fn reconcile(volume: &Volume, ctx: &Context) -> Result<Action, Error> {
    let namespace = &ctx.config.common.namespace;
    let api: Api<Volume> = Api::namespaced(ctx.client.clone(), namespace);
    let name = volume.name_any();
    let owner = volume.status.as_ref().and_then(|s| s.owner_id.clone());

    if volume.metadata.deletion_timestamp.is_some() {
        // Placed volumes have data on their node: the owner agent removes it, then the finalizer.
        if owner.is_none() {
            finalizers::remove(&api, volume, finalizers::VOLUME).await?;
            ctx.events
                .normal(
                    volume,
                    "Deleted",
                    "the volume was never placed: no data to remove",
                )
                .await;
        }
        return Ok(Action::await_change());
    }

    let conditions = volume.status.as_ref().and_then(|s| s.conditions.as_deref());
    let generation = volume.metadata.generation;
    if let Err(errors) = volume.validate() {
        let message = errors.to_string();
        if status::find(conditions, "Scheduled").map(|c| c.message.as_str()) != Some(&message) {
            let scheduled = status::condition(
                conditions,
                "Scheduled",
                false,
                "Invalid",
                &message,
                generation,
            );
            status::apply(
                &api,
                &name,
                status::managers::VOLUME,
                serde_json::json!({ "conditions": [scheduled] }),
            )
            .await?;
            ctx.events.warning(volume, "Invalid", message).await;
        }
        return Ok(Action::await_change());
    }

    finalizers::add(&api, volume, finalizers::VOLUME).await?;
    if let Some(patch) = defaults_patch(volume, &ctx.config) {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if owner.is_some() {
        // A standby volume's restore may just have caught up with the newest backup: its
        // `restoreRequired` and `drLagSeconds` say so now, not at the next DR poll.
        super::dr::settle(ctx, volume).await?;
        return Ok(Action::await_change());
    }

    let live = presence::live_nodes(&ctx.client, namespace).await?;
    let mut volumes_per_node = BTreeMap::<String, usize>::new();
    let mut source_owner = None;
    let source = volume.spec.data_source.as_deref().and_then(source_volume);
    // The caches hold only the operator's namespace.
    for other in ctx.caches.volumes.state() {
        let other_owner = other.status.as_ref().and_then(|s| s.owner_id.clone());
        if Some(other.name_any().as_str()) == source {
            source_owner = other_owner.clone();
        }
        if let Some(node) = other_owner {
            *volumes_per_node.entry(node).or_default() += 1;
        }
    }
    let image_name = match volume.spec.backing_image.clone() {
        Some(name) => Some(name),
        None => on_demand_image(volume, ctx, namespace).await?,
    };
    let pinned = match image_name.as_deref() {
        None => Ok(None),
        Some(image_name) => {
            let image = ctx
                .caches
                .backing_images
                .get(&ObjectRef::new(image_name).within(namespace));
            image_pin(image_name, image.as_deref(), &live)
        }
    };
    let placed = pinned.and_then(|pin| {
        place(
            pin.as_deref().or(volume.spec.node_id.as_deref()),
            source.map(|s| (s, source_owner.as_deref())),
            &live,
            &volumes_per_node,
        )
    });
    match placed {
        Ok(node) => {
            let scheduled = status::condition(
                conditions,
                "Scheduled",
                true,
                "Placed",
                format!("placed on node {node}"),
                generation,
            );
            status::apply(
                &api,
                &name,
                status::managers::VOLUME,
                serde_json::json!({
                    "ownerID": node,
                    "state": VolumeState::Pending,
                    "conditions": [scheduled],
                }),
            )
            .await?;
            ctx.events
                .normal(volume, "Scheduled", format!("placed on node {node}"))
                .await;
            Ok(Action::await_change())
        }
        Err(why) => {
            let message = why.to_string();
            if status::find(conditions, "Scheduled").map(|c| c.message.as_str()) != Some(&message) {
                let scheduled = status::condition(
                    conditions,
                    "Scheduled",
                    false,
                    "Unschedulable",
                    &message,
                    generation,
                );
                status::apply(
                    &api,
                    &name,
                    status::managers::VOLUME,
                    serde_json::json!({ "state": VolumeState::Pending, "conditions": [scheduled] }),
                )
                .await?;
                ctx.events.warning(volume, "Unschedulable", message).await;
            }
            Ok(Action::requeue(RETRY_PLACEMENT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{self, json_response};
    use http::{Method, StatusCode};

    fn live(nodes: &[&str]) -> Vec<String> {
        nodes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn places_on_the_least_loaded_live_node() {
        let load = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 1)]);
        assert_eq!(
            place(None, None, &live(&["a", "b", "c"]), &load),
            Ok("c".into())
        );
        assert_eq!(place(None, None, &live(&["a", "b"]), &load), Ok("b".into()));
        assert_eq!(place(None, None, &[], &load), Err(PlacementError::NoAgents));
    }

    #[test]
    fn honours_the_requested_node_only_when_it_runs_an_agent() {
        let load = BTreeMap::new();
        assert_eq!(
            place(Some("b"), None, &live(&["a", "b"]), &load),
            Ok("b".into())
        );
        let refused = place(Some("x"), None, &live(&["a"]), &load).expect_err("x has no agent");
        assert!(
            refused.to_string().contains("spec.nodeID \"x\""),
            "{refused}"
        );
        assert!(refused.to_string().contains("live agents: a"), "{refused}");
    }

    #[test]
    fn clones_go_to_their_source_node() {
        let load = BTreeMap::new();
        let nodes = live(&["a", "b"]);
        assert_eq!(
            place(Some("a"), Some(("src", Some("b"))), &nodes, &load),
            Ok("b".into())
        );
        assert_eq!(
            place(None, Some(("src", None)), &nodes, &load),
            Err(PlacementError::SourceNotPlaced {
                source_volume: "src".into()
            })
        );
        assert!(matches!(
            place(None, Some(("src", Some("gone"))), &nodes, &load),
            Err(PlacementError::SourceNodeUnavailable { .. })
        ));
    }

    #[test]
    fn exported_backing_images_pin_their_volumes() {
        let image = |source: &str, owner: Option<&str>| -> crd_types::BackingImage {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "bulwark.io/v1beta1", "kind": "BackingImage",
                "metadata": {"name": "img"},
                "spec": {"sourceType": source, "sourceParameters": {}},
                "status": {"ownerID": owner}
            }))
            .expect("a BackingImage")
        };
        let nodes = live(&["a", "b"]);
        assert_eq!(
            image_pin("img", Some(&image("download", Some("a"))), &nodes),
            Ok(None)
        );
        assert_eq!(
            image_pin("img", Some(&image("export-from-volume", Some("b"))), &nodes),
            Ok(Some("b".into()))
        );
        assert!(matches!(
            image_pin("img", Some(&image("export-from-volume", None)), &nodes),
            Err(PlacementError::ImageNotPlaced { .. })
        ));
        assert!(matches!(
            image_pin(
                "img",
                Some(&image("export-from-volume", Some("gone"))),
                &nodes
            ),
            Err(PlacementError::ImageNodeUnavailable { .. })
        ));
        let missing = image_pin("img", None, &nodes).expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains("spec.backingImage \"img\" does not exist")
        );
    }

    #[test]
    fn data_sources_name_their_volume() {
        assert_eq!(source_volume("vol://v1"), Some("v1"));
        assert_eq!(source_volume("snap://v1/s1"), Some("v1"));
        assert_eq!(source_volume("bak://v1/b"), None);
    }

    const VOLUMES: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/volumes";
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/bulwark-system/leases";

    fn volume(json: serde_json::Value) -> Volume {
        let mut base = serde_json::json!({
            "apiVersion": "bulwark.io/v1beta1", "kind": "Volume",
            "metadata": {"name": "vol-1", "namespace": "bulwark-system", "generation": 1},
            "spec": {"size": "1Gi"}
        });
        json_merge(&mut base, json);
        serde_json::from_value(base).expect("a valid Volume")
    }

    fn json_merge(base: &mut serde_json::Value, patch: serde_json::Value) {
        match (base, patch) {
            (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    json_merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, p) => *b = p,
        }
    }

    fn lease(node: &str) -> serde_json::Value {
        let mut lease = serde_json::to_value(presence::build_lease(node, jiff::Timestamp::now()))
            .expect("json");
        lease["metadata"]["namespace"] = "bulwark-system".into();
        lease
    }

    #[tokio::test]
    async fn places_a_new_volume_and_defaults_its_backup_settings() {
        let (ctx, mut server, events) = testing::context();
        let vol = volume(serde_json::json!({}));
        let script = tokio::spawn(async move {
            let finalizer = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1"))
                .await;
            let ops = finalizer.json();
            assert_eq!(ops[1]["op"], "add", "{ops}");
            assert_eq!(
                ops[1]["value"],
                serde_json::json!(["bulwark.io/volume-data"])
            );
            finalizer.respond(json_response(
                StatusCode::OK,
                serde_json::to_value(volume(serde_json::json!({}))).expect("json"),
            ));
            let defaults = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1"))
                .await;
            assert_eq!(
                defaults.json(),
                serde_json::json!({"spec": {"backupCompressionMethod": "lz4", "backupBlockSize": "2Mi"}})
            );
            defaults.respond(json_response(
                StatusCode::OK,
                serde_json::to_value(volume(serde_json::json!({}))).expect("json"),
            ));
            server
                .expect(Method::GET, LEASES)
                .await
                .respond(json_response(
                    StatusCode::OK,
                    serde_json::json!({"apiVersion": "v1", "kind": "LeaseList", "metadata": {}, "items": [lease("node-b"), lease("node-a")]}),
                ));
            let placed = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1/status"))
                .await;
            assert!(
                placed.query.contains("fieldManager=bulwark-volume"),
                "{}",
                placed.query
            );
            assert!(placed.query.contains("force=true"), "{}", placed.query);
            let body = placed.json();
            assert_eq!(body["status"]["ownerID"], "node-a");
            assert_eq!(body["status"]["state"], "Pending");
            assert_eq!(body["status"]["conditions"][0]["type"], "Scheduled");
            assert_eq!(body["status"]["conditions"][0]["status"], "True");
            placed.respond(json_response(
                StatusCode::OK,
                serde_json::to_value(volume(serde_json::json!({}))).expect("json"),
            ));
        });
        let action = reconcile(&vol, &ctx).await.expect("reconciled");
        script.await.expect("server script");
        assert_eq!(action, Action::await_change());
        let events = events.lock().expect("events").clone();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].reason, "Scheduled");
        assert!(events[0].note.contains("node-a"));
    }

    #[tokio::test]
    async fn no_agent_means_a_clear_condition_and_a_retry() {
        let (ctx, mut server, events) = testing::context();
        let vol = volume(serde_json::json!({
            "metadata": {"finalizers": ["bulwark.io/volume-data"]},
            "spec": {"backupCompressionMethod": "gzip", "backupBlockSize": "16Mi"}
        }));
        let script = tokio::spawn(async move {
            server.expect(Method::GET, LEASES).await.respond(json_response(
                StatusCode::OK,
                serde_json::json!({"apiVersion": "v1", "kind": "LeaseList", "metadata": {}, "items": []}),
            ));
            let status = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1/status"))
                .await;
            let body = status.json();
            assert_eq!(body["status"]["state"], "Pending");
            let condition = &body["status"]["conditions"][0];
            assert_eq!(condition["status"], "False");
            assert_eq!(condition["reason"], "Unschedulable");
            assert!(
                condition["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("bulwark-agent DaemonSet")
            );
            status.respond(json_response(
                StatusCode::OK,
                serde_json::to_value(volume(serde_json::json!({}))).expect("json"),
            ));
        });
        let action = reconcile(&vol, &ctx).await.expect("reconciled");
        script.await.expect("server script");
        assert_eq!(action, Action::requeue(RETRY_PLACEMENT));
        assert_eq!(events.lock().expect("events")[0].reason, "Unschedulable");
    }

    #[tokio::test]
    async fn a_backing_image_handle_creates_its_image_on_demand() {
        let (ctx, mut server, events) = testing::context();
        let handle = "bi://backing?backingImage=golden&backingImageDataSourceType=export-from-volume&export-type=qcow2&volume-name=src";
        let vol = volume(serde_json::json!({
            "metadata": {"finalizers": ["bulwark.io/volume-data"]},
            "spec": {"dataSource": handle, "backupCompressionMethod": "lz4", "backupBlockSize": "2Mi"}
        }));
        let answer = serde_json::to_value(&vol).expect("json");
        let script = tokio::spawn(async move {
            server.expect(Method::GET, LEASES).await.respond(json_response(
                StatusCode::OK,
                serde_json::json!({"apiVersion": "v1", "kind": "LeaseList", "metadata": {}, "items": [lease("node-a")]}),
            ));
            let create = server
                .expect(
                    Method::POST,
                    "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/backingimages",
                )
                .await;
            let image = create.json();
            assert_eq!(image["metadata"]["name"], "golden");
            assert_eq!(image["spec"]["sourceType"], "export-from-volume");
            assert_eq!(image["spec"]["sourceParameters"]["volume-name"], "src");
            assert_eq!(image["spec"]["sourceParameters"]["export-type"], "qcow2");
            create.respond(json_response(StatusCode::CREATED, image));
            // The new image is not placed yet: the volume waits for the image's node.
            let status = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1/status"))
                .await;
            let body = status.json();
            assert_eq!(body["status"]["conditions"][0]["reason"], "Unschedulable");
            status.respond(json_response(StatusCode::OK, answer));
        });
        let action = reconcile(&vol, &ctx).await.expect("reconciled");
        script.await.expect("server script");
        assert_eq!(action, Action::requeue(RETRY_PLACEMENT));
        let reasons: Vec<String> = events
            .lock()
            .expect("events")
            .iter()
            .map(|e| e.reason.clone())
            .collect();
        assert_eq!(reasons, ["BackingImageCreated", "Unschedulable"]);
    }

    #[tokio::test]
    async fn an_invalid_spec_is_reported_not_placed() {
        let (ctx, mut server, events) = testing::context();
        let vol = volume(serde_json::json!({"spec": {"size": "ten gigs"}}));
        let script = tokio::spawn(async move {
            let status = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1/status"))
                .await;
            let body = status.json();
            let condition = &body["status"]["conditions"][0];
            assert_eq!(condition["reason"], "Invalid");
            assert!(
                condition["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("spec.size"),
                "{condition}"
            );
            assert!(body["status"].get("ownerID").is_none());
            status.respond(json_response(
                StatusCode::OK,
                serde_json::to_value(volume(serde_json::json!({}))).expect("json"),
            ));
        });
        reconcile(&vol, &ctx).await.expect("reconciled");
        script.await.expect("server script");
        assert!(events.lock().expect("events")[0].warning);
    }

    #[tokio::test]
    async fn deleting_an_unplaced_volume_drops_the_finalizer() {
        let (ctx, mut server, _events) = testing::context();
        let vol = volume(serde_json::json!({"metadata": {
            "finalizers": ["bulwark.io/volume-data"],
            "deletionTimestamp": "2026-11-27T10:00:00Z"
        }}));
        let script = tokio::spawn(async move {
            let patch = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1"))
                .await;
            let ops = patch.json();
            assert_eq!(ops[0]["op"], "test");
            assert_eq!(
                ops[1],
                serde_json::json!({"op": "replace", "path": "/metadata/finalizers", "value": []})
            );
            patch.respond(json_response(
                StatusCode::OK,
                serde_json::to_value(volume(serde_json::json!({}))).expect("json"),
            ));
        });
        reconcile(&vol, &ctx).await.expect("reconciled");
        script.await.expect("server script");
    }

    /// The agent records the newest backup as restored: the volume controller, which sees that
    /// change, clears `restoreRequired` and the lag at once (no DR poll in between). A volume
    /// still behind, or already settled, costs no request.
    #[tokio::test]
    async fn a_standby_whose_restore_caught_up_says_so_at_once() {
        let (ctx, mut server, _events) = testing::context();
        let following = serde_json::json!({
            "type": "Standby", "status": "True", "reason": "Following",
            "message": "following backup volume; newest backup b2",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
        });
        let standby = |restored: &str, required: bool, lag: i64| {
            volume(serde_json::json!({
                "metadata": {"finalizers": ["bulwark.io/volume-data"], "resourceVersion": "7"},
                "spec": {"standby": true, "backupCompressionMethod": "lz4", "backupBlockSize": "2Mi",
                         "fromBackup": "s3://bucket@us-east-1/x/?backup=b1&volume=src"},
                "status": {"ownerID": "node-a", "state": "Ready", "isStandby": true,
                           "lastBackup": "b2", "lastBackupAt": "2026-01-01T00:00:00Z",
                           "lastRestoredBackup": restored, "restoreRequired": required,
                           "drLagSeconds": lag, "conditions": [following]}
            }))
        };
        let restored = standby("b2", true, 87);
        let answer = serde_json::to_value(&restored).expect("json");
        let script = tokio::spawn(async move {
            let patch = server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1/status"))
                .await;
            assert!(
                patch.query.contains("fieldManager=bulwark-dr"),
                "{}",
                patch.query
            );
            let body = patch.json();
            patch.respond(json_response(StatusCode::OK, answer));
            body
        });
        assert_eq!(
            reconcile(&restored, &ctx).await.expect("reconciled"),
            Action::await_change()
        );
        assert_eq!(ctx.metrics.dr_lag.with_label_values(&["vol-1"]).get(), 0);
        // With the client gone, a missing request fails the script instead of waiting for it.
        drop(ctx);
        let body = script.await.expect("the DR fields were restated");
        // Only onto the version read: a newer backup published meanwhile is never undone.
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(
            body["status"],
            serde_json::json!({
                "lastBackup": "b2", "lastBackupAt": "2026-01-01T00:00:00Z",
                "restoreRequired": false, "drLagSeconds": 0, "conditions": [following]
            })
        );
        // Settled, or behind with a lag the DR poll keeps current: nothing to write (the
        // server is gone: any request would fail the reconcile).
        let (ctx, server, _events) = testing::context();
        drop(server);
        for settled in [standby("b2", false, 0), standby("b1", true, 5)] {
            reconcile(&settled, &ctx).await.expect("no request");
        }
        // The volume changed since it was read: nothing applied, no error (that change
        // reconciles it again).
        let (ctx, mut server, _events) = testing::context();
        let script = tokio::spawn(async move {
            server
                .expect(Method::PATCH, &format!("{VOLUMES}/vol-1/status"))
                .await
                .respond(testing::status(409, "Conflict"));
        });
        reconcile(&restored, &ctx)
            .await
            .expect("a conflict is no error");
        script.await.expect("one attempt");
        assert!(!ctx.metrics.render().contains("bulwark_dr_lag_seconds"));
    }

    #[tokio::test]
    async fn a_placed_volume_being_deleted_waits_for_its_agent() {
        let (ctx, server, _events) = testing::context();
        let vol = volume(serde_json::json!({
            "metadata": {"finalizers": ["bulwark.io/volume-data"], "deletionTimestamp": "2026-11-27T10:00:00Z"},
            "status": {"ownerID": "node-a"}
        }));
        // No request at all: with the server gone, any request would fail the reconcile.
        drop(server);
        assert_eq!(
            reconcile(&vol, &ctx).await.expect("reconciled"),
            Action::await_change()
        );
    }
}
