//! Backing images: import raw or qcow2 files as a bottom layer, export volumes and snapshots as
//! raw or qcow2, SHA-512 checksums.
//!
//! Imports always produce a raw sparse file (the layer format of the engine): raw input is
//! copied block by block without its holes and zero blocks, qcow2 input goes through
//! `qemu-img convert`. Exports read only the data ranges of the source and write only non-zero
//! blocks, so holes stay holes; qcow2 exports convert that raw file with `qemu-img`. Every output
//! is written under a `.partial` name, fsynced and renamed, so a crash never leaves a truncated
//! image under the final name.

mod detect;
mod qemu;
mod sparse;

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::io::VolumeIo;
use detect::Detected;
use sparse::CopyFailure;

/// Layer files hold whole 4 KiB sectors; imported images are padded up to a multiple.
pub const SECTOR_SIZE: u64 = 4096;

/// Image file formats this module reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    /// The name qemu-img and Longhorn use for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = ImageError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "raw" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(ImageError::UnknownFormatName {
                name: other.to_owned(),
            }),
        }
    }
}

/// A failure to import, export or checksum an image; each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image format {name:?} is not supported: use \"raw\" or \"qcow2\"")]
    UnknownFormatName { name: String },
    #[error("cannot read image {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a regular file: give the path of an image file")]
    NotAFile { path: PathBuf },
    #[error("{path} is empty: an image needs at least one byte of disk")]
    Empty { path: PathBuf },
    #[error("{path} is a {what}, not a disk image: {fix}")]
    NotAnImage {
        path: PathBuf,
        what: &'static str,
        fix: &'static str,
    },
    #[error(
        "{path} is a {format} image; only raw and qcow2 are imported: convert it first with \
         `qemu-img convert -O qcow2 {path} image.qcow2`"
    )]
    UnsupportedFormat { path: PathBuf, format: &'static str },
    #[error(
        "qcow2 image {path} reads from another file ({reference}); flatten it into one file first \
         with `qemu-img convert -O qcow2 {path} flat.qcow2`"
    )]
    ExternalReference { path: PathBuf, reference: String },
    #[error(
        "`{program}` was not found, and qcow2 images need it: install the qemu-utils package \
         (or point the engine at qemu-img)",
        program = program.display()
    )]
    QemuImgMissing { program: PathBuf },
    #[error("`{command}` failed ({status}): {stderr}")]
    QemuImgFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`qemu-img info` output for {path} is not understood: {detail}")]
    QemuImgOutput { path: PathBuf, detail: String },
    #[error("{path} already exists: delete it or choose another destination")]
    DestinationExists { path: PathBuf },
    #[error("writing {path} failed: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the exported volume at byte {offset} failed: {source}")]
    ReadSource {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

/// What an export reads: a volume's current view or a snapshot's view.
pub trait ImageSource {
    /// Size in bytes (the exported image's virtual size).
    fn size(&self) -> u64;
    /// Fill `buf` with the bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Ranges that may hold data; everything outside reads as zeros. A superset is correct
    /// (only slower), so a source that cannot tell returns the whole range.
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>>;
}

/// Exports any [`VolumeIo`] by reading all of it (zero blocks still become holes).
pub struct FullScan<'a>(pub &'a dyn VolumeIo);

impl ImageSource for FullScan<'_> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_at(offset, buf)
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        // One range covering the whole volume (not a vector of its offsets).
        Ok(std::iter::once(0..self.0.size()).collect())
    }
}

/// A snapshot's frozen view: only the sectors allocated in its chain are read.
impl ImageSource for crate::SnapshotReader {
    fn size(&self) -> u64 {
        crate::SnapshotReader::size(self)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        crate::SnapshotReader::read_at(self, offset, buf)
    }
    fn data_ranges(&self) -> io::Result<Vec<Range<u64>>> {
        let extents = self.allocated_extents(SECTOR_SIZE)?;
        Ok(extents
            .iter()
            .map(|extent| extent.offset..extent.end())
            .collect())
    }
}

/// The result of an import: a raw sparse file ready to be a volume's bottom layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The raw sparse file written.
    pub path: PathBuf,
    /// The format the source was in.
    pub source_format: ImageFormat,
    /// The guest-visible size of the source image.
    pub virtual_size: u64,
    /// Length of the raw file: `virtual_size` rounded up to whole sectors.
    pub layer_size: u64,
}

impl ImportedImage {
    /// The bottom layer for [`crate::Engine::create_volume`], recorded under `name` (e.g. the
    /// BackingImage's name). The volume must be at least [`Self::layer_size`] bytes.
    pub fn backing_layer(&self, name: &str) -> crate::BackingLayer {
        crate::BackingLayer {
            name: name.to_owned(),
            raw_path: self.path.clone(),
        }
    }
}

