//! The flags and environment variables, as clap reads them: raw values, checked in `parse`.

use std::path::PathBuf;

use clap::Args;

/// A setting's flag (without dashes) and environment variable, named once for clap and errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
}

macro_rules! settings {
    ($($name:ident = $flag:literal, $env:literal;)*) => {
        $(pub(crate) const $name: Setting = Setting { flag: $flag, env: $env };)*
    };
}

settings! {
    KUBECONFIG = "kubeconfig", "KUBECONFIG";
    CONTEXT = "context", "BULWARK_KUBE_CONTEXT";
    NAMESPACE = "namespace", "BULWARK_NAMESPACE";
    HTTP_ADDR = "http-addr", "BULWARK_HTTP_ADDR";
    LOG_FORMAT = "log-format", "BULWARK_LOG_FORMAT";
    LOG_FILTER = "log-filter", "RUST_LOG";
    INSTALL_CRDS = "install-crds", "BULWARK_INSTALL_CRDS";
    LEASE_NAME = "lease-name", "BULWARK_LEASE_NAME";
    LEASE_DURATION = "lease-duration", "BULWARK_LEASE_DURATION";
    LEASE_GRACE = "lease-grace", "BULWARK_LEASE_GRACE";
    DEFAULT_BACKUP_TARGET = "default-backup-target", "BULWARK_DEFAULT_BACKUP_TARGET";
    POLL_INTERVAL = "poll-interval", "BULWARK_POLL_INTERVAL";
    DR_POLL_INTERVAL = "dr-poll-interval", "BULWARK_DR_POLL_INTERVAL";
    MAX_CONCURRENT = "max-concurrent-operations", "BULWARK_MAX_CONCURRENT_OPERATIONS";
    DEFAULT_COMPRESSION = "default-backup-compression", "BULWARK_DEFAULT_BACKUP_COMPRESSION";
    DEFAULT_BLOCK_SIZE = "default-backup-block-size", "BULWARK_DEFAULT_BACKUP_BLOCK_SIZE";
    ALLOW_DETACHED = "allow-recurring-job-while-volume-detached", "BULWARK_ALLOW_RECURRING_JOB_WHILE_VOLUME_DETACHED";
    CSI_DRIVER_NAME = "csi-driver-name", "BULWARK_CSI_DRIVER_NAME";
    CSI_ENDPOINT = "csi-endpoint", "BULWARK_CSI_ENDPOINT";
    NODE_NAME = "node-name", "NODE_NAME";
    DATA_DIR = "data-dir", "BULWARK_DATA_DIR";
    MOUNT_DIR = "mount-dir", "BULWARK_MOUNT_DIR";
    BACKUP_WORKERS = "backup-workers", "BULWARK_BACKUP_WORKERS";
}

/// Settings of both modes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Kubeconfig file (default: in-cluster, then ~/.kube/config).
    #[arg(long = KUBECONFIG.flag, env = KUBECONFIG.env, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: its current context).
    #[arg(long = CONTEXT.flag, env = CONTEXT.env, global = true)]
    pub context: Option<String>,
    /// Namespace of the operator's Lease, Events and default BackupTarget.
    #[arg(long = NAMESPACE.flag, env = NAMESPACE.env, default_value = "bulwark-system", global = true)]
    pub namespace: String,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long = HTTP_ADDR.flag, env = HTTP_ADDR.env, default_value = "0.0.0.0:8080", global = true)]
    pub http_addr: String,
    /// Log format: text, json, or auto (text on a terminal, json elsewhere).
    #[arg(long = LOG_FORMAT.flag, env = LOG_FORMAT.env, default_value = "auto", global = true)]
    pub log_format: String,
    /// Log filter (tracing directives such as `info` or `info,operator=debug`).
    #[arg(long = LOG_FILTER.flag, env = LOG_FILTER.env, default_value = "info", global = true)]
    pub log_filter: String,
}

