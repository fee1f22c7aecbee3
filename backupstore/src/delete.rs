//! Deleting a backup with mark-and-sweep garbage collection of its blocks, and deleting a whole
//! backup volume. Both under the exclusive (type 2) lock.

use std::collections::HashSet;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::format::BackupConfig;
use crate::lock::{HeldLock, LockKind};
use crate::names::{
    backup_cfg, block_path, blocks_dir, checksum_from_file, validate_name, volume_cfg, volume_dir,
};
use crate::store::{Store, file_name};

/// Why the sweep of a delete was skipped (the backup cfg is gone either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepSkipped {
    /// A backup is in progress (or was interrupted): its blocks are not in any map yet.
    BackupInProgress(String),
    /// A backup's metadata could not be read, so its blocks cannot be counted.
    BackupUnreadable(String),
    /// The list of backups changed during the scan.
    BackupsChanged,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Unreferenced blocks removed.
    pub blocks_deleted: u64,
    /// Blocks still referenced by remaining backups.
    pub blocks_kept: u64,
    pub sweep_skipped: Option<SweepSkipped>,
}

impl Store {
    /// Deletes `backup` of `volume`, then collects blocks no remaining backup references.
    pub async fn delete_backup(&self, volume: &str, backup: &str) -> Result<DeleteOutcome> {
        validate_name("volume", volume)?;
        validate_name("backup", backup)?;
        self.unpark(volume).await?;
        let held = HeldLock::acquire(self, volume, LockKind::Exclusive, "delete").await?;
        let result = self.delete_locked(&held, volume, backup).await;
        let released = held.release().await;
        let outcome = result?;
        released?;
        Ok(outcome)
    }

    async fn delete_locked(
        &self,
        held: &HeldLock,
        volume: &str,
        backup: &str,
    ) -> Result<DeleteOutcome> {
        let rel = backup_cfg(volume, backup);
        if self.head(&rel).await?.is_none() {
            return Err(Error::BackupNotFound {
                target: self.label().to_string(),
                volume: volume.to_string(),
                backup: backup.to_string(),
            });
        }
        held.check()?;
        self.delete(&rel).await?;

        // Mark: every remaining backup's map, loaded one at a time.
        let names = self.list_backup_names(volume).await?;
        let mut referenced: HashSet<String> = HashSet::new();
        let mut skipped = None;
        let mut remaining: Vec<BackupConfig> = Vec::new();
        for name in &names {
            let cfg = match self.inspect_backup(volume, name).await {
                Ok(cfg) => cfg,
                Err(Error::BackupNotFound { .. }) => {
                    skipped.get_or_insert(SweepSkipped::BackupsChanged);
                    continue;
                }
                Err(Error::InvalidMetadata { .. }) => {
                    skipped.get_or_insert(SweepSkipped::BackupUnreadable(name.clone()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if cfg.in_progress() {
                skipped.get_or_insert(SweepSkipped::BackupInProgress(name.clone()));
                continue;
            }
            referenced.extend(cfg.blocks.iter().map(|b| b.block_checksum.clone()));
            // Keep only what recomputing LastBackup* needs, not the map.
            remaining.push(BackupConfig {
                blocks: Vec::new(),
                ..cfg
            });
        }
        if skipped.is_none() && self.list_backup_names(volume).await? != names {
            skipped = Some(SweepSkipped::BackupsChanged);
        }

        let listing = self.list_all(&blocks_dir(volume)).await?;
        let stored: Vec<String> = listing
            .iter()
            .filter_map(|l| checksum_from_file(file_name(&l.rel)).map(str::to_string))
            .collect();
        let mut blocks_deleted = 0;
        let mut blocks_kept = stored.len() as u64;
        if skipped.is_none() {
            let garbage: Vec<String> = stored
                .iter()
                .filter(|c| !referenced.contains(*c))
                .map(|c| block_path(volume, c))
                .collect();
            held.check()?;
            blocks_deleted = self.delete_many(garbage).await?;
            blocks_kept = stored.len() as u64 - blocks_deleted;
        }

        // Recompute LastBackup* and BlockCount.
        if let Some(mut vol) = self.load_volume_opt(volume).await? {
            let latest = remaining.iter().max_by(|a, b| {
                a.snapshot_created_at
                    .cmp(&b.snapshot_created_at)
                    .then_with(|| a.created_time.cmp(&b.created_time))
            });
            if skipped.is_none() || vol.last_backup_name == backup {
                match latest {
                    Some(l) => {
                        vol.last_backup_name = l.name.clone();
                        vol.last_backup_at = l.snapshot_created_at.clone();
                    }
                    None => {
                        vol.last_backup_name.clear();
                        vol.last_backup_at.clear();
                    }
                }
            }
            vol.block_count = blocks_kept as i64;
            held.check()?;
            self.put(&volume_cfg(volume), Bytes::from(vol.to_json()))
                .await?;
        }
        Ok(DeleteOutcome {
            blocks_deleted,
            blocks_kept,
            sweep_skipped: skipped,
        })
    }

    /// Deletes a whole backup volume: every object under its folder (one listing of that
    /// folder, batched deletes), under the exclusive lock. Never lists the rest of the store.
    pub async fn delete_volume(&self, volume: &str) -> Result<u64> {
        validate_name("volume", volume)?;
        if self.load_volume_opt(volume).await?.is_none() {
            return Err(Error::VolumeNotFound {
                target: self.label().to_string(),
                volume: volume.to_string(),
            });
        }
        self.unpark(volume).await?;
        let held = HeldLock::acquire(self, volume, LockKind::Exclusive, "volume delete").await?;
        let result = async {
            let own_lock = held.file();
            let all = self.list_all(&volume_dir(volume)).await?;
            // Metadata first (so a crash leaves no backup pointing at deleted blocks), then
            // blocks, then the rest; our own lock last.
            let (mut meta, mut rest): (Vec<String>, Vec<String>) = all
                .into_iter()
                .map(|l| l.rel)
                .filter(|r| *r != own_lock)
                .partition(|r| r.ends_with(".cfg"));
            meta.sort_by_key(|r| r.ends_with("volume.cfg"));
            held.check()?;
            let mut n = self.delete_many(meta).await?;
            rest.sort_by_key(|r| !r.ends_with(".blk"));
            n += self.delete_many(rest).await?;
            Ok::<_, Error>(n)
        }
        .await;
        let released = held.release().await;
        let n = result?;
        released?;
        Ok(n)
    }
}
