//! `bulwark backup …`: the backup store without a cluster.

/// Subcommands of `bulwark backup`.
#[derive(Debug, clap::Subcommand)]
pub enum BackupCommand {}

/// Run one `bulwark backup` subcommand.
pub async fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command {}
}
