//! The CSI Identity service: who the driver is, what it offers, and whether it is ready.

use tonic::{Request, Response, Status};

use super::proto::{self, plugin_capability};
use crate::readiness::Readiness;

/// Identity of `driver.bulwark.io` (or the configured driver name).
#[derive(Clone)]
pub struct IdentityService {
    pub driver_name: String,
    /// `Probe` is ready exactly when `/readyz` is.
    pub readiness: Readiness,
    /// Whether this process serves the Controller service too.
    pub controller: bool,
}

fn service(kind: plugin_capability::service::Type) -> proto::PluginCapability {
    proto::PluginCapability {
        r#type: Some(plugin_capability::Type::Service(
            plugin_capability::Service {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl proto::identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<proto::GetPluginInfoRequest>,
    ) -> Result<Response<proto::GetPluginInfoResponse>, Status> {
        Ok(Response::new(proto::GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<proto::GetPluginCapabilitiesResponse>, Status> {
        let mut capabilities = Vec::new();
        if self.controller {
            capabilities.push(service(plugin_capability::service::Type::ControllerService));
        }
        // Volumes live on one node: the sidecars pass it as topology.
        capabilities.push(service(
            plugin_capability::service::Type::VolumeAccessibilityConstraints,
        ));
        // Volumes grow while mounted (loop device, then ext4/xfs online).
        capabilities.push(proto::PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(
                plugin_capability::VolumeExpansion {
                    r#type: plugin_capability::volume_expansion::Type::Online as i32,
                },
            )),
        });
        Ok(Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _: Request<proto::ProbeRequest>,
    ) -> Result<Response<proto::ProbeResponse>, Status> {
        let waiting = self.readiness.waiting();
        if !waiting.is_empty() {
            tracing::debug!(?waiting, "CSI probe: not ready");
        }
        Ok(Response::new(proto::ProbeResponse {
            ready: Some(waiting.is_empty()),
        }))
    }
}