/// Settings of `bulwark run`.
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Install or update the CRDs at start (otherwise only check that they exist).
    #[arg(long = INSTALL_CRDS.flag, env = INSTALL_CRDS.env)]
    pub install_crds: bool,
    /// Name of the leader-election Lease.
    #[arg(long = LEASE_NAME.flag, env = LEASE_NAME.env, default_value = "bulwark-controller")]
    pub lease_name: String,
    /// Validity of a held lease (Go duration).
    #[arg(long = LEASE_DURATION.flag, env = LEASE_DURATION.env, default_value = "15s")]
    pub lease_duration: String,
    /// Grace before an expired lease may be taken over (Go duration).
    #[arg(long = LEASE_GRACE.flag, env = LEASE_GRACE.env, default_value = "5s")]
    pub lease_grace: String,
    /// URL of the `default` BackupTarget created when none exists; empty creates none.
    #[arg(long = DEFAULT_BACKUP_TARGET.flag, env = DEFAULT_BACKUP_TARGET.env, default_value = "file:///var/lib/bulwark/backups")]
    pub default_backup_target: String,
    /// Resync interval of the controllers (Go duration).
    #[arg(long = POLL_INTERVAL.flag, env = POLL_INTERVAL.env, default_value = "30s")]
    pub poll_interval: String,
    /// How often standby volumes look for a newer backup (Go duration).
    #[arg(long = DR_POLL_INTERVAL.flag, env = DR_POLL_INTERVAL.env, default_value = "30s")]
    pub dr_poll_interval: String,
    /// Backups and restores in flight at once, cluster-wide.
    #[arg(long = MAX_CONCURRENT.flag, env = MAX_CONCURRENT.env, default_value = "5")]
    pub max_concurrent_operations: String,
    /// Compression of volumes that name none: none, lz4 or gzip.
    #[arg(long = DEFAULT_COMPRESSION.flag, env = DEFAULT_COMPRESSION.env, default_value = "lz4")]
    pub default_backup_compression: String,
    /// Backup block size of volumes that name none: 2Mi or 16Mi.
    #[arg(long = DEFAULT_BLOCK_SIZE.flag, env = DEFAULT_BLOCK_SIZE.env, default_value = "2Mi")]
    pub default_backup_block_size: String,
    /// Let recurring jobs run on volumes that are not attached.
    #[arg(long = ALLOW_DETACHED.flag, env = ALLOW_DETACHED.env)]
    pub allow_recurring_job_while_volume_detached: bool,
    /// Driver name of the VolumeSnapshotContents to fulfil.
    #[arg(long = CSI_DRIVER_NAME.flag, env = CSI_DRIVER_NAME.env, default_value = "driver.bulwark.io")]
    pub csi_driver_name: String,
    /// Serve the CSI Identity and Controller services on this unix socket for the CSI sidecars
    /// (`unix:///csi/csi.sock`); none when unset.
    #[arg(long = CSI_ENDPOINT.flag, env = CSI_ENDPOINT.env)]
    pub csi_endpoint: Option<String>,
}

/// Settings of `bulwark agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The node this agent serves (the DaemonSet passes spec.nodeName).
    #[arg(long = NODE_NAME.flag, env = NODE_NAME.env)]
    pub node_name: Option<String>,
    /// Directory holding this node's volume data.
    #[arg(long = DATA_DIR.flag, env = DATA_DIR.env, default_value = "/var/lib/bulwark")]
    pub data_dir: PathBuf,
    /// Directory where volumes are served as files (default: <data-dir>/mnt).
    #[arg(long = MOUNT_DIR.flag, env = MOUNT_DIR.env)]
    pub mount_dir: Option<PathBuf>,
    /// Data operations running at once on this node.
    #[arg(long = MAX_CONCURRENT.flag, env = MAX_CONCURRENT.env, default_value = "2")]
    pub max_concurrent_operations: String,
    /// Hashing/upload workers per backup (default: the number of CPUs).
    #[arg(long = BACKUP_WORKERS.flag, env = BACKUP_WORKERS.env)]
    pub backup_workers: Option<String>,
    /// Serve the CSI Identity and Node services on this unix socket for kubelet
    /// (`unix:///csi/csi.sock`, registered by node-driver-registrar); none when unset.
    #[arg(long = CSI_ENDPOINT.flag, env = CSI_ENDPOINT.env)]
    pub csi_endpoint: Option<String>,
    /// The CSI driver name this node plugin answers to.
    #[arg(long = CSI_DRIVER_NAME.flag, env = CSI_DRIVER_NAME.env, default_value = "driver.bulwark.io")]
    pub csi_driver_name: String,
}
