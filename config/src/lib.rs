//! One typed, validated configuration for each long-running mode of the `bulwark` binary
//! (`run`: the controller, `agent`: the node agent), read from flags and environment variables
//! with clap. Every invalid value fails at start with a message that names the flag and the
//! environment variable. No I/O beyond reading the process's arguments and environment.

mod args;
mod error;
mod parse;

pub use args::{AgentArgs, CommonArgs, ControllerArgs};
pub use error::ConfigError;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crd_types::common::CompressionMethod;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text (on a terminal).
    Text,
    /// One JSON object per line (in a container).
    Json,
}

/// How to reach the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Kubeconfig file; in-cluster configuration or `~/.kube/config` when unset.
    pub kubeconfig: Option<PathBuf>,
    /// Context of the kubeconfig to use; its current context when unset.
    pub context: Option<String>,
}

/// Settings both modes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommonConfig {
    pub cluster: ClusterConfig,
    /// Namespace of the operator's own objects (Lease, default BackupTarget, Events).
    pub namespace: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    pub log_format: LogFormat,
    /// `tracing` filter directives, e.g. `info,operator=debug`.
    pub log_filter: String,
}

/// Leader election: only the holder of the Lease acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    /// How long a held lease stays valid without renewal.
    pub duration: Duration,
    /// Extra time before another replica may take an expired lease.
    pub grace: Duration,
}

/// `bulwark run`: the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    pub common: CommonConfig,
    /// Install or update the CRDs at start instead of only checking for them.
    pub install_crds: bool,
    pub lease: LeaseConfig,
    /// URL of the `default` BackupTarget created at start when none exists (`None`: create none).
    pub default_backup_target: Option<String>,
    /// How often the controller re-reads the world when nothing prompts it.
    pub poll_interval: Duration,
    /// How often standby volumes ask the store for a newer backup.
    pub dr_poll_interval: Duration,
    /// Backups and restores in flight at once, cluster-wide.
    pub max_concurrent_operations: u32,
    /// Compression of volumes that name none.
    pub default_compression: CompressionMethod,
    /// Backup block size of volumes that name none (2 MiB or 16 MiB).
    pub default_block_size: u64,
    /// Let recurring jobs run on volumes that are not attached (Longhorn's
    /// `allow-recurring-job-while-volume-detached`).
    pub allow_recurring_job_while_volume_detached: bool,
    /// Driver name of the VolumeSnapshotContents the operator fulfils.
    pub csi_driver_name: String,
    /// Unix socket of the CSI Identity and Controller services, when served.
    pub csi_socket: Option<PathBuf>,
}

/// `bulwark agent`: the node agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub common: CommonConfig,
    /// The Kubernetes node this agent serves.
    pub node_name: String,
    /// Where volume data lives on this node.
    pub data_dir: PathBuf,
    /// Where volumes are served as files (FUSE mount point).
    pub mount_dir: PathBuf,
    /// Data operations (backup, restore, export) running at once on this node.
    pub max_concurrent_operations: u32,
    /// Hashing/upload workers per backup.
    pub backup_workers: u32,
    /// Unix socket of the CSI Identity and Node services, when served.
    pub csi_socket: Option<PathBuf>,
    /// The CSI driver name of the node plugin.
    pub csi_driver_name: String,
}

impl ControllerConfig {
    pub fn from_args(common: &CommonArgs, args: &ControllerArgs) -> Result<Self, ConfigError> {
        parse::controller(common, args)
    }
}

impl AgentConfig {
    pub fn from_args(common: &CommonArgs, args: &AgentArgs) -> Result<Self, ConfigError> {
        parse::agent(common, args)
    }
}
