//! A backing image's copy on this node, without Kubernetes: the directory layout, the download
//! (streamed over http/https, SHA-512 checked), the export of a volume through a temporary
//! engine snapshot, and the import into the raw sparse file the engine takes as a bottom layer.
//!
//! Layout: `<data-dir>/backing-images/<name>/`
//! - `image.raw`: the bottom layer (raw sparse, whole sectors);
//! - `image.qcow2`: the exported file of an `export-type: qcow2` export;
//! - `download` (`download.partial` while it streams): the downloaded file until imported;
//! - `copy.json`: written last (temp name, fsync, rename): the copy is complete, for the
//!   object with this UID. A directory without it is unfinished work and is redone from scratch.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use engine::Engine;
use engine::image::{ImageError, ImageFormat, ImageTools};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Folder of the agent data dir holding one folder per backing image.
pub const DIR: &str = "backing-images";
const RAW: &str = "image.raw";
const META: &str = "copy.json";
const DOWNLOAD: &str = "download";
/// Label on the engine snapshot an export reads from (so snapshot sync can tell it apart).
pub const EXPORT_LABEL: &str = "bulwark.io/backing-image-export";

/// What a finished copy records (`copy.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CopyMeta {
    /// UID of the BackingImage object this copy was made for.
    pub uid: String,
    /// SHA-512 of the image file as obtained (downloaded or exported), 128 lowercase hex.
    pub checksum: String,
    /// Bytes of the raw layer file (the virtual size rounded up to whole sectors).
    pub size: u64,
    pub virtual_size: u64,
    /// Format of the obtained file (`raw` or `qcow2`).
    pub format: String,
}

/// A failure to make a local copy; the message says what failed and, where the user can, how
/// to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("spec.sourceParameters.url {url:?} is not a usable http(s) URL: {reason}")]
    Url { url: String, reason: String },
    #[error("downloading {url} failed: the server answered {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("downloading {url} failed: {reason}")]
    Transfer { url: String, reason: String },
    #[error(
        "checksum mismatch: expected SHA-512 {expected} (spec.checksum), got {actual}: fix spec.checksum or the image at the source"
    )]
    ChecksumMismatch { expected: String, actual: String },
    #[error("{0}")]
    Image(#[from] ImageError),
    #[error("volume {volume:?}: {source}")]
    Engine {
        volume: String,
        #[source]
        source: engine::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "sourceType {source_type} is not supported by this agent yet: use download or export-from-volume"
    )]
    Unsupported { source_type: String },
    #[error("interrupted by the agent's shutdown; the work is redone after the restart")]
    Interrupted,
}

impl LocalError {
    /// Whether trying again later may succeed without the user changing anything.
    pub fn retryable(&self) -> bool {
        match self {
            LocalError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            LocalError::Transfer { .. } | LocalError::Io { .. } | LocalError::Interrupted => true,
            LocalError::Image(ImageError::Write { .. }) => true,
            LocalError::Url { .. }
            | LocalError::ChecksumMismatch { .. }
            | LocalError::Unsupported { .. }
            | LocalError::Image(_)
            | LocalError::Engine { .. } => false,
        }
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// The folder of one image's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path, name: &str) -> Layout {
        Layout {
            dir: data_dir.join(DIR).join(name),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The raw bottom layer.
    pub fn raw(&self) -> PathBuf {
        self.dir.join(RAW)
    }

    /// The finished copy made for the object with `uid`, if there is one.
    pub fn ready(&self, uid: &str) -> Option<CopyMeta> {
        let text = std::fs::read(self.dir.join(META)).ok()?;
        let meta: CopyMeta = serde_json::from_slice(&text).ok()?;
        (meta.uid == uid && self.raw().is_file()).then_some(meta)
    }

    /// Start over: remove what an earlier attempt (or an older object of this name) left.
    pub fn reset(&self) -> Result<(), LocalError> {
        self.remove()?;
        std::fs::create_dir_all(&self.dir)
            .map_err(io_error(format!("creating {}", self.dir.display())))
    }

    /// Remove the copy (nothing to do when there is none).
    pub fn remove(&self) -> Result<(), LocalError> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error(format!("removing {}", self.dir.display()))(e))
            }
            _ => Ok(()),
        }
    }

    /// Mark the copy complete: `copy.json` under a temp name, fsynced, renamed, folder fsynced.
    fn commit(&self, meta: &CopyMeta) -> Result<(), LocalError> {
        let path = self.dir.join(META);
        let partial = self.dir.join(format!("{META}.partial"));
        let what = || format!("writing {}", path.display());
        let body = serde_json::to_vec_pretty(meta).map_err(|e| LocalError::Io {
            what: what(),
            source: e.into(),
        })?;
        let mut file = std::fs::File::create(&partial).map_err(io_error(what()))?;
        file.write_all(&body)
            .and_then(|()| file.sync_all())
            .map_err(io_error(what()))?;
        std::fs::rename(&partial, &path).map_err(io_error(what()))?;
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(what()))
    }
}

