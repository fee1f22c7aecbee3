//! Listing and inspecting volumes and backups, and loading their metadata files.

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::format::{BackupConfig, VolumeConfig};
use crate::names::{
    VOLUMES_DIR, backup_cfg, backup_name_from_file, backups_dir, validate_name, volume_cfg,
    volume_dir,
};
use crate::store::{Store, file_name};

/// How many metadata requests a listing keeps in flight.
const LIST_CONCURRENCY: usize = 16;

/// One backup of a volume as a listing reports it.
#[derive(Debug, Clone)]
pub struct BackupEntry {
    pub name: String,
    /// The backup's metadata, or why it could not be read.
    pub config: std::result::Result<BackupConfig, String>,
}

impl Store {
    fn invalid(&self, object: &str, reason: impl ToString) -> Error {
        Error::InvalidMetadata {
            target: self.label().to_string(),
            object: object.to_string(),
            reason: reason.to_string(),
        }
    }

    /// `volume.cfg` of `volume`, or `None` if the volume has no backups here.
    pub(crate) async fn load_volume_opt(&self, volume: &str) -> Result<Option<VolumeConfig>> {
        let rel = volume_cfg(volume);
        match self.get_opt(&rel).await? {
            None => Ok(None),
            Some(data) => VolumeConfig::from_json(&data)
                .map(Some)
                .map_err(|e| self.invalid(&rel, e)),
        }
    }

    /// `volume.cfg` of `volume`; a missing volume is [`Error::VolumeNotFound`].
    pub async fn inspect_volume(&self, volume: &str) -> Result<VolumeConfig> {
        validate_name("volume", volume)?;
        self.load_volume_opt(volume)
            .await?
            .ok_or_else(|| Error::VolumeNotFound {
                target: self.label().to_string(),
                volume: volume.to_string(),
            })
    }

    /// The metadata of one backup; a missing one is [`Error::BackupNotFound`].
    pub async fn inspect_backup(&self, volume: &str, backup: &str) -> Result<BackupConfig> {
        validate_name("volume", volume)?;
        validate_name("backup", backup)?;
        let rel = backup_cfg(volume, backup);
        match self.get(&rel).await {
            Ok(data) => BackupConfig::from_json(&data).map_err(|e| self.invalid(&rel, e)),
            Err(Error::NotFound { .. }) => Err(Error::BackupNotFound {
                target: self.label().to_string(),
                volume: volume.to_string(),
                backup: backup.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Names of the volume's backups (from one listing of its `backups/` folder), sorted.
    pub async fn list_backup_names(&self, volume: &str) -> Result<Vec<String>> {
        validate_name("volume", volume)?;
        let (files, _) = self.list_dir(&backups_dir(volume)).await?;
        let mut names: Vec<String> = files
            .iter()
            .filter_map(|f| backup_name_from_file(file_name(&f.rel)).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every backup of `volume` with its metadata (loaded concurrently), sorted by name.
    pub async fn list_backups(&self, volume: &str) -> Result<Vec<BackupEntry>> {
        let names = self.list_backup_names(volume).await?;
        let entries = futures::stream::iter(names)
            .map(|name| async move {
                let config = self
                    .inspect_backup(volume, &name)
                    .await
                    .map_err(|e| e.to_string());
                BackupEntry { name, config }
            })
            .buffered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        Ok(entries)
    }

    /// Names of every volume with a backup volume in the store, sorted. Walks the two levels of
    /// hash folders with delimiter listings (never lists blocks).
    pub async fn list_volumes(&self) -> Result<Vec<String>> {
        let (_, level1) = self.list_dir(VOLUMES_DIR).await?;
        let level2: Vec<String> = futures::stream::iter(level1)
            .map(|d1| async move {
                let (_, d2s) = self.list_dir(&format!("{VOLUMES_DIR}/{d1}")).await?;
                Ok::<_, Error>(
                    d2s.into_iter()
                        .map(move |d2| format!("{d1}/{d2}"))
                        .collect::<Vec<_>>(),
                )
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        let mut volumes: Vec<String> = futures::stream::iter(level2)
            .map(|d| async move {
                let dir = format!("{VOLUMES_DIR}/{d}");
                let (_, vols) = self.list_dir(&dir).await?;
                // Only volumes stored under their own hash (anything else is not ours to show).
                Ok::<_, Error>(
                    vols.into_iter()
                        .filter(|v| {
                            validate_name("volume", v).is_ok()
                                && volume_dir(v) == format!("{dir}/{v}")
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        volumes.sort();
        Ok(volumes)
    }
}
