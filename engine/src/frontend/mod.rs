//! Frontends that serve a volume to workloads: one plain file per volume through FUSE.
//!
//! [`MountedVolumes::mount`] mounts a directory in which every added volume appears as a regular
//! file named after the volume, as large as the volume. Reads, writes, `fsync` (reaches the disk
//! through [`VolumeIo::flush`]) and `fallocate(PUNCH_HOLE | ZERO_RANGE)` (→ [`VolumeIo::discard`])
//! go straight to the engine; a loop device on top gives a block device. Files are opened with
//! direct I/O, so the kernel keeps no second page cache and a write is in the engine when it is
//! acknowledged. Requests run on several threads, so one slow write (e.g. waiting while the
//! engine switches heads for a snapshot) does not stall reads, `stat` or other volumes.

mod filesystem;
mod registry;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::io::VolumeIo;
use filesystem::VolumeFs;
use registry::Registry;

/// How a volume directory is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseOptions {
    /// Threads answering kernel requests (each with its own `/dev/fuse` descriptor).
    pub threads: usize,
    /// Largest write the kernel sends in one request, in bytes. The kernel caps it at
    /// `fs.fuse.max_pages_limit` pages (1 MiB by default); larger buys nothing.
    pub max_write: u32,
    /// Let users other than the mounting one reach the files (`allow_other`). Access is still
    /// checked against the files' mode 0600 and owner (`default_permissions`): the owner is the
    /// owner of the mount-point directory.
    pub allow_other: bool,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            threads: 4,
            max_write: 1024 * 1024,
            allow_other: true,
        }
    }
}

/// A failure of the FUSE frontend; each names the path or volume and what to do.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(
        "mount point {path} cannot be used: {source} (create it as an empty directory; if a \
         previous agent died there, run `fusermount3 -u {path}` first)"
    )]
    MountPointUnusable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount point {path} is not a directory: give an empty directory")]
    MountPointNotDirectory { path: PathBuf },
    #[error("invalid FUSE options: {reason}")]
    InvalidOptions { reason: &'static str },
    #[error(
        "mounting FUSE at {path} failed: {source} (needs /dev/fuse and root or the setuid \
         `fusermount3` from the fuse3 package; with allow_other as non-root, `user_allow_other` \
         in /etc/fuse.conf)"
    )]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "volume name {name:?} cannot be a file name: {reason} (use 1-255 bytes without '/' or NUL, \
         not '.' or '..')"
    )]
    InvalidVolumeName { name: String, reason: &'static str },
    #[error("a volume named {name:?} is already served at this mount point: remove it first")]
    AlreadyServed { name: String },
    #[error("no volume named {name:?} is served at this mount point")]
    NotServed { name: String },
    #[error(
        "volume {name:?} is still open {open_handles} time(s) through FUSE: detach loop devices \
         (`losetup -d`) and close the file first"
    )]
    VolumeOpen { name: String, open_handles: u64 },
    #[error(
        "unmounting {path} failed: {source} (the mount is still in use, e.g. by a loop device; it \
         was detached lazily and disappears once the last user closes it)"
    )]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A mounted directory serving volumes as files. Unmounts on drop.
pub struct MountedVolumes {
    mount_point: PathBuf,
    registry: Arc<RwLock<Registry>>,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for MountedVolumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedVolumes")
            .field("mount_point", &self.mount_point)
            .field("volumes", &self.names())
            .finish()
    }
}

