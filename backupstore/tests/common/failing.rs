//! An object store that works until a budget of writes is used up, then fails every request,
//! as if the process had died there. Wraps a real store (a local directory).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug)]
pub struct FailingStore {
    inner: Arc<dyn ObjectStore>,
    /// Writes (puts and deletes) still allowed; below zero means "crashed".
    budget: AtomicI64,
    /// Transient failures to inject on the next puts (then they succeed).
    transient: AtomicU64,
}

impl FailingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FailingStore {
        FailingStore {
            inner,
            budget: AtomicI64::new(i64::MAX),
            transient: AtomicU64::new(0),
        }
    }

    /// Allow `n` more writes, then fail everything.
    pub fn crash_after(&self, n: i64) {
        self.budget.store(n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.budget.store(i64::MAX, Ordering::SeqCst);
    }

    pub fn crashed(&self) -> bool {
        self.budget.load(Ordering::SeqCst) < 0
    }

    pub fn fail_next_puts_transiently(&self, n: u64) {
        self.transient.store(n, Ordering::SeqCst);
    }

    fn dead() -> object_store::Error {
        object_store::Error::NotSupported {
            source: "injected crash: the process is gone".into(),
        }
    }

    fn spend(&self) -> Result<()> {
        if self.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(Self::dead());
        }
        Ok(())
    }

    fn alive(&self) -> Result<()> {
        if self.crashed() {
            return Err(Self::dead());
        }
        Ok(())
    }
}

impl fmt::Display for FailingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailingStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FailingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let pending = self.transient.load(Ordering::SeqCst);
        if pending > 0 {
            self.transient.store(pending - 1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "failing",
                source: "injected transient failure (503 Slow Down)".into(),
            });
        }
        self.spend()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.spend()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.alive()?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if self.spend().is_err() {
            return futures::stream::once(async { Err(FailingStore::dead()) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        if self.crashed() {
            return futures::stream::once(async { Err(FailingStore::dead()) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.alive()?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.spend()?;
        self.inner.copy_opts(from, to, options).await
    }
}
