//! `bulwark backup …`: the backup store without a cluster.
//!
//! The target comes from `--target` or `BULWARK_BACKUP_TARGET`; S3 credentials from the
//! environment variables named like the keys of a BackupTarget's Secret (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINTS`, `AWS_CERT`, `VIRTUAL_HOSTED_STYLE`, `HTTP_PROXY`,
//! `HTTPS_PROXY`, `NO_PROXY`). Human output by default, with progress bars when stderr is a
//! terminal; `--json` prints one JSON document on stdout for scripts.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use backupstore::backup::{BackupMode, BackupOptions, BackupProgress};
use backupstore::format::{BackupConfig, VolumeConfig, parse_quantity};
use backupstore::restore::{RestoreOptions, RestoreProgress};
use backupstore::target::{self, BackupUrl, ConnectOptions, Credentials, TargetUrl};
use backupstore::{Compression, FileSink, FileSource, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

/// Options every subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// Backup target URL: file:///path, nfs://host:/path, s3://bucket@region/path/.
    #[arg(long, env = "BULWARK_BACKUP_TARGET")]
    pub target: Option<String>,
    /// Print one JSON document on stdout instead of human output.
    #[arg(long)]
    pub json: bool,
    /// Where NFS targets are mounted.
    #[arg(long, env = "BULWARK_NFS_MOUNT_ROOT", default_value = target::nfs::DEFAULT_MOUNT_ROOT)]
    pub nfs_mount_root: PathBuf,
}

