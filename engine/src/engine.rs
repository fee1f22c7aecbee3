//! The data directory: creating, opening, listing and deleting volumes.
//!
//! Layout: `<data_dir>/volumes/<name>/` holds `volume.json`, the `layer-*.img` files and a
//! `lock` file. A volume is created in a `.creating-*` directory and renamed into place, and
//! deleted by renaming it to `.deleting-*` first, so a crash never leaves a half volume.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::layer::{COPY_CHUNK, LayerFile, sync_dir};
use crate::meta::{LayerMeta, Role, VolumeMeta, layer_file_name, name_problem};
use crate::sector::{SECTOR, align_down, align_up};
use crate::volume::Volume;

const VOLUMES_DIR: &str = "volumes";
const CREATING_PREFIX: &str = ".creating-";
const DELETING_PREFIX: &str = ".deleting-";

/// A backing image to place at the bottom of a new volume, read from a raw (sparse) file.
/// qcow2 images are converted to raw first (see [`crate::image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingLayer {
    /// Name recorded in the volume's metadata (e.g. the BackingImage's name).
    pub name: String,
    /// Raw image file; its holes stay holes, its size must not exceed the volume's.
    pub raw_path: PathBuf,
}

/// Volumes under one data directory.
#[derive(Debug)]
pub struct Engine {
    volumes_dir: PathBuf,
    open: Mutex<HashMap<String, Weak<Volume>>>,
}

