//! Directory targets (`file://`, and `nfs://` once mounted).
//!
//! `object_store`'s `LocalFileSystem` already writes each object to a staging file
//! (`<name>#<n>`) and renames it into place, and its listings skip those staging files, so our
//! own partial writes are never seen. Longhorn's filesystem driver stages as
//! `<name>.tmp.<nanos>` instead; [`HideTempFiles`] drops such names from listings so that a
//! store shared with (or interrupted in) Longhorn never shows a half-written object to a reader.

use std::fmt;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;

use super::deferred_sync::DeferredBlockSync;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Whether `name` (a file name) is one of Longhorn's staging files, `<name>.tmp.<digits>`.
pub fn is_longhorn_temp_name(name: &str) -> bool {
    match name.rsplit_once(".tmp.") {
        Some((stem, digits)) => {
            !stem.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn is_visible(meta: &ObjectMeta) -> bool {
    !meta.location.filename().is_some_and(is_longhorn_temp_name)
}

/// Open directory `dir` as an object store, durable (metadata fsynced on write; blocks
/// fsynced in batches before any metadata, see [`DeferredBlockSync`]) and tidy (empty
/// directories removed on delete, as Longhorn's driver leaves none behind).
pub fn open_directory(dir: &FsPath) -> Result<Arc<dyn ObjectStore>> {
    let store = LocalFileSystem::new_with_prefix(dir)?
        .with_fsync(true)
        .with_automatic_cleanup(true);
    let root = std::fs::canonicalize(dir).map_err(|source| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    })?;
    Ok(Arc::new(DeferredBlockSync::new(
        HideTempFiles::new(store),
        root,
    )))
}

/// An object store whose listings leave out Longhorn's `<name>.tmp.<nanos>` staging files.
#[derive(Debug)]
pub struct HideTempFiles<T> {
    inner: T,
}

impl<T> HideTempFiles<T> {
    pub fn new(inner: T) -> Self {
        Self { inner }
    }
}

impl<T: ObjectStore> fmt::Display for HideTempFiles<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HideTempFiles({})", self.inner)
    }
}

#[async_trait::async_trait]
impl<T: ObjectStore> ObjectStore for HideTempFiles<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner
            .list(prefix)
            .filter(|item| futures::future::ready(item.as_ref().map_or(true, is_visible)))
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .filter(|item| futures::future::ready(item.as_ref().map_or(true, is_visible)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        result.objects.retain(is_visible);
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    #[test]
    fn longhorn_temp_names_are_recognised() {
        assert!(is_longhorn_temp_name(
            "backup_b1.cfg.tmp.1700000000123456789"
        ));
        assert!(is_longhorn_temp_name("abc.blk.tmp.1"));
        assert!(!is_longhorn_temp_name("backup_b1.cfg"));
        assert!(!is_longhorn_temp_name("x.tmp."));
        assert!(!is_longhorn_temp_name(".tmp.123"));
        assert!(!is_longhorn_temp_name("a.tmp.12x"));
    }

    #[tokio::test]
    async fn listings_hide_longhorn_and_object_store_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_directory(dir.path()).unwrap();
        store
            .put(
                &Path::from("v/backups/backup_a.cfg"),
                PutPayload::from_static(b"{}"),
            )
            .await
            .unwrap();
        // A Longhorn writer interrupted between write and rename, and one of object_store's own.
        let backups = dir.path().join("v/backups");
        std::fs::write(backups.join("backup_b.cfg.tmp.1700000000000000001"), b"{").unwrap();
        std::fs::write(backups.join("backup_c.cfg#7"), b"{").unwrap();

        let listed: Vec<String> = store
            .list(Some(&Path::from("v")))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed, ["v/backups/backup_a.cfg"]);
        let delimited = store
            .list_with_delimiter(Some(&Path::from("v/backups")))
            .await
            .unwrap();
        let names: Vec<String> = delimited
            .objects
            .iter()
            .map(|m| m.location.to_string())
            .collect();
        assert_eq!(names, ["v/backups/backup_a.cfg"]);
        let got = store
            .get(&Path::from("v/backups/backup_a.cfg"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"{}");
    }
}