/// The result of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedImage {
    pub path: PathBuf,
    pub format: ImageFormat,
    /// The guest-visible size (the source's size).
    pub virtual_size: u64,
    /// SHA-512 of the file's bytes, 128 lowercase hex digits (Longhorn's backing-image checksum).
    pub sha512: String,
}

/// Imports and exports, with the `qemu-img` to use for qcow2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTools {
    qemu_img: PathBuf,
}

impl Default for ImageTools {
    fn default() -> Self {
        ImageTools {
            qemu_img: PathBuf::from("qemu-img"),
        }
    }
}

impl ImageTools {
    /// Uses `qemu-img` from `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the given `qemu-img` program.
    pub fn with_qemu_img(qemu_img: impl Into<PathBuf>) -> Self {
        ImageTools {
            qemu_img: qemu_img.into(),
        }
    }

    /// The format of the image at `path`, from its signature; refuses files that are not raw or
    /// qcow2 disk images with a message that says what they are.
    pub fn detect_format(&self, path: &Path) -> Result<ImageFormat, ImageError> {
        let mut file = open_image(path)?;
        let mut header = Vec::with_capacity(detect::HEADER_LEN);
        (&mut file)
            .take(detect::HEADER_LEN as u64)
            .read_to_end(&mut header)
            .map_err(|source| ImageError::Open {
                path: path.to_owned(),
                source,
            })?;
        if header.is_empty() {
            return Err(ImageError::Empty {
                path: path.to_owned(),
            });
        }
        match detect::detect(&header) {
            Detected::Supported(format) => Ok(format),
            Detected::OtherDiskFormat(format) => Err(ImageError::UnsupportedFormat {
                path: path.to_owned(),
                format,
            }),
            Detected::NotAnImage { what, fix } => Err(ImageError::NotAnImage {
                path: path.to_owned(),
                what,
                fix,
            }),
        }
    }

    /// Converts the raw or qcow2 image `source` into the raw sparse file `dest` (which must not
    /// exist), padded to whole sectors. Raw input needs no `qemu-img`.
    pub fn import_to_raw(&self, source: &Path, dest: &Path) -> Result<ImportedImage, ImageError> {
        let source_format = self.detect_format(source)?;
        refuse_existing(dest)?;
        let partial = qemu::partial_path(dest, ".partial");
        remove_stale(&partial)?;
        let virtual_size = match source_format {
            ImageFormat::Raw => copy_raw_sparse(source, &partial)?,
            ImageFormat::Qcow2 => self.convert_qcow2_to_raw(source, &partial)?,
        };
        let layer_size = virtual_size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        let written = OpenOptions::new()
            .write(true)
            .open(&partial)
            .map_err(|source| write_error(&partial, source))?;
        written
            .set_len(layer_size)
            .and_then(|()| written.sync_all())
            .map_err(|source| write_error(&partial, source))?;
        commit(&partial, dest)?;
        Ok(ImportedImage {
            path: dest.to_owned(),
            source_format,
            virtual_size,
            layer_size,
        })
    }

    fn convert_qcow2_to_raw(&self, source: &Path, dest: &Path) -> Result<u64, ImageError> {
        let info = qemu::qcow2_info(&self.qemu_img, source)?;
        if let Some(reference) = info.external_reference {
            // A backing or data file would make qemu-img read a file the user named inside the
            // image, not one they handed us (e.g. /etc/shadow).
            return Err(ImageError::ExternalReference {
                path: source.to_owned(),
                reference,
            });
        }
        qemu::run(
            &self.qemu_img,
            &[
                OsStr::new("convert"),
                OsStr::new("-f"),
                OsStr::new("qcow2"),
                OsStr::new("-O"),
                OsStr::new("raw"),
                // Zero runs of 4 KiB or more become holes.
                OsStr::new("-S"),
                OsStr::new("4k"),
                source.as_os_str(),
                dest.as_os_str(),
            ],
        )?;
        Ok(info.virtual_size)
    }

    /// Writes `source` to `dest` (which must not exist) as a raw sparse or a qcow2 image, and
    /// returns its SHA-512.
    pub fn export(
        &self,
        source: &dyn ImageSource,
        dest: &Path,
        format: ImageFormat,
    ) -> Result<ExportedImage, ImageError> {
        refuse_existing(dest)?;
        let raw_partial = qemu::partial_path(dest, ".raw.partial");
        remove_stale(&raw_partial)?;
        write_raw_sparse(source, &raw_partial)?;
        match format {
            ImageFormat::Raw => commit(&raw_partial, dest)?,
            ImageFormat::Qcow2 => {
                let qcow_partial = qemu::partial_path(dest, ".partial");
                remove_stale(&qcow_partial)?;
                let converted = qemu::run(
                    &self.qemu_img,
                    &[
                        OsStr::new("convert"),
                        OsStr::new("-f"),
                        OsStr::new("raw"),
                        OsStr::new("-O"),
                        OsStr::new("qcow2"),
                        raw_partial.as_os_str(),
                        qcow_partial.as_os_str(),
                    ],
                );
                let _ = std::fs::remove_file(&raw_partial);
                converted?;
                File::open(&qcow_partial)
                    .and_then(|file| file.sync_all())
                    .map_err(|source| write_error(&qcow_partial, source))?;
                commit(&qcow_partial, dest)?;
            }
        }
        Ok(ExportedImage {
            path: dest.to_owned(),
            format,
            virtual_size: source.size(),
            sha512: sha512_file(dest)?,
        })
    }
}