impl Engine {
    /// Opens (creating if needed) the data directory, checks that its filesystem tracks 4 KiB
    /// sectors exactly, and removes leftovers of interrupted creates and deletes.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Engine> {
        let volumes_dir = data_dir.as_ref().join(VOLUMES_DIR);
        fs::create_dir_all(&volumes_dir).map_err(|e| {
            Error::io(
                format!("creating data directory {}", volumes_dir.display()),
                e,
            )
        })?;
        probe_sector_tracking(&volumes_dir)?;
        for entry in read_dir(&volumes_dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(CREATING_PREFIX) || name.starts_with(DELETING_PREFIX) {
                tracing::info!(
                    dir = name,
                    "removing leftover of an interrupted create or delete"
                );
                fs::remove_dir_all(entry.path())
                    .map_err(|e| Error::io(format!("removing {}", entry.path().display()), e))?;
            }
        }
        Ok(Engine {
            volumes_dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn volume_dir(&self, name: &str) -> Result<PathBuf> {
        if let Some(reason) = name_problem(name) {
            return Err(Error::InvalidVolumeName {
                name: name.to_string(),
                reason,
            });
        }
        Ok(self.volumes_dir.join(name))
    }

    /// Creates volume `name` of `size_bytes` (a positive multiple of 4096), optionally on top of
    /// a backing image, and opens it.
    pub fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        backing: Option<BackingLayer>,
    ) -> Result<Arc<Volume>> {
        let dir = self.volume_dir(name)?;
        if size_bytes == 0 || !size_bytes.is_multiple_of(SECTOR) {
            return Err(Error::InvalidSize { size: size_bytes });
        }
        // Held across the create so two creates of one name cannot share the staging directory.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if dir.exists() {
            return Err(Error::VolumeExists {
                name: name.to_string(),
                dir: self.volumes_dir.clone(),
            });
        }
        let tmp = self.volumes_dir.join(format!("{CREATING_PREFIX}{name}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)
                .map_err(|e| Error::io(format!("removing {}", tmp.display()), e))?;
        }
        fs::create_dir(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        let built = build_volume_dir(&tmp, name, size_bytes, backing.as_ref());
        if let Err(e) = built {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &dir)
            .map_err(|e| Error::io(format!("renaming {} into place", tmp.display()), e))?;
        sync_dir(&self.volumes_dir)
            .map_err(|e| Error::io(format!("syncing {}", self.volumes_dir.display()), e))?;
        Self::open_locked(&mut open, name, &dir, &self.volumes_dir)
    }

    /// Opens volume `name`; returns the same handle while one is alive in this process.
    pub fn open_volume(&self, name: &str) -> Result<Arc<Volume>> {
        let dir = self.volume_dir(name)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        Self::open_locked(&mut open, name, &dir, &self.volumes_dir)
    }

    fn open_locked(
        open: &mut HashMap<String, Weak<Volume>>,
        name: &str,
        dir: &Path,
        volumes_dir: &Path,
    ) -> Result<Arc<Volume>> {
        if let Some(v) = open.get(name).and_then(Weak::upgrade) {
            return Ok(v);
        }
        if !dir.join(crate::meta::META_FILE).exists() {
            return Err(Error::VolumeNotFound {
                name: name.to_string(),
                dir: volumes_dir.to_path_buf(),
            });
        }
        let volume = Arc::new(Volume::open(name, dir)?);
        open.insert(name.to_string(), Arc::downgrade(&volume));
        Ok(volume)
    }

    /// Deletes volume `name` and all its snapshots. Refused while a handle to it is alive.
    pub fn delete_volume(&self, name: &str) -> Result<()> {
        let dir = self.volume_dir(name)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.get(name).and_then(Weak::upgrade).is_some() {
            return Err(Error::VolumeInUse {
                name: name.to_string(),
            });
        }
        if !dir.exists() {
            return Err(Error::VolumeNotFound {
                name: name.to_string(),
                dir: self.volumes_dir.clone(),
            });
        }
        // Fails if another process holds the volume; works even if its metadata is corrupt.
        drop(crate::volume::lock_volume_dir(name, &dir)?);
        open.remove(name);
        let doomed = self.volumes_dir.join(format!("{DELETING_PREFIX}{name}"));
        fs::rename(&dir, &doomed)
            .map_err(|e| Error::io(format!("renaming {} for deletion", dir.display()), e))?;
        sync_dir(&self.volumes_dir)
            .map_err(|e| Error::io(format!("syncing {}", self.volumes_dir.display()), e))?;
        fs::remove_dir_all(&doomed)
            .map_err(|e| Error::io(format!("removing {}", doomed.display()), e))
    }

    /// Names of all volumes, sorted.
    pub fn list_volumes(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = read_dir(&self.volumes_dir)?
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| name_problem(n).is_none())
            .collect();
        names.sort();
        Ok(names)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let ctx = || format!("listing {}", dir.display());
    fs::read_dir(dir)
        .map_err(|e| Error::io(ctx(), e))?
        .map(|e| e.map_err(|e| Error::io(ctx(), e)))
        .collect()
}

/// Writes the layer files and metadata of a new volume into `dir`.
fn build_volume_dir(
    dir: &Path,
    name: &str,
    size: u64,
    backing: Option<&BackingLayer>,
) -> Result<()> {
    let mut meta = VolumeMeta::new(name, size);
    let now = jiff::Timestamp::now();
    let mut parent = None;
    if let Some(backing) = backing {
        let path = dir.join(layer_file_name(1));
        import_raw(&backing.raw_path, &path, size)?;
        meta.layers.insert(
            1,
            LayerMeta {
                parent: None,
                created: now,
                role: Role::Backing {
                    name: backing.name.clone(),
                },
            },
        );
        parent = Some(1);
    }
    let head = if parent.is_some() { 2 } else { 1 };
    let path = dir.join(layer_file_name(head));
    LayerFile::create(&path, size)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    meta.layers.insert(
        head,
        LayerMeta {
            parent,
            created: now,
            role: Role::Head,
        },
    );
    meta.head = head;
    meta.store(dir, || Ok(()))?;
    sync_dir(dir).map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

/// Copies the data of a raw image into a new layer file, sector by sector, skipping holes and
/// all-zero sectors (nothing lies below a backing layer, so a hole reads as zeros).
fn import_raw(raw: &Path, dest: &Path, volume_size: u64) -> Result<()> {
    let bad = |reason: String| Error::InvalidBacking {
        path: raw.to_path_buf(),
        reason,
    };
    let source = LayerFile::open_read_only(raw).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let len = source
        .len()
        .map_err(|e| bad(format!("cannot read its size: {e}")))?;
    if len > volume_size {
        return Err(bad(format!(
            "the image is {len} bytes, larger than the volume's {volume_size} bytes; create the volume at least as large as the image"
        )));
    }
    let layer = LayerFile::create(dest, volume_size)
        .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    let spans = source
        .data_spans(0, len)
        .map_err(|e| bad(format!("cannot list its extents: {e}")))?;
    let mut buf = vec![0u8; COPY_CHUNK as usize];
    for (s, e) in spans {
        let (s, e) = (align_down(s, SECTOR), align_up(e, SECTOR));
        let mut pos = s;
        while pos < e {
            let n = (e - pos).min(COPY_CHUNK) as usize;
            source
                .read_exact_at(&mut buf[..n], pos)
                .map_err(|e| bad(format!("read failed: {e}")))?;
            for (i, sector) in buf[..n].chunks(SECTOR as usize).enumerate() {
                if sector.iter().any(|b| *b != 0) {
                    let at = pos + (i as u64) * SECTOR;
                    layer
                        .write_all_at(sector, at)
                        .map_err(|e| Error::io(format!("writing {}", dest.display()), e))?;
                }
            }
            pos += n as u64;
        }
    }
    layer
        .sync_all()
        .map_err(|e| Error::io(format!("syncing {}", dest.display()), e))
}

/// Refuses filesystems on which "this layer has sector N" cannot be answered exactly (an
/// allocation unit above 4 KiB, no real SEEK_DATA support, no hole punching): there, a hole
/// next to a written sector would read as data and hide the layers below.
fn probe_sector_tracking(dir: &Path) -> Result<()> {
    let path = dir.join(format!(".probe-{}", std::process::id()));
    let _ = fs::remove_file(&path);
    let unsupported = |detail: String| Error::UnsupportedFilesystem {
        path: dir.to_path_buf(),
        detail,
    };
    let result = (|| {
        let probe = LayerFile::create(&path, 4 * SECTOR)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        probe
            .write_all_at(&[0xA5; SECTOR as usize], SECTOR)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let spans = probe
            .data_spans(0, 4 * SECTOR)
            .map_err(|e| unsupported(format!("SEEK_DATA/SEEK_HOLE failed: {e}")))?;
        if spans != [(SECTOR, 2 * SECTOR)] {
            return Err(unsupported(format!(
                "one written 4 KiB sector at 4096 showed as data {spans:?}"
            )));
        }
        // Discards need hole punching at sector granularity.
        probe
            .punch_hole(SECTOR, 2 * SECTOR)
            .map_err(|e| unsupported(format!("punching a hole failed: {e}")))?;
        let spans = probe
            .data_spans(0, 4 * SECTOR)
            .map_err(|e| unsupported(format!("SEEK_DATA/SEEK_HOLE failed: {e}")))?;
        if !spans.is_empty() {
            return Err(unsupported(format!(
                "a punched 4 KiB sector still showed as data {spans:?}"
            )));
        }
        Ok(())
    })();
    let _ = fs::remove_file(&path);
    result
}