impl MountedVolumes {
    /// Mounts an (empty) FUSE directory at `mount_point`; add volumes with [`Self::add`].
    pub fn mount(mount_point: &Path, options: &FuseOptions) -> Result<Self, FrontendError> {
        if options.threads == 0 {
            return Err(FrontendError::InvalidOptions {
                reason: "threads must be at least 1",
            });
        }
        let metadata =
            std::fs::metadata(mount_point).map_err(|source| FrontendError::MountPointUnusable {
                path: mount_point.to_owned(),
                source,
            })?;
        if !metadata.is_dir() {
            return Err(FrontendError::MountPointNotDirectory {
                path: mount_point.to_owned(),
            });
        }
        let registry = Arc::new(RwLock::new(Registry::new()));
        let filesystem = VolumeFs {
            registry: Arc::clone(&registry),
            uid: metadata.uid(),
            gid: metadata.gid(),
            mounted_at: SystemTime::now(),
            max_write: options.max_write,
        };
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("bulwark".to_owned()),
            MountOption::Subtype("bulwark".to_owned()),
            MountOption::DefaultPermissions,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
            MountOption::NoAtime,
        ];
        // No `auto_unmount`: fuser implements it through a `fusermount3` helper, and in our
        // tests unmounting then hung. A mount left by a crashed agent is removed with
        // `fusermount3 -u` (see `FrontendError::MountPointUnusable`).
        config.acl = if options.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(options.threads);
        config.clone_fd = options.threads > 1;
        let session = fuser::spawn_mount(filesystem, mount_point, &config).map_err(|source| {
            FrontendError::Mount {
                path: mount_point.to_owned(),
                source,
            }
        })?;
        tracing::info!(mount_point = %mount_point.display(), "FUSE volume directory mounted");
        Ok(MountedVolumes {
            mount_point: mount_point.to_owned(),
            registry,
            session: Some(session),
        })
    }

    /// The mounted directory.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// Where volume `name` appears (whether or not it is served yet).
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.mount_point.join(name)
    }

    /// Serves `volume` as the file `name`; returns its path.
    pub fn add(&self, name: &str, volume: Arc<dyn VolumeIo>) -> Result<PathBuf, FrontendError> {
        check_volume_name(name)?;
        if !self.write_registry().insert(name, volume) {
            return Err(FrontendError::AlreadyServed {
                name: name.to_owned(),
            });
        }
        Ok(self.file_path(name))
    }

    /// Stops serving `name` and hands its volume back. Refused while the file is open (a
    /// loop device holds it open), so data in flight is never cut off.
    pub fn remove(&self, name: &str) -> Result<Arc<dyn VolumeIo>, FrontendError> {
        let mut registry = self.write_registry();
        let open_handles = match registry.get(name) {
            Some(served) => served.open_handles,
            None => {
                return Err(FrontendError::NotServed {
                    name: name.to_owned(),
                });
            }
        };
        if open_handles > 0 {
            return Err(FrontendError::VolumeOpen {
                name: name.to_owned(),
                open_handles,
            });
        }
        registry
            .remove(name)
            .map(|served| served.volume)
            .ok_or_else(|| FrontendError::NotServed {
                name: name.to_owned(),
            })
    }

    /// Names of the served volumes, sorted.
    pub fn names(&self) -> Vec<String> {
        self.registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names()
    }

    /// Unmounts and waits for the request threads to finish. If the mount is busy (a loop
    /// device still attached), it is detached lazily instead and the error says so.
    pub fn unmount(mut self) -> Result<(), FrontendError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), FrontendError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(source) => {
                // The request threads keep serving the open file until its last user lets go;
                // take the directory out of the namespace now so nothing new can open it.
                lazy_unmount(&self.mount_point);
                Err(FrontendError::Unmount {
                    path: self.mount_point.clone(),
                    source,
                })
            }
        }
    }

    fn write_registry(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for MountedVolumes {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_inner() {
            tracing::warn!(error = %err, "FUSE volume directory not cleanly unmounted");
        }
    }
}

/// Makes `mount_point` ready for [`MountedVolumes::mount`]: creates it (and its parents) when
/// missing, and takes away a FUSE mount left there by a process that died without unmounting
/// (every access to such a mount fails with `ENOTCONN`, so nothing could be served there again).
pub fn prepare_mount_point(mount_point: &Path) -> Result<(), FrontendError> {
    let unusable = |source| FrontendError::MountPointUnusable {
        path: mount_point.to_owned(),
        source,
    };
    match std::fs::metadata(mount_point) {
        Err(error) if error.raw_os_error() == Some(rustix::io::Errno::NOTCONN.raw_os_error()) => {
            tracing::warn!(mount_point = %mount_point.display(),
                "removing the FUSE mount of a process that died without unmounting");
            lazy_unmount(mount_point);
            std::fs::metadata(mount_point).map_err(unusable)?;
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(mount_point).map_err(unusable)
        }
        Err(error) => Err(unusable(error)),
        Ok(_) => Ok(()),
    }
}

/// `umount -l`, falling back to `fusermount3 -uz` for non-root users. Best effort: both failing
/// leaves a mount that the kernel removes when this process exits.
fn lazy_unmount(mount_point: &Path) {
    let attempts: [(&str, &[&str]); 2] = [("umount", &["-l"]), ("fusermount3", &["-u", "-z"])];
    for (program, args) in attempts {
        let status = Command::new(program).args(args).arg(mount_point).status();
        if matches!(status, Ok(status) if status.success()) {
            return;
        }
    }
    tracing::warn!(mount_point = %mount_point.display(), "lazy unmount failed");
}

fn check_volume_name(name: &str) -> Result<(), FrontendError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains('\0') {
        Some("it contains NUL")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FrontendError::InvalidVolumeName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_that_are_not_file_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "nul\0", &"x".repeat(256)] {
            let err = check_volume_name(bad).expect_err(bad);
            assert!(
                matches!(err, FrontendError::InvalidVolumeName { .. }),
                "{bad:?}"
            );
        }
        for good in ["pvc-1", "a.b", "x".repeat(255).as_str()] {
            assert!(check_volume_name(good).is_ok(), "{good:?}");
        }
    }
}
