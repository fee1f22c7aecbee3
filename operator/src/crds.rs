//! Our CRDs in the cluster: installed on request (`--install-crds`), otherwise only checked.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// Field manager of everything `bulwark run` applies.
pub const FIELD_MANAGER: &str = "bulwark";

/// Create or update every CRD by server-side apply.
pub async fn install(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crd_types::crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        tracing::info!(crd = %name, "CRD applied");
    }
    Ok(())
}

/// What a user can do when [`install`] failed with `error`.
pub fn install_hint(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.message.contains("oldSelf") => {
            "this API server cannot compile CEL transition rules (`oldSelf`, Kubernetes 1.25 and \
             later): upgrade the cluster; the rules keep immutable fields immutable"
        }
        kube::Error::Api(status) if status.code == 403 => {
            "bind the ClusterRole bulwark-crd-installer to this ServiceAccount, or apply \
             deploy/crds.yaml yourself and run without --install-crds"
        }
        _ => "apply deploy/crds.yaml yourself and run without --install-crds",
    }
}

/// Every CRD that is not installed and established yet, with what the user can do about it.
pub async fn not_ready(client: &kube::Client) -> Result<Vec<(String, String)>, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut waiting = Vec::new();
    for crd in crd_types::crds::all() {
        let name = crd.metadata.name.unwrap_or_default();
        match api.get_opt(&name).await? {
            None => waiting.push((
                format!("crd {name}"),
                "not installed: run `bulwark run --install-crds` or `kubectl apply -f deploy/crds.yaml`"
                    .to_owned(),
            )),
            Some(installed) if !is_established(&installed) => {
                waiting.push((format!("crd {name}"), "installed, not established yet".to_owned()))
            }
            Some(_) => {}
        }
    }
    Ok(waiting)
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{ApiServer, json_response, not_found};
    use http::{Method, StatusCode};

    fn established(name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "bulwark.io", "names": {"kind": "X", "plural": "x"}, "scope": "Namespaced", "versions": []},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}
        })
    }

    #[tokio::test]
    async fn missing_and_unestablished_crds_are_named() {
        let (client, server) = ApiServer::start();
        let names: Vec<String> = crd_types::crds::all()
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let expected = names.clone();
        let script = tokio::spawn(async move {
            let mut server = server;
            for (i, name) in expected.iter().enumerate() {
                let request = server
                    .expect(
                        Method::GET,
                        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
                    )
                    .await;
                let response = match i {
                    0 => not_found(),
                    1 => {
                        let mut crd = established(name);
                        crd["status"]["conditions"][0]["status"] = "False".into();
                        json_response(StatusCode::OK, crd)
                    }
                    _ => json_response(StatusCode::OK, established(name)),
                };
                request.respond(response);
            }
        });
        let waiting = not_ready(&client).await.expect("API answers");
        script.await.expect("server script");
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        assert_eq!(waiting[0].0, format!("crd {}", names[0]));
        assert!(waiting[0].1.contains("--install-crds"));
        assert_eq!(
            waiting[1],
            (
                format!("crd {}", names[1]),
                "installed, not established yet".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn install_applies_every_crd_server_side() {
        let (client, server) = ApiServer::start();
        let script = tokio::spawn(async move {
            let mut server = server;
            for crd in crd_types::crds::all() {
                let name = crd.metadata.name.clone().unwrap_or_default();
                let path =
                    format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}");
                let request = server.expect(Method::PATCH, &path).await;
                assert!(
                    request.query.contains("fieldManager=bulwark")
                        && request.query.contains("force=true"),
                    "{}",
                    request.query
                );
                assert_eq!(
                    request.content_type.as_deref(),
                    Some("application/apply-patch+yaml")
                );
                let body: CustomResourceDefinition =
                    serde_json::from_slice(&request.body).expect("a CRD");
                assert_eq!(body.spec, crd.spec, "{name}");
                request.respond(json_response(
                    StatusCode::OK,
                    serde_json::to_value(&body).expect("json"),
                ));
            }
        });
        install(&client).await.expect("installed");
        script.await.expect("server script");
    }

    #[test]
    fn a_server_without_transition_rules_is_named_as_the_cause() {
        let refused = |code: u16, message: &str| {
            kube::Error::Api(Box::new(
                serde_json::from_value(serde_json::json!({
                    "status": "Failure", "code": code, "message": message, "reason": "Invalid"
                }))
                .expect("a Status"),
            ))
        };
        let old_server = refused(
            422,
            "compilation failed: ERROR: <input>:1:6: undeclared reference to 'oldSelf'",
        );
        assert!(install_hint(&old_server).contains("Kubernetes 1.25"));
        assert!(install_hint(&refused(403, "forbidden")).contains("bulwark-crd-installer"));
        assert!(install_hint(&refused(500, "etcd")).contains("deploy/crds.yaml"));
    }
}