/// Names of the image folders under `data_dir` (for removing copies of deleted images).
pub fn list(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(DIR)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// One lock per image folder: the owner's reconcile and a volume's `ensure_local_copy` must not
/// build the same copy at once.
pub fn lock(layout: &Layout) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    locks.entry(layout.dir.clone()).or_default().clone()
}

/// A client for downloads: rustls with the ring provider, bounded connect and read waits (a
/// stalled server fails the download instead of hanging it).
pub fn http_client() -> Result<reqwest::Client, LocalError> {
    backupstore::target::s3::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| LocalError::Transfer {
            url: String::new(),
            reason: format!("cannot build the HTTP client: {e}"),
        })
}

/// Stream `url` into `dest` (through `dest.partial`, fsynced, renamed); `progress` gets the
/// percent done when the server says the length. Returns the bytes received.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    progress: &tokio::sync::watch::Sender<i32>,
    cancel: &CancellationToken,
) -> Result<u64, LocalError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| LocalError::Url {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(LocalError::Url {
            url: url.to_owned(),
            reason: "only http and https are supported".into(),
        });
    }
    let transfer = |e: reqwest::Error| LocalError::Transfer {
        url: url.to_owned(),
        // The source chain says why (connection refused, TLS, timeout …).
        reason: error_chain(&e),
    };
    let mut response = client.get(parsed).send().await.map_err(transfer)?;
    let status = response.status();
    if !status.is_success() {
        return Err(LocalError::HttpStatus {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let total = response.content_length().filter(|n| *n > 0);
    let partial = dest.with_extension("partial");
    let what = || format!("writing {}", partial.display());
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(io_error(what()))?;
    let mut received: u64 = 0;
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return Err(LocalError::Interrupted),
            chunk = response.chunk() => chunk.map_err(transfer)?,
        };
        let Some(chunk) = chunk else { break };
        file.write_all(&chunk).await.map_err(io_error(what()))?;
        received += chunk.len() as u64;
        if let Some(total) = total {
            let percent = (received.min(total) * 100 / total) as i32;
            progress.send_if_modified(|p| std::mem::replace(p, percent) != percent);
        }
    }
    if let Some(total) = total
        && received != total
    {
        return Err(LocalError::Transfer {
            url: url.to_owned(),
            reason: format!("the server announced {total} bytes but sent {received}"),
        });
    }
    file.sync_all().await.map_err(io_error(what()))?;
    drop(file);
    tokio::fs::rename(&partial, dest)
        .await
        .map_err(io_error(format!("renaming {}", partial.display())))?;
    Ok(received)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn check_sum(expected: Option<&str>, actual: &str) -> Result<(), LocalError> {
    match expected {
        Some(expected) if expected != actual => Err(LocalError::ChecksumMismatch {
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        }),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LocalError> + Send + 'static,
) -> Result<T, LocalError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| LocalError::Io {
            what: "image work task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Download `url` into a fresh copy for the object `uid`, verify it against `expected` (a
/// SHA-512) when given, import it as raw (qcow2 converted) and mark the copy complete.
pub async fn prepare_download(
    layout: &Layout,
    uid: &str,
    url: &str,
    expected: Option<&str>,
    progress: &tokio::sync::watch::Sender<i32>,
    cancel: &CancellationToken,
) -> Result<CopyMeta, LocalError> {
    layout.reset()?;
    let client = http_client()?;
    let downloaded = layout.dir().join(DOWNLOAD);
    download(&client, url, &downloaded, progress, cancel).await?;
    let file = downloaded.clone();
    let checksum = blocking(move || Ok(engine::image::sha512_file(&file)?)).await?;
    if let Err(mismatch) = check_sum(expected, &checksum) {
        let _ = std::fs::remove_file(&downloaded);
        return Err(mismatch);
    }
    let raw = layout.raw();
    let source = downloaded.clone();
    let imported = blocking(move || Ok(ImageTools::new().import_to_raw(&source, &raw)?)).await?;
    let meta = CopyMeta {
        uid: uid.to_owned(),
        checksum,
        size: imported.layer_size,
        virtual_size: imported.virtual_size,
        format: imported.source_format.as_str().to_owned(),
    };
    // The raw layer has everything; the download is no longer needed.
    std::fs::remove_file(&downloaded)
        .map_err(io_error(format!("removing {}", downloaded.display())))?;
    layout.commit(&meta)?;
    Ok(meta)
}

/// The engine snapshot an export of the object `uid` (named `image`) reads from.
pub fn export_snapshot_name(image: &str, uid: &str) -> String {
    let id: String = uid.chars().filter(|c| *c != '-').take(12).collect();
    if id.is_empty() {
        format!("bi-export-{image}").chars().take(63).collect()
    } else {
        format!("bi-export-{id}")
    }
}

/// Export volume `volume` (its state at a temporary snapshot, so writes during the export do
/// not tear it) as `format` into a fresh copy for the object `uid`; the raw layer is the export
/// itself (raw) or imported from it (qcow2). The temporary snapshot is removed afterwards; a
/// crash leaves it for the redo, which reuses it.
pub async fn prepare_export(
    layout: &Layout,
    engine: Arc<Engine>,
    image: &str,
    uid: &str,
    volume: &str,
    format: ImageFormat,
    expected: Option<&str>,
) -> Result<CopyMeta, LocalError> {
    layout.reset()?;
    let snapshot = export_snapshot_name(image, uid);
    let (volume, image, uid) = (volume.to_owned(), image.to_owned(), uid.to_owned());
    let layout = layout.clone();
    let expected = expected.map(str::to_owned);
    blocking(move || {
        let engine_error = |source| LocalError::Engine {
            volume: volume.clone(),
            source,
        };
        let vol = engine.open_volume(&volume).map_err(engine_error)?;
        let taken = vol
            .list_snapshots()
            .map_err(engine_error)?
            .iter()
            .any(|s| s.name == snapshot);
        if !taken {
            let labels = [(EXPORT_LABEL.to_owned(), image.clone())].into();
            vol.snapshot(&snapshot, labels).map_err(engine_error)?;
        }
        let export = || -> Result<engine::image::ExportedImage, LocalError> {
            let reader = vol.snapshot_reader(&snapshot).map_err(engine_error)?;
            let tools = ImageTools::new();
            Ok(match format {
                ImageFormat::Raw => tools.export(&reader, &layout.raw(), ImageFormat::Raw)?,
                ImageFormat::Qcow2 => {
                    let file = layout.dir().join("image.qcow2");
                    let exported = tools.export(&reader, &file, ImageFormat::Qcow2)?;
                    tools.import_to_raw(&file, &layout.raw())?;
                    exported
                }
            })
        };
        let exported = export();
        // The temporary snapshot goes whether the export worked or not (a failure is final
        // unless retried, which takes a new one).
        let removed = vol.delete_snapshot(&snapshot).map_err(engine_error);
        let exported = exported?;
        removed?;
        check_sum(expected.as_deref(), &exported.sha512)?;
        let size = std::fs::metadata(layout.raw())
            .map_err(io_error(format!("reading {}", layout.raw().display())))?
            .len();
        let meta = CopyMeta {
            uid,
            checksum: exported.sha512,
            size,
            virtual_size: exported.virtual_size,
            format: format.as_str().to_owned(),
        };
        layout.commit(&meta)?;
        Ok(meta)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_snapshot_names_are_valid_engine_names() {
        assert_eq!(
            export_snapshot_name("img", "0f3c1a2b-1111-2222-3333-444455556666"),
            "bi-export-0f3c1a2b1111"
        );
        assert_eq!(export_snapshot_name("img", ""), "bi-export-img");
        assert!(export_snapshot_name(&"x".repeat(63), "").len() <= 63);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |status| LocalError::HttpStatus {
            url: "http://h/x".into(),
            status,
        };
        assert!(status(503).retryable());
        assert!(!status(404).retryable());
        assert!(
            !LocalError::ChecksumMismatch {
                expected: "a".into(),
                actual: "b".into()
            }
            .retryable()
        );
        assert!(LocalError::Interrupted.retryable());
    }
}
