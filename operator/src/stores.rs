//! One long-lived backup-store handle per BackupTarget, shared by every operation on it (the
//! S3 client, the NFS mount and the kept volume locks live as long as the handle).
//!
//! A target is opened from its URL and the keys of its credential Secret; a change of either
//! opens a new handle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backupstore::Store;
use backupstore::target::{
    Clients, ConnectOptions, Credentials, CredentialsError, TargetError, TargetUrl,
};
use crd_types::BackupTarget;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

/// How long a handle keeps a volume's shared lock after a backup or restore, so the next one
/// skips Longhorn's 2 s lock wait (capped by the store at 10 s).
pub const LOCK_LINGER: Duration = Duration::from_secs(10);

/// Why a BackupTarget cannot be opened. Each message names the object, the field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("spec.backupTargetURL {url:?} is invalid: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "spec.credentialSecret {secret:?} does not exist in namespace {namespace}: create it with the target's keys (for s3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    )]
    SecretMissing { secret: String, namespace: String },
    #[error("cannot read spec.credentialSecret {secret:?}: {source}")]
    SecretUnreadable {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("spec.credentialSecret {secret:?}: {source}")]
    Credentials {
        secret: String,
        #[source]
        source: CredentialsError,
    },
    #[error(
        "spec.credentialSecret is required for {scheme}:// targets: name a Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    SecretRequired { scheme: &'static str },
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl OpenError {
    /// True when only the user can fix it (as opposed to a store or API server outage).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            OpenError::SecretUnreadable { .. }
                | OpenError::Target(TargetError::Store { .. })
                | OpenError::Target(TargetError::Mount { .. })
        )
    }
}

/// The credentials a target's Secret holds (none when it names no Secret).
pub async fn credentials(
    client: &kube::Client,
    namespace: &str,
    target: &BackupTarget,
    url: &TargetUrl,
) -> Result<Credentials, OpenError> {
    let Some(secret_name) = target
        .spec
        .credential_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    else {
        if url.scheme() == "s3" {
            return Err(OpenError::SecretRequired { scheme: "s3" });
        }
        return Ok(Credentials::default());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|source| OpenError::SecretUnreadable {
            secret: secret_name.to_owned(),
            source,
        })?
        .ok_or_else(|| OpenError::SecretMissing {
            secret: secret_name.to_owned(),
            namespace: namespace.to_owned(),
        })?;
    let data = secret.data.unwrap_or_default();
    let entries = data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice()));
    let credentials = Credentials::from_map(entries).map_err(|source| OpenError::Credentials {
        secret: secret_name.to_owned(),
        source,
    })?;
    credentials
        .require_for(url.scheme())
        .map_err(|source| OpenError::Credentials {
            secret: secret_name.to_owned(),
            source,
        })?;
    Ok(credentials)
}

/// Parse a target's URL.
pub fn target_url(target: &BackupTarget) -> Result<TargetUrl, OpenError> {
    TargetUrl::parse(&target.spec.backup_target_url).map_err(|e| OpenError::Url {
        url: target.spec.backup_target_url.clone(),
        reason: e.to_string(),
    })
}

/// Among `targets`, the one whose URL is `url` (spec.backupTargetName's first).
pub fn pick_target<'a>(
    targets: &'a [BackupTarget],
    url: &TargetUrl,
    preferred: &str,
) -> Option<&'a BackupTarget> {
    let matches = |t: &&BackupTarget| {
        TargetUrl::parse(&t.spec.backup_target_url).is_ok_and(|u| u.as_str() == url.as_str())
    };
    targets
        .iter()
        .filter(matches)
        .find(|t| t.name_any() == preferred)
        .or_else(|| targets.iter().find(matches))
}

/// The open handles, by target name.
pub struct Stores {
    clients: Clients,
    open: Mutex<HashMap<String, (TargetUrl, Credentials, Store)>>,
}

impl Default for Stores {
    fn default() -> Self {
        Stores::new(ConnectOptions::default())
    }
}

impl Stores {
    pub fn new(options: ConnectOptions) -> Stores {
        Stores {
            clients: Clients::new(options),
            open: Mutex::default(),
        }
    }

    /// The handle of `target`, reading its Secret from `namespace`.
    pub async fn open(
        &self,
        client: &kube::Client,
        namespace: &str,
        target: &BackupTarget,
    ) -> Result<Store, OpenError> {
        let url = target_url(target)?;
        let credentials = credentials(client, namespace, target, &url).await?;
        self.open_with(&target.name_any(), url, credentials).await
    }

    /// The handle of the target `name` at `url` with `credentials`.
    pub async fn open_with(
        &self,
        name: &str,
        url: TargetUrl,
        credentials: Credentials,
    ) -> Result<Store, OpenError> {
        if let Some((u, c, store)) = self.lock().get(name)
            && *u == url
            && *c == credentials
        {
            return Ok(store.clone());
        }
        let (inner, root) = self.clients.get(&url, &credentials).await?;
        let store = Store::new(inner, root)
            .with_label(url.as_str().to_owned())
            .with_lock_linger(LOCK_LINGER);
        let replaced = self
            .lock()
            .insert(name.to_owned(), (url, credentials, store.clone()));
        if let Some((_, _, old)) = replaced {
            close(old).await;
        }
        Ok(store)
    }

    /// Release every kept lock (call before exiting).
    pub async fn close_all(&self) {
        let open: Vec<Store> = self.lock().drain().map(|(_, (_, _, s))| s).collect();
        for store in open {
            close(store).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (TargetUrl, Credentials, Store)>> {
        // Single inserts and removals: a panic cannot leave the map inconsistent.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn close(store: Store) {
    if let Err(error) = store.close().await {
        tracing::warn!(%error, target = store.label(), "cannot release kept locks");
    }
}
