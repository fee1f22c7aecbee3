//! Verify (ours): read back every block the volume's backups reference, check its hash, and
//! report missing or corrupt blocks together with the backups they break.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use crate::compress::{Compression, with_open_block};
use crate::error::{Error, Result};
use crate::lock::{HeldLock, LockKind};
use crate::names::{block_path, validate_name};
use crate::store::Store;

/// What is wrong with one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockProblem {
    Missing,
    Corrupt(String),
}

/// One damaged block and the backups that reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedBlock {
    pub checksum: String,
    pub problem: BlockProblem,
    pub backups: BTreeSet<String>,
}

/// The result of a verify run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Completed backups whose maps were checked.
    pub backups_checked: Vec<String>,
    /// Backups skipped: in progress, or metadata unreadable (with the reason).
    pub backups_skipped: Vec<(String, String)>,
    pub blocks_checked: u64,
    pub bytes_read: u64,
    pub damaged: Vec<DamagedBlock>,
    /// Backups that cannot be restored byte-exact.
    pub broken_backups: BTreeSet<String>,
}

impl VerifyReport {
    pub fn is_healthy(&self) -> bool {
        self.damaged.is_empty()
            && self
                .backups_skipped
                .iter()
                .all(|(_, why)| why == "in progress")
    }
}

impl Store {
    /// Verifies every completed backup of `volume` (or only `only`), with `workers` blocks in
    /// flight. Each distinct block is read once. Holds the shared lock so no delete runs.
    pub async fn verify(
        &self,
        volume: &str,
        only: Option<&str>,
        workers: usize,
    ) -> Result<VerifyReport> {
        validate_name("volume", volume)?;
        let held = match self.take_parked(volume).await {
            Some(held) => held,
            None => HeldLock::acquire(self, volume, LockKind::Shared, "verify").await?,
        };
        let result = self.verify_locked(volume, only, workers).await;
        let released = self.finish_shared(held).await;
        let report = result?;
        released?;
        Ok(report)
    }

    async fn verify_locked(
        &self,
        volume: &str,
        only: Option<&str>,
        workers: usize,
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let names = match only {
            Some(b) => {
                validate_name("backup", b)?;
                vec![b.to_string()]
            }
            None => self.list_backup_names(volume).await?,
        };
        // checksum -> (compression, block size, backups)
        let mut users: BTreeMap<String, (Compression, u64, BTreeSet<String>)> = BTreeMap::new();
        for name in names {
            let cfg = match self.inspect_backup(volume, &name).await {
                Ok(cfg) => cfg,
                Err(e @ Error::BackupNotFound { .. }) if only.is_some() => return Err(e),
                Err(e) => {
                    report.backups_skipped.push((name, e.to_string()));
                    continue;
                }
            };
            if cfg.in_progress() {
                report.backups_skipped.push((name, "in progress".into()));
                continue;
            }
            let (compression, bs) = match (
                Compression::parse(&cfg.compression_method),
                cfg.block_size(),
            ) {
                (Ok(c), Ok(bs)) => (c, bs),
                (Err(e), _) => {
                    report.backups_skipped.push((name.clone(), e.to_string()));
                    report.broken_backups.insert(name);
                    continue;
                }
                (_, Err(q)) => {
                    report
                        .backups_skipped
                        .push((name.clone(), format!("backup-block-size {q:?} is invalid")));
                    report.broken_backups.insert(name);
                    continue;
                }
            };
            if let Err(reason) = crate::blockmap::validate(&cfg.blocks, bs) {
                report
                    .backups_skipped
                    .push((name.clone(), format!("invalid block map: {reason}")));
                report.broken_backups.insert(name);
                continue;
            }
            for b in &cfg.blocks {
                users
                    .entry(b.block_checksum.clone())
                    .or_insert_with(|| (compression, bs, BTreeSet::new()))
                    .2
                    .insert(name.clone());
            }
            report.backups_checked.push(name);
        }
        let label = self.label().to_string();
        let mut checks = futures::stream::iter(users)
            .map(|(checksum, (compression, bs, backups))| {
                let label = label.clone();
                async move {
                    let rel = block_path(volume, &checksum);
                    let stored = match self.get_opt(&rel).await? {
                        None => return Ok((checksum, backups, 0, Some(BlockProblem::Missing))),
                        Some(s) => s,
                    };
                    let n = stored.len() as u64;
                    let c = checksum.clone();
                    let problem = tokio::task::spawn_blocking(move || {
                        // Checked in the reused per-thread buffer; the content is not kept.
                        with_open_block(compression, &stored, &c, bs, &label, &rel, |_| ())
                            .err()
                            .map(|e| BlockProblem::Corrupt(e.to_string()))
                    })
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?;
                    Ok::<_, Error>((checksum, backups, n, problem))
                }
            })
            .buffer_unordered(workers.max(1));
        while let Some(res) = checks.next().await {
            let (checksum, backups, n, problem) = res?;
            report.blocks_checked += 1;
            report.bytes_read += n;
            if let Some(problem) = problem {
                report.broken_backups.extend(backups.iter().cloned());
                report.damaged.push(DamagedBlock {
                    checksum,
                    problem,
                    backups,
                });
            }
        }
        report.damaged.sort_by(|a, b| a.checksum.cmp(&b.checksum));
        Ok(report)
    }
}
