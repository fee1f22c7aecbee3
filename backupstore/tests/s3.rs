//! Against a real S3 server (SeaweedFS started by the harness on 127.0.0.1): connecting,
//! object I/O through the target's client, and the errors a user can cause.

// A failed unwrap is the test failure report.
#![allow(clippy::unwrap_used)]

use backupstore::target::{
    self, ConnectOptions, Credentials, CredentialsError, TargetError, TargetUrl,
};
use backupstore::testing::{self, SeaweedFs};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

async fn server() -> SeaweedFs {
    match SeaweedFs::start().await {
        Ok(server) => server,
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn objects_written_under_the_prefix_read_back_and_list() {
    let server = server().await;
    let url = server.target_url("team/backups");
    let (store, root) = target::connect(&url, &server.credentials(), &ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(root.as_ref(), "team/backups");
    target::check_access(&url, store.as_ref(), &root)
        .await
        .unwrap();

    let object = root
        .clone()
        .join("backupstore")
        .join("volumes")
        .join("x.cfg");
    store
        .put(&object, PutPayload::from_static(b"{\"Name\":\"x\"}"))
        .await
        .unwrap();
    let body = store.get(&object).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"{\"Name\":\"x\"}");

    let listed: Vec<String> = store
        .list(Some(&root))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, ["team/backups/backupstore/volumes/x.cfg"]);

    // The same bucket seen from another prefix does not show it.
    let elsewhere: Vec<_> = store
        .list(Some(&Path::from("other")))
        .try_collect()
        .await
        .unwrap();
    assert!(elsewhere.is_empty());
}

#[tokio::test]
async fn a_wrong_secret_key_is_an_access_error_naming_the_keys() {
    let server = server().await;
    let url = server.target_url("p");
    let credentials = Credentials {
        secret_access_key: Some("not-the-secret".into()),
        ..server.credentials()
    };
    let (store, root) = target::connect(&url, &credentials, &ConnectOptions::default())
        .await
        .unwrap();
    let err = target::check_access(&url, store.as_ref(), &root)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TargetError::AccessDenied { detail, .. } if detail.contains("SignatureDoesNotMatch")),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("AWS_SECRET_ACCESS_KEY"), "{message}");
    assert!(message.contains(url.as_str()), "{message}");
    assert!(!message.contains("not-the-secret"), "{message}");
}

#[tokio::test]
async fn an_unknown_access_key_is_an_access_error() {
    let server = server().await;
    let url = server.target_url("p");
    let credentials = Credentials {
        access_key_id: Some("nobody".into()),
        ..server.credentials()
    };
    let (store, root) = target::connect(&url, &credentials, &ConnectOptions::default())
        .await
        .unwrap();
    let err = target::check_access(&url, store.as_ref(), &root)
        .await
        .unwrap_err();
    assert!(matches!(err, TargetError::AccessDenied { .. }), "{err:?}");
}

#[tokio::test]
async fn a_missing_bucket_is_reported_as_such() {
    let server = server().await;
    let url = server.bucket_url("no-such-bucket", "p");
    let (store, root) = target::connect(&url, &server.credentials(), &ConnectOptions::default())
        .await
        .unwrap();
    let err = target::check_access(&url, store.as_ref(), &root)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TargetError::BucketNotFound { bucket, .. } if bucket == "no-such-bucket"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-bucket"));
}

#[tokio::test]
async fn a_missing_object_names_target_and_object() {
    let server = server().await;
    let url = server.target_url("p");
    let (store, root) = target::connect(&url, &server.credentials(), &ConnectOptions::default())
        .await
        .unwrap();
    let object = root.clone().join("nothing.cfg");
    let error = store.get(&object).await.unwrap_err();
    let err = target::explain(&url, object.as_ref(), error);
    assert!(
        matches!(&err, TargetError::NotFound { object, .. } if object == "p/nothing.cfg"),
        "{err:?}"
    );
}

#[test]
fn whitespace_in_a_credential_is_rejected_naming_the_key() {
    let err = Credentials::from_map([
        ("AWS_ACCESS_KEY_ID", testing::ACCESS_KEY_ID),
        (
            "AWS_SECRET_ACCESS_KEY",
            &format!("{}\n", testing::SECRET_ACCESS_KEY),
        ),
    ])
    .unwrap_err();
    assert!(
        matches!(
            err,
            CredentialsError::Whitespace {
                key: "AWS_SECRET_ACCESS_KEY",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("AWS_SECRET_ACCESS_KEY"));
}

#[tokio::test]
async fn parallel_instances_do_not_collide() {
    let (a, b) = tokio::join!(SeaweedFs::start(), SeaweedFs::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.endpoint(), b.endpoint());
    let object = Path::from("same/key");
    for (server, body) in [(&a, &b"from a"[..]), (&b, &b"from b"[..])] {
        let url: TargetUrl = server.target_url("");
        let (store, _) = target::connect(&url, &server.credentials(), &ConnectOptions::default())
            .await
            .unwrap();
        store
            .put(&object, PutPayload::from(body.to_vec()))
            .await
            .unwrap();
    }
    let url = a.target_url("");
    let (store, _) = target::connect(&url, &a.credentials(), &ConnectOptions::default())
        .await
        .unwrap();
    let body = store.get(&object).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"from a");
}

#[tokio::test]
async fn dropping_the_harness_kills_the_server() {
    let server = server().await;
    let pid = server.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(server);
    // `Drop` waited for the process, so it is gone (not even a zombie).
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
