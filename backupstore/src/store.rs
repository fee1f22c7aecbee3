//! The handle every operation goes through: one long-lived object-store client plus the target's
//! path prefix, with error mapping (naming target and object) and retries of transient failures.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result, is_transient};
use crate::lock::{LockPark, LockTimings};

/// How often a transient failure is retried, and the first backoff (doubled each time).
const RETRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// A backup store: an object-store client and the path prefix under which `backupstore/` lives.
/// Cheap to clone (the client is shared); create one per target and keep it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    root: Path,
    label: Arc<str>,
    lock_timings: LockTimings,
    lock_linger: Duration,
    lock_park: Arc<LockPark>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("target", &self.label)
            .finish()
    }
}

/// Longest idle time a kept shared lock may linger ([`Store::with_lock_linger`]): 10 s, so
/// another client's delete (Longhorn's waits up to 30 s for locks) is never starved.
pub const MAX_LOCK_LINGER: Duration = Duration::from_secs(10);

/// One object found by a listing: its path relative to the target root and its mtime.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub rel: String,
    /// Modification time, seconds since the epoch (with nanoseconds).
    pub mtime: jiff::Timestamp,
}

impl Store {
    /// A store on `inner`, whose objects live under `root` (the target URL's path; empty for the
    /// bucket or directory root).
    pub fn new(inner: Arc<dyn ObjectStore>, root: Path) -> Store {
        let label = format!("{inner}/{root}");
        Store {
            inner,
            root,
            label: label.into(),
            lock_timings: LockTimings::default(),
            lock_linger: Duration::ZERO,
            lock_park: Arc::default(),
        }
    }

    /// Names the target in error messages (for example its URL without credentials).
    pub fn with_label(mut self, label: impl Into<String>) -> Store {
        self.label = label.into().into();
        self
    }

    /// Overrides the lock protocol's timings. For tests only: other clients of the same store
    /// assume Longhorn's defaults.
    pub fn with_lock_timings(mut self, timings: LockTimings) -> Store {
        self.lock_timings = timings;
        self
    }

    pub(crate) fn lock_timings(&self) -> LockTimings {
        self.lock_timings
    }

    /// Keeps the shared (backup/restore) lock of a volume for `linger` after an operation, so
    /// the next backup or restore of that volume by this handle skips the lock protocol's 2 s
    /// wait. Off (zero) by default. While kept, the lock excludes other clients' deletes of
    /// that volume (Longhorn's delete waits up to 30 s), so keep it short (10 s or less) and
    /// call [`Store::close`] before exiting.
    /// The linger is an idle timeout: the kept lock is released `linger` after the last
    /// operation ended (each operation restarts it). Capped at [`MAX_LOCK_LINGER`].
    pub fn with_lock_linger(mut self, linger: Duration) -> Store {
        self.lock_linger = linger.min(MAX_LOCK_LINGER);
        self
    }

    pub(crate) fn lock_linger(&self) -> Duration {
        self.lock_linger
    }

    pub(crate) fn lock_park(&self) -> &LockPark {
        &self.lock_park
    }

