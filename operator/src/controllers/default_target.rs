//! The `default` BackupTarget, created from configuration when absent and never overwritten:
//! once it exists it belongs to the user.

use crd_types::{BackupTarget, BackupTargetSpec, backup_target::default_poll_interval};
use kube::Api;
use kube::api::PostParams;

pub const NAME: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// A `default` target exists; `configured_url_differs` says whether it points elsewhere
    /// than the configuration (the user's object wins).
    Kept {
        configured_url_differs: bool,
    },
}

/// The object created when none exists.
pub fn build(url: &str) -> BackupTarget {
    BackupTarget::new(
        NAME,
        BackupTargetSpec {
            backup_target_url: url.to_owned(),
            credential_secret: None,
            poll_interval: default_poll_interval(),
            sync_requested_at: None,
        },
    )
}

pub async fn ensure(
    client: &kube::Client,
    namespace: &str,
    url: &str,
) -> Result<Outcome, kube::Error> {
    let api: Api<BackupTarget> = Api::namespaced(client.clone(), namespace);
    if let Some(existing) = api.get_opt(NAME).await? {
        return Ok(Outcome::Kept {
            configured_url_differs: existing.spec.backup_target_url != url,
        });
    }
    let params = PostParams {
        field_manager: Some(crate::crds::FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, &build(url)).await {
        Ok(_) => Ok(Outcome::Created),
        // Another writer created it between our read and our create: theirs stands.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Kept {
            configured_url_differs: false,
        }),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::{ApiServer, json_response, not_found, status};
    use http::{Method, StatusCode};

    const PATH: &str = "/apis/bulwark.io/v1beta1/namespaces/bulwark-system/backuptargets";

    #[tokio::test]
    async fn creates_the_default_target_when_absent() {
        let (client, mut server) = ApiServer::start();
        let script = tokio::spawn(async move {
            server
                .expect(Method::GET, &format!("{PATH}/default"))
                .await
                .respond(not_found());
            let create = server.expect(Method::POST, PATH).await;
            assert!(
                create.query.contains("fieldManager=bulwark"),
                "{}",
                create.query
            );
            let body = create.json();
            assert_eq!(body["metadata"]["name"], "default");
            assert_eq!(
                body["spec"]["backupTargetURL"],
                "file:///var/lib/bulwark/backups"
            );
            assert_eq!(body["spec"]["pollInterval"], "300s");
            create.respond(json_response(StatusCode::CREATED, body));
        });
        let outcome = ensure(&client, "bulwark-system", "file:///var/lib/bulwark/backups").await;
        script.await.expect("server script");
        assert_eq!(outcome.expect("created"), Outcome::Created);
    }

    #[tokio::test]
    async fn never_overwrites_the_users_target() {
        let (client, mut server) = ApiServer::start();
        let script = tokio::spawn(async move {
            let mut existing =
                serde_json::to_value(build("s3://mine@eu-west-1/backups/")).expect("json");
            existing["metadata"]["namespace"] = "bulwark-system".into();
            server
                .expect(Method::GET, &format!("{PATH}/default"))
                .await
                .respond(json_response(StatusCode::OK, existing));
        });
        let outcome = ensure(&client, "bulwark-system", "file:///var/lib/bulwark/backups").await;
        script.await.expect("server script");
        assert_eq!(
            outcome.expect("kept"),
            Outcome::Kept {
                configured_url_differs: true
            }
        );
    }

    #[tokio::test]
    async fn a_create_race_is_not_an_error() {
        let (client, mut server) = ApiServer::start();
        let script = tokio::spawn(async move {
            server
                .expect(Method::GET, &format!("{PATH}/default"))
                .await
                .respond(not_found());
            server
                .expect(Method::POST, PATH)
                .await
                .respond(status(409, "AlreadyExists"));
        });
        let outcome = ensure(&client, "bulwark-system", "file:///x").await;
        script.await.expect("server script");
        assert_eq!(
            outcome.expect("kept"),
            Outcome::Kept {
                configured_url_differs: false
            }
        );
    }

    #[tokio::test]
    async fn api_errors_are_returned() {
        let (client, mut server) = ApiServer::start();
        let script = tokio::spawn(async move {
            server
                .expect(Method::GET, &format!("{PATH}/default"))
                .await
                .respond(status(403, "Forbidden"));
        });
        let outcome = ensure(&client, "bulwark-system", "file:///x").await;
        script.await.expect("server script");
        assert!(matches!(outcome, Err(kube::Error::Api(status)) if status.code == 403));
    }
}