/// SHA-512 of the bytes of the file at `path` (holes hash as zeros without being read), as 128
/// lowercase hex digits — what `sha512sum` prints.
pub fn sha512_file(path: &Path) -> Result<String, ImageError> {
    let open_error = |source| ImageError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_error)?;
    let len = file.metadata().map_err(open_error)?.len();
    let extents = sparse::data_extents(&file, len).map_err(open_error)?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let zeros = vec![0u8; buf.len()];
    let mut hash_range = |range: Range<u64>, data: bool| -> io::Result<()> {
        let mut offset = range.start;
        while offset < range.end {
            let step = usize::try_from(range.end - offset).map_or(buf.len(), |n| n.min(buf.len()));
            if data {
                file.read_exact_at(&mut buf[..step], offset)?;
                hasher.update(&buf[..step]);
            } else {
                hasher.update(&zeros[..step]);
            }
            offset += step as u64;
        }
        Ok(())
    };
    let mut at = 0;
    for extent in extents {
        hash_range(at..extent.start, false).map_err(open_error)?;
        hash_range(extent.clone(), true).map_err(open_error)?;
        at = extent.end;
    }
    hash_range(at..len, false).map_err(open_error)?;
    Ok(hex::encode(hasher.finalize()))
}

fn open_image(path: &Path) -> Result<File, ImageError> {
    let open_error = |source| ImageError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_error)?;
    if !file.metadata().map_err(open_error)?.is_file() {
        return Err(ImageError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

/// Copies a raw image without its holes and zero blocks; returns its size.
fn copy_raw_sparse(source: &Path, dest: &Path) -> Result<u64, ImageError> {
    let open_error = |err| ImageError::Open {
        path: source.to_owned(),
        source: err,
    };
    let input = open_image(source)?;
    let size = input.metadata().map_err(open_error)?.len();
    let extents = sparse::data_extents(&input, size).map_err(open_error)?;
    let output = create_sized(dest, size)?;
    sparse::copy_nonzero_blocks(
        |offset, buf| input.read_exact_at(buf, offset),
        &extents,
        &output,
    )
    .map_err(|failure| match failure {
        CopyFailure::Read { source: err, .. } => open_error(err),
        CopyFailure::Write { source, .. } => write_error(dest, source),
    })?;
    Ok(size)
}

/// Writes `source` as a raw sparse file of its size, fsynced.
fn write_raw_sparse(source: &dyn ImageSource, dest: &Path) -> Result<(), ImageError> {
    let size = source.size();
    let ranges: Vec<Range<u64>> = source
        .data_ranges()
        .map_err(|err| ImageError::ReadSource {
            offset: 0,
            source: err,
        })?
        .into_iter()
        .map(|range| range.start.min(size)..range.end.min(size))
        .filter(|range| !range.is_empty())
        .collect();
    let output = create_sized(dest, size)?;
    sparse::copy_nonzero_blocks(|offset, buf| source.read_at(offset, buf), &ranges, &output)
        .map_err(|failure| match failure {
            CopyFailure::Read { offset, source } => ImageError::ReadSource { offset, source },
            CopyFailure::Write { source, .. } => write_error(dest, source),
        })?;
    output
        .sync_all()
        .map_err(|source| write_error(dest, source))
}

fn create_sized(path: &Path, size: u64) -> Result<File, ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| write_error(path, source))?;
    file.set_len(size)
        .map_err(|source| write_error(path, source))?;
    Ok(file)
}

fn refuse_existing(dest: &Path) -> Result<(), ImageError> {
    if dest.symlink_metadata().is_ok() {
        return Err(ImageError::DestinationExists {
            path: dest.to_owned(),
        });
    }
    Ok(())
}

/// Removes what an interrupted earlier run left behind.
fn remove_stale(partial: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(partial) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(write_error(partial, err)),
        _ => Ok(()),
    }
}

/// Renames a finished, fsynced `partial` to `dest` and makes the rename durable.
fn commit(partial: &Path, dest: &Path) -> Result<(), ImageError> {
    std::fs::rename(partial, dest).map_err(|source| write_error(dest, source))?;
    let parent = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| write_error(parent, source))
}

fn write_error(path: &Path, source: io::Error) -> ImageError {
    ImageError::Write {
        path: path.to_owned(),
        source,
    }
}
