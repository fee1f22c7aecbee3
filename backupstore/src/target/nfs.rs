//! NFS targets: the mount commands Longhorn's nfs driver runs, and where the export is mounted.
//!
//! Longhorn mounts `<host>:<export>` with `mount -t nfs4 -o nfsvers=<v>,<options>`, trying
//! NFS 4.2, 4.1 and 4.0 in turn, with the options `actimeo=1,soft,timeo=300,retry=2` unless the
//! URL's `nfsOptions` replaces them (a user's options replace the defaults, they do not add to
//! them). The mount point is `<mount root>/<host with '.' → '_'>/<export>`, so one export has
//! one mount directory and a second client of the same target reuses it.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longhorn's default mount options for a backup target.
pub const DEFAULT_NFS_OPTIONS: &str = "actimeo=1,soft,timeo=300,retry=2";

/// NFS minor versions tried in order, as Longhorn does.
pub const NFS_VERSIONS: [&str; 3] = ["4.2", "4.1", "4.0"];

/// Where our mounts live by default (Longhorn's is `/var/lib/longhorn-backupstore-mounts`).
pub const DEFAULT_MOUNT_ROOT: &str = "/var/lib/bulwark-backupstore-mounts";

/// One `mount` invocation (no shell: arguments are passed as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCommand {
    pub program: String,
    pub args: Vec<String>,
}

impl fmt::Display for MountCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// The directory an export is mounted on, under `mount_root`.
pub fn mount_dir(mount_root: &Path, host: &str, export: &str) -> PathBuf {
    let host_dir: String = host
        .chars()
        .map(|c| match c {
            '.' => '_',
            // IPv6 brackets and colons make awkward directory names.
            '[' | ']' => '_',
            ':' => '-',
            c => c,
        })
        .collect();
    let mut dir = mount_root.join(host_dir);
    for segment in export.split('/').filter(|s| !s.is_empty()) {
        dir.push(segment);
    }
    dir
}

/// The mount commands to try, in order, until one succeeds. If the user's options already pin
/// a version (`vers=` or `nfsvers=`), that single command (with `-t nfs`) is the only attempt.
pub fn mount_commands(
    host: &str,
    export: &str,
    nfs_options: Option<&str>,
    dir: &Path,
) -> Vec<MountCommand> {
    let options = nfs_options.unwrap_or(DEFAULT_NFS_OPTIONS);
    let pins_version = options
        .split(',')
        .any(|o| o.starts_with("vers=") || o.starts_with("nfsvers="));
    let source = format!("{host}:{export}");
    // A pinned version may be NFSv3, which `-t nfs4` would refuse.
    let fs_type = if pins_version { "nfs" } else { "nfs4" };
    let command = |options: String| MountCommand {
        program: "mount".to_string(),
        args: vec![
            "-t".to_string(),
            fs_type.to_string(),
            "-o".to_string(),
            options,
            source.clone(),
            dir.display().to_string(),
        ],
    };
    if pins_version {
        return vec![command(options.to_string())];
    }
    NFS_VERSIONS
        .iter()
        .map(|version| command(format!("nfsvers={version},{options}")))
        .collect()
}

/// Whether `dir` is a mount point: its device differs from its parent's (or it is `/`).
pub fn is_mount_point(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata(dir)?;
    let Some(parent) = dir.parent() else {
        return Ok(true);
    };
    let parent = std::fs::metadata(parent)?;
    Ok(own.dev() != parent.dev() || own.ino() == parent.ino())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn default_options_try_each_nfs4_minor_version() {
        let dir = mount_dir(Path::new("/mnt/root"), "nfs.svc.local", "/opt/backupstore");
        assert_eq!(
            dir,
            PathBuf::from("/mnt/root/nfs_svc_local/opt/backupstore")
        );
        let commands = mount_commands("nfs.svc.local", "/opt/backupstore", None, &dir);
        let rendered: Vec<String> = commands.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "mount -t nfs4 -o nfsvers=4.2,actimeo=1,soft,timeo=300,retry=2 nfs.svc.local:/opt/backupstore /mnt/root/nfs_svc_local/opt/backupstore",
                "mount -t nfs4 -o nfsvers=4.1,actimeo=1,soft,timeo=300,retry=2 nfs.svc.local:/opt/backupstore /mnt/root/nfs_svc_local/opt/backupstore",
                "mount -t nfs4 -o nfsvers=4.0,actimeo=1,soft,timeo=300,retry=2 nfs.svc.local:/opt/backupstore /mnt/root/nfs_svc_local/opt/backupstore",
            ]
        );
    }

    #[test]
    fn user_options_replace_the_defaults() {
        let dir = PathBuf::from("/m/h/e");
        let commands = mount_commands("h", "/e", Some("soft,timeo=330,retrans=3"), &dir);
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0].args[3], "nfsvers=4.2,soft,timeo=330,retrans=3");
        assert!(commands.iter().all(|c| !c.args[3].contains("actimeo")));
    }

    #[test]
    fn a_pinned_version_is_the_only_attempt() {
        let dir = PathBuf::from("/m/h/e");
        let commands = mount_commands("h", "/e", Some("vers=3,nolock"), &dir);
        assert_eq!(
            commands,
            [MountCommand {
                program: "mount".into(),
                args: ["-t", "nfs", "-o", "vers=3,nolock", "h:/e", "/m/h/e"]
                    .map(String::from)
                    .to_vec(),
            }]
        );
    }

    #[test]
    fn ipv6_hosts_get_plain_directory_names() {
        let dir = mount_dir(Path::new("/r"), "[fd00::1]", "/x");
        assert_eq!(dir, PathBuf::from("/r/_fd00--1_/x"));
        let commands = mount_commands("[fd00::1]", "/x", None, &dir);
        assert_eq!(commands[0].args[4], "[fd00::1]:/x");
    }

    #[test]
    fn a_plain_directory_is_not_a_mount_point_and_root_is() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub).unwrap());
        assert!(is_mount_point(Path::new("/")).unwrap());
    }
}