/// Subcommands of `bulwark backup`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {
    /// List backup volumes, or the backups of one volume.
    Ls {
        /// Volume whose backups to list (all volumes if omitted).
        volume: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Show a volume's metadata, or one backup's (with its block map size).
    Inspect {
        /// Volume name, or a backup URL (`<target>?backup=<b>&volume=<v>`).
        volume: String,
        /// Backup name (omit for the volume).
        backup: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Back up an image file or block device as a new backup of a volume.
    Create {
        /// Image file or block device to read (holes are skipped).
        #[arg(long)]
        from: PathBuf,
        /// Backup volume name.
        #[arg(long)]
        volume: String,
        /// Backup name (default: a generated `backup-<16 hex>`).
        #[arg(long)]
        name: Option<String>,
        /// Snapshot name recorded in the backup (default: the backup name).
        #[arg(long)]
        snapshot: Option<String>,
        /// Block size: 2Mi (default) or 16Mi; must match the volume's earlier backups.
        #[arg(long, default_value = "2Mi")]
        block_size: String,
        /// Compression of a new backup volume: lz4, gzip or none (an existing volume keeps its own).
        #[arg(long, default_value = "lz4")]
        compression: String,
        /// Full backup (ignore the previous backup's map) instead of incremental.
        #[arg(long)]
        full: bool,
        /// Blocks processed at once (default: one per core, at least two).
        #[arg(long)]
        workers: Option<usize>,
        /// Label `key=value` (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Restore a backup into a file (created sparse) or block device.
    Restore {
        /// Volume name, or a backup URL.
        volume: String,
        /// Backup name (omit when a backup URL is given).
        backup: Option<String>,
        /// File or block device to write.
        #[arg(long)]
        to: PathBuf,
        /// `--to` already holds this earlier backup of the volume: fetch only what differs.
        #[arg(long, value_name = "BACKUP")]
        incremental_from: Option<String>,
        /// Blocks fetched at once.
        #[arg(long)]
        workers: Option<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a backup (and the blocks no other backup uses), or a whole backup volume.
    Rm {
        /// Volume name, or a backup URL.
        volume: String,
        /// Backup name.
        backup: Option<String>,
        /// Delete the whole backup volume with all its backups.
        #[arg(long, conflicts_with = "backup")]
        all: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Read back every block a volume's backups (or one backup) reference and check its hash.
    Verify {
        /// Volume name, or a backup URL.
        volume: String,
        /// Only this backup.
        backup: Option<String>,
        /// Blocks read at once.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        #[command(flatten)]
        common: Common,
    },
}

/// Run one `bulwark backup` subcommand.
pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Ls { volume, common } => ls(&common, volume.as_deref()).await,
        BackupCommand::Inspect {
            volume,
            backup,
            common,
        } => inspect(&common, &volume, backup.as_deref()).await,
        BackupCommand::Create {
            from,
            volume,
            name,
            snapshot,
            block_size,
            compression,
            full,
            workers,
            labels,
            common,
        } => {
            let block_size = parse_quantity(&block_size).with_context(|| {
                format!("--block-size {block_size:?} is not a size such as 2Mi or 16Mi")
            })?;
            let compression = Compression::parse(&compression).map_err(|_| {
                anyhow::anyhow!("--compression {compression:?} must be lz4, gzip or none")
            })?;
            let labels = parse_labels(&labels)?;
            let snapshot = snapshot.or_else(|| name.clone());
            let mut options =
                BackupOptions::new(volume, snapshot.unwrap_or_else(|| "bulwark-cli".into()));
            options.backup_name = name;
            options.block_size = block_size;
            options.compression = compression;
            options.mode = if full {
                BackupMode::Full
            } else {
                BackupMode::Incremental
            };
            if let Some(workers) = workers {
                options.workers = workers.max(1);
            }
            options.labels = labels;
            create(&common, &from, options).await
        }
        BackupCommand::Restore {
            volume,
            backup,
            to,
            incremental_from,
            workers,
            common,
        } => {
            restore(
                &common,
                &volume,
                backup.as_deref(),
                &to,
                incremental_from.as_deref(),
                workers,
            )
            .await
        }
        BackupCommand::Rm {
            volume,
            backup,
            all,
            common,
        } => rm(&common, &volume, backup.as_deref(), all).await,
        BackupCommand::Verify {
            volume,
            backup,
            workers,
            common,
        } => verify(&common, &volume, backup.as_deref(), workers).await,
    }
}

/// The target, volume and backup a command is about: either from `--target` plus names, or
/// from one backup URL in place of the volume name.
struct Subject {
    target: TargetUrl,
    volume: String,
    backup: Option<String>,
}

fn subject(common: &Common, volume: &str, backup: Option<&str>) -> anyhow::Result<Subject> {
    if volume.contains("://") {
        let url =
            BackupUrl::parse(volume).with_context(|| format!("{volume:?} is not a backup URL"))?;
        if backup.is_some_and(|b| b != url.backup) {
            bail!(
                "backup URL names backup {:?} but the command line names {:?}",
                url.backup,
                backup.unwrap_or_default()
            );
        }
        return Ok(Subject {
            target: url.target,
            volume: url.volume,
            backup: Some(url.backup),
        });
    }
    Ok(Subject {
        target: target_url(common)?,
        volume: volume.to_string(),
        backup: backup.map(str::to_string),
    })
}

fn target_url(common: &Common) -> anyhow::Result<TargetUrl> {
    let text = common
        .target
        .as_deref()
        .context("no backup target: pass --target <URL> or set BULWARK_BACKUP_TARGET")?;
    TargetUrl::parse(text).with_context(|| format!("invalid backup target {text:?}"))
}

/// Connect to `url` and check once that it answers and accepts the credentials.
async fn open(common: &Common, url: &TargetUrl) -> anyhow::Result<Store> {
    let credentials = Credentials::from_env()
        .context("invalid credential environment variable for the backup target")?;
    let options = ConnectOptions {
        nfs_mount_root: common.nfs_mount_root.clone(),
        ..ConnectOptions::default()
    };
    let (object_store, root) = target::connect(url, &credentials, &options)
        .await
        .with_context(|| format!("cannot open backup target {url}"))?;
    target::check_access(url, object_store.as_ref(), &root).await?;
    Ok(Store::new(object_store, root).with_label(url.to_string()))
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn volume_json(volume: &VolumeConfig) -> Value {
    json!({
        "name": volume.name,
        "size": volume.size,
        "labels": volume.labels,
        "createdTime": volume.created_time,
        "lastBackupName": volume.last_backup_name,
        "lastBackupAt": volume.last_backup_at,
        "blockCount": volume.block_count,
        "compressionMethod": volume.compression_method,
        "backingImageName": volume.backing_image_name,
        "storageClassName": volume.storage_class_name,
        "dataEngine": volume.data_engine,
    })
}

fn backup_json(target: &TargetUrl, backup: &BackupConfig) -> Value {
    let url = target
        .backup_url(&backup.name, &backup.volume_name)
        .map(|u| u.to_string())
        .unwrap_or_default();
    json!({
        "name": backup.name,
        "url": url,
        "volumeName": backup.volume_name,
        "snapshotName": backup.snapshot_name,
        "snapshotCreatedAt": backup.snapshot_created_at,
        "createdTime": backup.created_time,
        "inProgress": backup.in_progress(),
        "size": backup.size,
        "labels": backup.labels,
        "parameters": backup.parameters,
        "isIncremental": backup.is_incremental,
        "compressionMethod": backup.compression_method,
        "newlyUploadedDataSize": backup.newly_uploaded_data_size,
        "reUploadedDataSize": backup.re_uploaded_data_size,
        "blocks": backup.blocks.len(),
    })
}

fn human_bytes(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

async fn ls(common: &Common, volume: Option<&str>) -> anyhow::Result<()> {
    let url = target_url(common)?;
    let store = open(common, &url).await?;
    match volume {
        None => {
            let names = store
                .list_volumes()
                .await
                .with_context(|| format!("cannot list volumes of {url}"))?;
            let mut volumes = Vec::new();
            for name in &names {
                let config = store.inspect_volume(name).await;
                volumes.push((name, config));
            }
            if common.json {
                let items: Vec<Value> = volumes
                    .iter()
                    .map(|(name, config)| match config {
                        Ok(config) => volume_json(config),
                        Err(error) => json!({"name": name, "error": error.to_string()}),
                    })
                    .collect();
                return print_json(&json!({"target": url.as_str(), "volumes": items}));
            }
            println!(
                "{:<40} {:>10} {:>8} {:<24} LAST BACKUP",
                "VOLUME", "SIZE", "BLOCKS", "LAST BACKUP AT"
            );
            for (name, config) in &volumes {
                match config {
                    Ok(v) => println!(
                        "{:<40} {:>10} {:>8} {:<24} {}",
                        name,
                        human_bytes(v.size),
                        v.block_count,
                        v.last_backup_at,
                        v.last_backup_name
                    ),
                    Err(error) => println!("{name:<40} unreadable: {error}"),
                }
            }
        }
        Some(volume) => {
            let entries = store
                .list_backups(volume)
                .await
                .with_context(|| format!("cannot list backups of volume {volume} in {url}"))?;
            if common.json {
                let items: Vec<Value> = entries
                    .iter()
                    .map(|entry| match &entry.config {
                        Ok(config) => backup_json(&url, config),
                        Err(error) => json!({"name": entry.name, "error": error}),
                    })
                    .collect();
                return print_json(
                    &json!({"target": url.as_str(), "volume": volume, "backups": items}),
                );
            }
            println!(
                "{:<28} {:<22} {:>10} {:<12} SNAPSHOT",
                "BACKUP", "CREATED", "SIZE", "STATE"
            );
            for entry in &entries {
                match &entry.config {
                    Ok(b) => println!(
                        "{:<28} {:<22} {:>10} {:<12} {}",
                        entry.name,
                        b.created_time,
                        human_bytes(b.size),
                        if b.in_progress() {
                            "in progress"
                        } else {
                            "completed"
                        },
                        b.snapshot_name
                    ),
                    Err(error) => println!("{:<28} unreadable: {error}", entry.name),
                }
            }
        }
    }
    Ok(())
}

async fn inspect(common: &Common, volume: &str, backup: Option<&str>) -> anyhow::Result<()> {
    let subject = subject(common, volume, backup)?;
    let store = open(common, &subject.target).await?;
    let url = &subject.target;
    match &subject.backup {
        None => {
            let config = store
                .inspect_volume(&subject.volume)
                .await
                .with_context(|| format!("cannot inspect volume {} in {url}", subject.volume))?;
            if common.json {
                return print_json(&volume_json(&config));
            }
            println!("volume:        {}", config.name);
            println!(
                "size:          {} ({} bytes)",
                human_bytes(config.size),
                config.size
            );
            println!("created:       {}", config.created_time);
            println!(
                "last backup:   {} at {}",
                config.last_backup_name, config.last_backup_at
            );
            println!("blocks:        {}", config.block_count);
            println!("compression:   {}", config.compression_method);
            println!("labels:        {}", labels_text(config.labels.as_ref()));
        }
        Some(backup) => {
            let config = store
                .inspect_backup(&subject.volume, backup)
                .await
                .with_context(|| {
                    format!(
                        "cannot inspect backup {backup} of volume {} in {url}",
                        subject.volume
                    )
                })?;
            if common.json {
                return print_json(&backup_json(url, &config));
            }
            let backup_url = url
                .backup_url(&config.name, &config.volume_name)
                .map(|u| u.to_string())
                .unwrap_or_default();
            println!("backup:        {}", config.name);
            println!("url:           {backup_url}");
            println!("volume:        {}", config.volume_name);
            println!(
                "snapshot:      {} (created {})",
                config.snapshot_name, config.snapshot_created_at
            );
            println!(
                "state:         {}",
                if config.in_progress() {
                    "in progress".to_string()
                } else {
                    format!("completed {}", config.created_time)
                }
            );
            println!(
                "size:          {} ({} bytes)",
                human_bytes(config.size),
                config.size
            );
            println!("blocks:        {}", config.blocks.len());
            println!("incremental:   {}", config.is_incremental);
            println!("compression:   {}", config.compression_method);
            println!(
                "uploaded:      {}",
                human_bytes(config.newly_uploaded_data_size)
            );
            println!("labels:        {}", labels_text(config.labels.as_ref()));
            println!("parameters:    {}", labels_text(config.parameters.as_ref()));
        }
    }
    Ok(())
}

fn labels_text(labels: Option<&BTreeMap<String, String>>) -> String {
    match labels {
        None => "-".into(),
        Some(labels) if labels.is_empty() => "-".into(),
        Some(labels) => labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|label| {
            label
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--label {label:?} must look like key=value"))
        })
        .collect()
}

/// A progress bar on stderr when it is a terminal and output is for humans; hidden otherwise.
fn progress_bar(common: &Common, what: &str) -> ProgressBar {
    if common.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} blocks ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn create(
    common: &Common,
    from: &std::path::Path,
    mut options: BackupOptions,
) -> anyhow::Result<()> {
    let url = target_url(common)?;
    let source = FileSource::open(from)
        .with_context(|| format!("cannot open {} to back up", from.display()))?;
    let store = open(common, &url).await?;
    let bar = progress_bar(common, "backup");
    let shown = bar.clone();
    options.progress = Some(Arc::new(move |p: &BackupProgress| {
        shown.set_length(p.blocks_total);
        shown.set_position(p.blocks_done);
    }));
    let volume = options.volume.clone();
    let outcome = store
        .backup(Arc::new(source), options)
        .await
        .with_context(|| {
            format!(
                "backup of {} as volume {volume} to {url} failed",
                from.display()
            )
        })?;
    bar.finish_and_clear();
    let backup_url = url.backup_url(&outcome.name, &outcome.volume)?.to_string();
    let c = outcome.counters;
    if common.json {
        return print_json(&json!({
            "name": outcome.name,
            "volume": outcome.volume,
            "url": backup_url,
            "isIncremental": outcome.is_incremental,
            "blocksInMap": outcome.blocks_in_map,
            "bytesRead": c.bytes_read,
            "bytesChanged": c.bytes_changed,
            "bytesUploaded": c.bytes_uploaded,
            "bytesDeduplicated": c.bytes_deduplicated,
            "blocksNew": c.blocks_new,
            "blocksDeduplicated": c.blocks_deduplicated,
            "blocksReuploaded": c.blocks_reuploaded,
        }));
    }
    println!(
        "created backup {} of volume {}",
        outcome.name, outcome.volume
    );
    println!("url: {backup_url}");
    println!(
        "read {}, changed {}, uploaded {} ({} new blocks, {} deduplicated)",
        human_bytes(c.bytes_read as i64),
        human_bytes(c.bytes_changed as i64),
        human_bytes(c.bytes_uploaded as i64),
        c.blocks_new,
        c.blocks_deduplicated
    );
    Ok(())
}

async fn restore(
    common: &Common,
    volume: &str,
    backup: Option<&str>,
    to: &std::path::Path,
    incremental_from: Option<&str>,
    workers: Option<usize>,
) -> anyhow::Result<()> {
    let subject = subject(common, volume, backup)?;
    let backup = subject
        .backup
        .context("name the backup to restore (or pass a backup URL)")?;
    let url = subject.target;
    let volume = subject.volume;
    let store = open(common, &url).await?;
    let size = store
        .restore_size(&volume, &backup)
        .await
        .with_context(|| format!("cannot restore backup {backup} of volume {volume} from {url}"))?;
    let bar = progress_bar(common, "restore");
    let shown = bar.clone();
    let mut options = RestoreOptions::default();
    if let Some(workers) = workers {
        options.workers = workers.max(1);
    }
    options.progress = Some(Arc::new(move |p: &RestoreProgress| {
        shown.set_length(p.blocks_total);
        shown.set_position(p.blocks_done);
    }));
    let what = || {
        format!(
            "restore of backup {backup} of volume {volume} from {url} into {}",
            to.display()
        )
    };
    let progress = match incremental_from {
        None => {
            let sink = FileSink::create(to, size)
                .with_context(|| format!("cannot create {}", to.display()))?;
            store
                .restore(&volume, &backup, Arc::new(sink), options)
                .await
                .with_context(what)?
        }
        Some(from) => {
            let sink = FileSink::open(to, size).with_context(|| {
                format!(
                    "cannot open {} (it should hold backup {from})",
                    to.display()
                )
            })?;
            store
                .restore_incremental(&volume, from, &backup, Arc::new(sink), options)
                .await
                .with_context(what)?
        }
    };
    bar.finish_and_clear();
    if common.json {
        return print_json(&json!({
            "volume": volume,
            "backup": backup,
            "incrementalFrom": incremental_from,
            "to": to.display().to_string(),
            "size": size,
            "blocks": progress.blocks_total,
            "blocksFetched": progress.blocks_fetched,
            "bytesFetched": progress.bytes_fetched,
            "bytesWritten": progress.bytes_written,
            "blocksZeroed": progress.blocks_zeroed,
        }));
    }
    println!(
        "restored backup {backup} of volume {volume} into {} ({})",
        to.display(),
        human_bytes(size as i64)
    );
    println!(
        "fetched {} blocks ({}), wrote {}, zeroed {} blocks",
        progress.blocks_fetched,
        human_bytes(progress.bytes_fetched as i64),
        human_bytes(progress.bytes_written as i64),
        progress.blocks_zeroed
    );
    Ok(())
}

async fn rm(common: &Common, volume: &str, backup: Option<&str>, all: bool) -> anyhow::Result<()> {
    let subject = subject(common, volume, backup)?;
    let url = subject.target;
    let volume = subject.volume;
    let store = open(common, &url).await?;
    match (subject.backup, all) {
        (Some(_), true) => bail!("--all deletes the whole volume; do not name a backup with it"),
        (None, false) => {
            bail!("name the backup to delete, or pass --all to delete volume {volume} entirely")
        }
        (None, true) => {
            let objects = store
                .delete_volume(&volume)
                .await
                .with_context(|| format!("cannot delete backup volume {volume} from {url}"))?;
            if common.json {
                return print_json(&json!({"volume": volume, "objectsDeleted": objects}));
            }
            println!("deleted backup volume {volume} ({objects} objects)");
        }
        (Some(backup), false) => {
            let outcome = store
                .delete_backup(&volume, &backup)
                .await
                .with_context(|| {
                    format!("cannot delete backup {backup} of volume {volume} from {url}")
                })?;
            let skipped = outcome.sweep_skipped.as_ref().map(|s| format!("{s:?}"));
            if common.json {
                return print_json(&json!({
                    "volume": volume,
                    "backup": backup,
                    "blocksDeleted": outcome.blocks_deleted,
                    "blocksKept": outcome.blocks_kept,
                    "sweepSkipped": skipped,
                }));
            }
            println!("deleted backup {backup} of volume {volume}");
            match skipped {
                None => println!(
                    "removed {} unreferenced blocks, kept {}",
                    outcome.blocks_deleted, outcome.blocks_kept
                ),
                Some(why) => println!(
                    "block cleanup skipped ({why}); a later delete will collect unreferenced blocks"
                ),
            }
        }
    }
    Ok(())
}

async fn verify(
    common: &Common,
    volume: &str,
    backup: Option<&str>,
    workers: usize,
) -> anyhow::Result<()> {
    let subject = subject(common, volume, backup)?;
    let url = subject.target;
    let volume = subject.volume;
    let store = open(common, &url).await?;
    let report = store
        .verify(&volume, subject.backup.as_deref(), workers.max(1))
        .await
        .with_context(|| format!("cannot verify volume {volume} in {url}"))?;
    let healthy = report.is_healthy();
    if common.json {
        let damaged: Vec<Value> = report
            .damaged
            .iter()
            .map(|d| {
                let (problem, detail) = match &d.problem {
                    backupstore::verify::BlockProblem::Missing => ("missing", String::new()),
                    backupstore::verify::BlockProblem::Corrupt(why) => ("corrupt", why.clone()),
                };
                json!({"checksum": d.checksum, "problem": problem, "detail": detail, "backups": d.backups})
            })
            .collect();
        print_json(&json!({
            "volume": volume,
            "healthy": healthy,
            "backupsChecked": report.backups_checked,
            "backupsSkipped": report.backups_skipped.iter().map(|(b, why)| json!({"backup": b, "reason": why})).collect::<Vec<_>>(),
            "blocksChecked": report.blocks_checked,
            "bytesRead": report.bytes_read,
            "damaged": damaged,
            "brokenBackups": report.broken_backups,
        }))?;
    } else {
        println!(
            "checked {} backups, {} blocks ({}) of volume {volume}",
            report.backups_checked.len(),
            report.blocks_checked,
            human_bytes(report.bytes_read as i64)
        );
        for (backup, why) in &report.backups_skipped {
            println!("skipped backup {backup}: {why}");
        }
        for damaged in &report.damaged {
            let problem = match &damaged.problem {
                backupstore::verify::BlockProblem::Missing => "missing".to_string(),
                backupstore::verify::BlockProblem::Corrupt(why) => format!("corrupt ({why})"),
            };
            let backups: Vec<&str> = damaged.backups.iter().map(String::as_str).collect();
            println!(
                "block {} is {problem}; used by {}",
                damaged.checksum,
                backups.join(", ")
            );
        }
        if healthy {
            println!("all checked backups are intact");
        } else if !report.broken_backups.is_empty() {
            let broken: Vec<&str> = report.broken_backups.iter().map(String::as_str).collect();
            println!("broken backups: {}", broken.join(", "));
        }
    }
    if !healthy {
        bail!("verify found damage in volume {volume} of {url}");
    }
    Ok(())
}