    /// The target as error messages name it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The object-store client.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The path prefix under which `backupstore/` lives.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path(&self, rel: &str) -> Path {
        if self.root.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.root))
        }
    }

    fn rel_of(&self, path: &Path) -> String {
        let full = path.as_ref();
        let root = self.root.as_ref();
        if root.is_empty() {
            full.to_string()
        } else {
            full.strip_prefix(root)
                .and_then(|s| s.strip_prefix('/'))
                .unwrap_or(full)
                .to_string()
        }
    }

    pub(crate) fn map_err(&self, object: &str, err: object_store::Error) -> Error {
        let target = self.label.to_string();
        let object = object.to_string();
        match err {
            object_store::Error::NotFound { .. } => Error::NotFound { target, object },
            e @ (object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }) => Error::AccessDenied {
                target,
                object,
                source: e,
            },
            source => Error::Storage {
                target,
                object,
                source,
            },
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or the retries are used up.
    async fn retry<T, F, Fut>(&self, object: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt < RETRIES => {
                    tracing::warn!(target_store = %self.label, object, error = %e, "transient error, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(self.map_err(object, e)),
            }
        }
    }

    pub(crate) async fn get(&self, rel: &str) -> Result<Bytes> {
        let path = self.path(rel);
        self.retry(rel, || async {
            let got = self.inner.get(&path).await?;
            got.bytes().await
        })
        .await
    }

    /// Like [`Store::get`] but `None` when the object does not exist.
    pub(crate) async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>> {
        match self.get(rel).await {
            Ok(b) => Ok(Some(b)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn put(&self, rel: &str, data: Bytes) -> Result<()> {
        let path = self.path(rel);
        self.retry(rel, || {
            let payload = PutPayload::from_bytes(data.clone());
            let path = &path;
            async move { self.inner.put(path, payload).await.map(|_| ()) }
        })
        .await
    }

    /// A cheap fingerprint of `volume`'s `volume.cfg` (one HEAD request: size, mtime, ETag), or
    /// `None` when the volume has no backups here. Every completed or deleted backup rewrites
    /// `volume.cfg`, so a standby volume polls this often and lists only when it changed.
    pub async fn volume_stamp(&self, volume: &str) -> Result<Option<String>> {
        crate::names::validate_name("volume", volume)?;
        let rel = crate::names::volume_cfg(volume);
        let path = self.path(&rel);
        match self.retry(&rel, || self.inner.head(&path)).await {
            Ok(meta) => Ok(Some(format!(
                "{}|{}|{}",
                meta.size,
                meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
                meta.e_tag.as_deref().unwrap_or_default()
            ))),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn head(&self, rel: &str) -> Result<Option<Listed>> {
        let path = self.path(rel);
        match self.retry(rel, || self.inner.head(&path)).await {
            Ok(meta) => Ok(Some(self.listed(meta))),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes one object; a missing object is not an error.
    pub(crate) async fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match self.retry(rel, || self.inner.delete(&path)).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes many objects through the client's batched delete (one request per 1000 keys on
    /// S3). Missing objects are not errors. Returns how many were deleted.
    pub(crate) async fn delete_many(&self, rels: Vec<String>) -> Result<u64> {
        let paths: Vec<object_store::Result<Path>> =
            rels.iter().map(|r| Ok(self.path(r))).collect();
        let mut stream = self
            .inner
            .delete_stream(futures::stream::iter(paths).boxed());
        let mut deleted = 0;
        while let Some(res) = stream.next().await {
            match res {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(self.map_err("(batched delete)", e)),
            }
        }
        Ok(deleted)
    }

    fn listed(&self, meta: ObjectMeta) -> Listed {
        let mtime = jiff::Timestamp::new(
            meta.last_modified.timestamp(),
            meta.last_modified.timestamp_subsec_nanos() as i32,
        )
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        Listed {
            rel: self.rel_of(&meta.location),
            mtime,
        }
    }

    /// Every object under `rel_dir` (recursive).
    pub(crate) async fn list_all(&self, rel_dir: &str) -> Result<Vec<Listed>> {
        let prefix = self.path(rel_dir);
        self.retry(rel_dir, || async {
            self.inner.list(Some(&prefix)).try_collect::<Vec<_>>().await
        })
        .await
        .map(|metas| metas.into_iter().map(|m| self.listed(m)).collect())
    }

    /// The objects and sub-directories directly inside `rel_dir`: `(files, dir names)`.
    pub(crate) async fn list_dir(&self, rel_dir: &str) -> Result<(Vec<Listed>, Vec<String>)> {
        let prefix = self.path(rel_dir);
        let res = match self
            .retry(rel_dir, || self.inner.list_with_delimiter(Some(&prefix)))
            .await
        {
            Ok(res) => res,
            Err(Error::NotFound { .. }) => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let dirs = res
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        let files = res.objects.into_iter().map(|m| self.listed(m)).collect();
        Ok((files, dirs))
    }
}

/// The last path segment of a relative object path.
pub(crate) fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}
