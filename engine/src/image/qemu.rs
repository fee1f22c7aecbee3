//! Running `qemu-img` (package `qemu-utils`) for the qcow2 side of imports and exports.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;

/// What `qemu-img info` tells about a qcow2 file.
#[derive(Debug)]
pub(crate) struct Qcow2Info {
    pub(crate) virtual_size: u64,
    /// A backing file or external data file the image reads from, if any.
    pub(crate) external_reference: Option<String>,
}

/// Runs `program args…`; output on success, a distinct error for "not installed" and "failed".
pub(crate) fn run(program: &Path, args: &[&OsStr]) -> Result<Vec<u8>, ImageError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ImageError::QemuImgMissing {
                    program: program.to_owned(),
                }
            } else {
                ImageError::QemuImgFailed {
                    command: describe(program, args),
                    status: "could not start".to_owned(),
                    stderr: source.to_string(),
                }
            }
        })?;
    if !output.status.success() {
        return Err(ImageError::QemuImgFailed {
            command: describe(program, args),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

fn describe(program: &Path, args: &[&OsStr]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().copied())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `qemu-img info` of a file already known to carry the qcow2 signature.
pub(crate) fn qcow2_info(program: &Path, path: &Path) -> Result<Qcow2Info, ImageError> {
    let stdout = run(
        program,
        &[
            OsStr::new("info"),
            OsStr::new("--output=json"),
            OsStr::new("-f"),
            OsStr::new("qcow2"),
            path.as_os_str(),
        ],
    )?;
    parse_info(path, &stdout)
}

fn parse_info(path: &Path, json: &[u8]) -> Result<Qcow2Info, ImageError> {
    let unexpected = |detail: &str| ImageError::QemuImgOutput {
        path: path.to_owned(),
        detail: detail.to_owned(),
    };
    let info: serde_json::Value =
        serde_json::from_slice(json).map_err(|err| unexpected(&err.to_string()))?;
    let virtual_size = info
        .get("virtual-size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| unexpected("no numeric \"virtual-size\""))?;
    let backing = info
        .get("backing-filename")
        .and_then(serde_json::Value::as_str);
    let data_file = info
        .pointer("/format-specific/data/data-file")
        .and_then(serde_json::Value::as_str);
    Ok(Qcow2Info {
        virtual_size,
        external_reference: backing.or(data_file).map(str::to_owned),
    })
}

/// A sibling path of `path` for work in progress (same directory, so a rename is atomic).
pub(crate) fn partial_path(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_reports_size_and_external_files() -> Result<(), ImageError> {
        let plain = br#"{"virtual-size": 10485760, "format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}"#;
        let info = parse_info(Path::new("a.qcow2"), plain)?;
        assert_eq!(info.virtual_size, 10_485_760);
        assert_eq!(info.external_reference, None);

        let backed = br#"{"virtual-size": 1, "backing-filename": "/etc/shadow"}"#;
        let info = parse_info(Path::new("b.qcow2"), backed)?;
        assert_eq!(info.external_reference.as_deref(), Some("/etc/shadow"));

        let data_file = br#"{"virtual-size": 1,
            "format-specific": {"data": {"data-file": "disk.raw"}}}"#;
        let info = parse_info(Path::new("c.qcow2"), data_file)?;
        assert_eq!(info.external_reference.as_deref(), Some("disk.raw"));

        let err = parse_info(Path::new("d.qcow2"), b"{}").expect_err("no size");
        assert!(matches!(err, ImageError::QemuImgOutput { .. }));
        Ok(())
    }
}
