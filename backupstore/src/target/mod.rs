//! Backup target URLs (`file://`, `nfs://`, `s3://`), their credentials, and the long-lived
//! object-store client each one is served by.
//!
//! [`connect`] turns a [`TargetUrl`] and [`Credentials`] into an `ObjectStore` plus the path of
//! the target's root inside it; everything else in the crate does its I/O through that pair.
//! [`Clients`] keeps one client per target so connections and TLS sessions are reused.

pub mod credentials;
pub mod deferred_sync;
pub mod local;
pub mod nfs;
pub mod s3;
pub mod url;

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path;

pub use credentials::{Credentials, CredentialsError};
pub use url::{BackupUrl, TargetKind, TargetUrl, UrlError};

/// Why a target could not be opened or used. Each message names the target (and the object or
/// credential key when there is one) and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("credential {key} is unusable: {reason}")]
    InvalidCredential { key: &'static str, reason: String },
    #[error("cannot build the S3 client: {reason}")]
    Client { reason: String },
    #[error("target directory {path} does not exist; create it first (or fix the URL)")]
    DirectoryMissing { path: PathBuf },
    #[error("target path {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot open target directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot create NFS mount directory {path}: {source}")]
    MountDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount NFS export {export} on {dir}: {}", attempts.join("; "))]
    Mount {
        export: String,
        dir: PathBuf,
        attempts: Vec<String>,
    },
    #[error(
        "target {target} refused the credentials while accessing {object:?}: {detail}; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    AccessDenied {
        target: String,
        object: String,
        detail: String,
    },
    #[error("bucket {bucket:?} of target {target} does not exist; create it or fix the URL")]
    BucketNotFound { target: String, bucket: String },
    #[error("object {object:?} not found in target {target}")]
    NotFound { target: String, object: String },
    #[error("target {target} failed on {object:?}: {source}")]
    Store {
        target: String,
        object: String,
        #[source]
        source: object_store::Error,
    },
}

/// How `nfs://` targets get mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NfsMountMode {
    /// Run `mount` (as Longhorn does) unless the mount directory is already a mount point.
    System,
    /// Use the mount directory as it is: something else mounted it (or, in tests, it is a plain
    /// directory standing in for the export).
    AlreadyMounted,
}

/// An open target: the store serving it and the path of the target's root inside that store.
pub type Connected = (Arc<dyn ObjectStore>, Path);

/// Settings of [`connect`] that are not part of the target URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Directory under which NFS exports get their mount directories.
    pub nfs_mount_root: PathBuf,
    pub nfs_mount: NfsMountMode,
    /// How long one `mount` attempt may take.
    pub mount_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            nfs_mount_root: PathBuf::from(nfs::DEFAULT_MOUNT_ROOT),
            nfs_mount: NfsMountMode::System,
            mount_timeout: Duration::from_secs(60),
        }
    }
}

/// Open `url`: the store serving it and the path of the target's root inside that store
/// (empty for directories, the key prefix for S3). Builds a new client: keep the result for
/// the target's lifetime, or use [`Clients`].
pub async fn connect(
    url: &TargetUrl,
    credentials: &Credentials,
    options: &ConnectOptions,
) -> Result<Connected, TargetError> {
    match url.kind() {
        TargetKind::File { path } => Ok((open_dir(path)?, Path::default())),
        TargetKind::Nfs {
            host,
            export,
            nfs_options,
        } => {
            let dir = nfs::mount_dir(&options.nfs_mount_root, host, export);
            if options.nfs_mount == NfsMountMode::System {
                mount_nfs(host, export, nfs_options.as_deref(), &dir, options).await?;
            }
            Ok((open_dir(&dir)?, Path::default()))
        }
        TargetKind::S3 {
            bucket,
            region,
            prefix,
        } => {
            let store = s3::build(bucket, region.as_deref(), credentials)?;
            Ok((store, Path::from_iter(prefix.split('/'))))
        }
    }
}

/// Check that the target answers and accepts the credentials, with one listing of its root.
pub async fn check_access(
    url: &TargetUrl,
    store: &dyn ObjectStore,
    root: &Path,
) -> Result<(), TargetError> {
    store
        .list_with_delimiter(Some(root))
        .await
        .map(|_| ())
        .map_err(|error| explain(url, root.as_ref(), error))
}

/// Turn an object-store error on `object` into a [`TargetError`] that says what went wrong in
/// the user's terms (bad credentials, missing bucket, missing object, anything else).
pub fn explain(url: &TargetUrl, object: &str, error: object_store::Error) -> TargetError {
    let target = url.to_string();
    let object = object.to_string();
    let text = error_chain(&error);
    match &error {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => TargetError::AccessDenied {
            target,
            object,
            detail: server_code(&text).unwrap_or("access denied").to_string(),
        },
        _ if text.contains("NoSuchBucket") => match url.kind() {
            TargetKind::S3 { bucket, .. } => TargetError::BucketNotFound {
                target,
                bucket: bucket.clone(),
            },
            _ => TargetError::Store {
                target,
                object,
                source: error,
            },
        },
        _ if [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ]
        .iter()
        .any(|code| text.contains(code)) =>
        {
            TargetError::AccessDenied {
                target,
                object,
                detail: server_code(&text).unwrap_or("access denied").to_string(),
            }
        }
        object_store::Error::NotFound { .. } => TargetError::NotFound { target, object },
        _ => TargetError::Store {
            target,
            object,
            source: error,
        },
    }
}

/// The S3 error code named in an error text, if it is one a user can act on.
fn server_code(text: &str) -> Option<&'static str> {
    [
        (
            "InvalidAccessKeyId",
            "the access key id is unknown to the server (InvalidAccessKeyId)",
        ),
        (
            "SignatureDoesNotMatch",
            "the secret access key does not match (SignatureDoesNotMatch)",
        ),
        ("AccessDenied", "access denied (AccessDenied)"),
    ]
    .into_iter()
    .find(|(code, _)| text.contains(code))
    .map(|(_, message)| message)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn open_dir(path: &FsPath) -> Result<Arc<dyn ObjectStore>, TargetError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(TargetError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {
            return Err(TargetError::DirectoryMissing {
                path: path.to_path_buf(),
            });
        }
    }
    local::open_directory(path).map_err(|source| TargetError::Directory {
        path: path.to_path_buf(),
        source,
    })
}

async fn mount_nfs(
    host: &str,
    export: &str,
    nfs_options: Option<&str>,
    dir: &FsPath,
    options: &ConnectOptions,
) -> Result<(), TargetError> {
    create_private_dir(dir).map_err(|source| TargetError::MountDirectory {
        path: dir.to_path_buf(),
        source,
    })?;
    if nfs::is_mount_point(dir).unwrap_or(false) {
        return Ok(());
    }
    let mut attempts = Vec::new();
    for command in nfs::mount_commands(host, export, nfs_options, dir) {
        let run = tokio::process::Command::new(&command.program)
            .args(&command.args)
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(options.mount_timeout, run).await {
            Ok(Ok(output)) if output.status.success() => return Ok(()),
            Ok(Ok(output)) => attempts.push(format!(
                "`{command}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Ok(Err(error)) => attempts.push(format!("`{command}` could not run: {error}")),
            Err(_) => attempts.push(format!(
                "`{command}` timed out after {:?}",
                options.mount_timeout
            )),
        }
    }
    Err(TargetError::Mount {
        export: format!("{host}:{export}"),
        dir: dir.to_path_buf(),
        attempts,
    })
}

fn create_private_dir(dir: &FsPath) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// One client per target, shared by every operation on it: `Clients::get` builds the client
/// the first time a (URL, credentials) pair is seen and hands out the same one afterwards.
#[derive(Default)]
pub struct Clients {
    options: ConnectOptions,
    open: Mutex<HashMap<(TargetUrl, Credentials), Connected>>,
}

impl Clients {
    pub fn new(options: ConnectOptions) -> Self {
        Self {
            options,
            open: Mutex::default(),
        }
    }

    /// The client for `url` with `credentials`, connecting on first use. Changed credentials
    /// give a new client (the old one is dropped once nobody uses it).
    pub async fn get(
        &self,
        url: &TargetUrl,
        credentials: &Credentials,
    ) -> Result<Connected, TargetError> {
        let key = (url.clone(), credentials.clone());
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let connected = connect(url, credentials, &self.options).await?;
        let mut open = self.lock();
        open.retain(|(u, _), _| u != url);
        Ok(open.entry(key).or_insert(connected).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TargetUrl, Credentials), Connected>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts).
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, PutPayload};

    #[tokio::test]
    async fn file_targets_are_served_from_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = TargetUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let (store, root) = connect(&url, &Credentials::default(), &ConnectOptions::default())
            .await
            .unwrap();
        assert!(root.as_ref().is_empty());
        store
            .put(
                &root.clone().join("backupstore").join("x"),
                PutPayload::from_static(b"1"),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("backupstore/x")).unwrap(),
            b"1"
        );
        check_access(&url, store.as_ref(), &root).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_directory_is_reported_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let url = TargetUrl::parse(&format!("file://{}", missing.display())).unwrap();
        let err = connect(&url, &Credentials::default(), &ConnectOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TargetError::DirectoryMissing { path } if *path == missing),
            "{err}"
        );
        assert!(!missing.exists());
    }

    #[tokio::test]
    async fn nfs_targets_use_their_mount_directory() {
        let root = tempfile::tempdir().unwrap();
        let export_dir = root.path().join("nfs_svc/opt/bs");
        std::fs::create_dir_all(&export_dir).unwrap();
        let url = TargetUrl::parse("nfs://nfs.svc:/opt/bs?nfsOptions=soft").unwrap();
        // The per-target directory Longhorn-style: '.' in the host becomes '_'.
        let export_dir = root.path().join("nfs_svc/opt/bs");
        let options = ConnectOptions {
            nfs_mount_root: root.path().to_path_buf(),
            nfs_mount: NfsMountMode::AlreadyMounted,
            ..ConnectOptions::default()
        };
        let (store, root_path) = connect(&url, &Credentials::default(), &options)
            .await
            .unwrap();
        store
            .put(&root_path.join("f"), PutPayload::from_static(b"nfs"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(export_dir.join("f")).unwrap(), b"nfs");
    }

    #[tokio::test]
    async fn clients_are_built_once_per_target() {
        let dir = tempfile::tempdir().unwrap();
        let url = TargetUrl::parse(&format!("file://{}", dir.path().display())).unwrap();
        let clients = Clients::default();
        let creds = Credentials::default();
        let (a, _) = clients.get(&url, &creds).await.unwrap();
        let (b, _) = clients.get(&url, &creds).await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = Credentials {
            no_proxy: Some("x".into()),
            ..Credentials::default()
        };
        let (c, _) = clients.get(&url, &other).await.unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[tokio::test]
    async fn s3_prefix_becomes_the_root_path() {
        let url = TargetUrl::parse("s3://bucket@us-east-1/a/b/").unwrap();
        let creds = Credentials::from_map([
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINTS", "http://127.0.0.1:9"),
        ])
        .unwrap();
        let (_, root) = connect(&url, &creds, &ConnectOptions::default())
            .await
            .unwrap();
        assert_eq!(root.as_ref(), "a/b");
    }
}
