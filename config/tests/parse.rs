//! Flags to typed configuration: defaults, every value checked, errors that name flag and env.
//! (Environment variables are read by clap; the operator's CLI tests set them on a real process.)

use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use config::{AgentArgs, AgentConfig, CommonArgs, ControllerArgs, ControllerConfig, LogFormat};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Run(ControllerArgs),
    Agent(AgentArgs),
}

/// Parse as the binary would, but blind to this process's environment (CI may set RUST_LOG …).
fn parse(args: &[&str]) -> Cli {
    let without_env = |cmd: clap::Command| cmd.mut_args(|a| a.env(None::<&str>));
    let cmd = without_env(Cli::command())
        .mut_subcommand("run", without_env)
        .mut_subcommand("agent", without_env);
    let matches = cmd
        .try_get_matches_from(std::iter::once("bulwark").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{e}"))
}

fn controller(args: &[&str]) -> Result<ControllerConfig, config::ConfigError> {
    let cli = parse(&[&["run"], args].concat());
    match cli.mode {
        Mode::Run(run) => ControllerConfig::from_args(&cli.common, &run),
        Mode::Agent(_) => unreachable!("parsed as run"),
    }
}

fn agent(args: &[&str]) -> Result<AgentConfig, config::ConfigError> {
    let cli = parse(&[&["agent"], args].concat());
    match cli.mode {
        Mode::Agent(agent) => AgentConfig::from_args(&cli.common, &agent),
        Mode::Run(_) => unreachable!("parsed as agent"),
    }
}

#[test]
fn controller_defaults() {
    let config = controller(&["--log-format", "json"]).expect("defaults are valid");
    assert_eq!(config.common.namespace, "bulwark-system");
    assert_eq!(config.common.http_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(config.common.log_format, LogFormat::Json);
    assert_eq!(config.common.cluster.kubeconfig, None);
    assert_eq!(config.lease.name, "bulwark-controller");
    assert_eq!(config.lease.duration, Duration::from_secs(15));
    assert_eq!(config.poll_interval, Duration::from_secs(30));
    assert_eq!(config.dr_poll_interval, Duration::from_secs(30));
    assert_eq!(
        config.default_backup_target.as_deref(),
        Some("file:///var/lib/bulwark/backups")
    );
    assert_eq!(config.default_block_size, 2 << 20);
    assert_eq!(config.csi_driver_name, "driver.bulwark.io");
    assert_eq!(config.csi_socket, None);
    assert!(!config.install_crds && !config.allow_recurring_job_while_volume_detached);
}

#[test]
fn the_agent_serves_the_csi_node_plugin_on_request() {
    let config = agent(&[
        "--node-name",
        "w1",
        "--csi-endpoint",
        "unix:///csi/csi.sock",
    ])
    .expect("valid");
    assert_eq!(
        config.csi_socket.as_deref(),
        Some(std::path::Path::new("/csi/csi.sock"))
    );
    assert_eq!(config.csi_driver_name, "driver.bulwark.io");
    let error = agent(&["--node-name", "w1", "--csi-endpoint", "csi.sock"]).expect_err("relative");
    assert_eq!(error.flag, "csi-endpoint");
}

#[test]
fn the_csi_endpoint_is_a_unix_socket_path() {
    for endpoint in ["unix:///csi/csi.sock", "/csi/csi.sock"] {
        let config = controller(&["--csi-endpoint", endpoint]).expect("valid");
        assert_eq!(
            config.csi_socket.as_deref(),
            Some(std::path::Path::new("/csi/csi.sock"))
        );
    }
}

#[test]
fn controller_flags_are_read() {
    let config = controller(&[
        "--namespace",
        "storage",
        "--http-addr",
        "127.0.0.1:9090",
        "--install-crds",
        "--poll-interval",
        "1m30s",
        "--default-backup-target",
        "s3://b@us-east-1/p/",
        "--default-backup-block-size",
        "16Mi",
        "--default-backup-compression",
        "gzip",
        "--max-concurrent-operations",
        "12",
        "--allow-recurring-job-while-volume-detached",
        "--kubeconfig",
        "/tmp/kc",
        "--context",
        "kind-a",
        "--log-format",
        "text",
    ])
    .expect("valid");
    assert_eq!(config.common.namespace, "storage");
    assert_eq!(config.common.http_addr.port(), 9090);
    assert!(config.install_crds && config.allow_recurring_job_while_volume_detached);
    assert_eq!(config.poll_interval, Duration::from_secs(90));
    assert_eq!(
        config.default_backup_target.as_deref(),
        Some("s3://b@us-east-1/p/")
    );
    assert_eq!(config.default_block_size, 16 << 20);
    assert_eq!(config.max_concurrent_operations, 12);
    assert_eq!(config.common.cluster.context.as_deref(), Some("kind-a"));
    assert_eq!(config.common.log_format, LogFormat::Text);
    let none = controller(&["--default-backup-target", ""]).expect("valid");
    assert_eq!(
        none.default_backup_target, None,
        "an empty target creates none"
    );
}

#[test]
fn invalid_controller_values_name_flag_and_env() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--namespace", "Bulwark_System"],
            "namespace",
            "BULWARK_NAMESPACE",
        ),
        (&["--http-addr", "8080"], "http-addr", "BULWARK_HTTP_ADDR"),
        (
            &["--log-format", "yaml"],
            "log-format",
            "BULWARK_LOG_FORMAT",
        ),
        (
            &["--poll-interval", "30"],
            "poll-interval",
            "BULWARK_POLL_INTERVAL",
        ),
        (
            &["--poll-interval", "10ms"],
            "poll-interval",
            "BULWARK_POLL_INTERVAL",
        ),
        (
            &["--dr-poll-interval", "soon"],
            "dr-poll-interval",
            "BULWARK_DR_POLL_INTERVAL",
        ),
        (
            &["--lease-duration", "1s"],
            "lease-duration",
            "BULWARK_LEASE_DURATION",
        ),
        (&["--lease-name", ""], "lease-name", "BULWARK_LEASE_NAME"),
        (
            &["--lease-duration", "10s", "--lease-grace", "10s"],
            "lease-grace",
            "BULWARK_LEASE_GRACE",
        ),
        (
            &["--default-backup-target", "ftp://x/y"],
            "default-backup-target",
            "BULWARK_DEFAULT_BACKUP_TARGET",
        ),
        (
            &["--default-backup-target", "file://relative"],
            "default-backup-target",
            "BULWARK_DEFAULT_BACKUP_TARGET",
        ),
        (
            &["--default-backup-compression", "zstd"],
            "default-backup-compression",
            "BULWARK_DEFAULT_BACKUP_COMPRESSION",
        ),
        (
            &["--default-backup-block-size", "4Mi"],
            "default-backup-block-size",
            "BULWARK_DEFAULT_BACKUP_BLOCK_SIZE",
        ),
        (
            &["--max-concurrent-operations", "0"],
            "max-concurrent-operations",
            "BULWARK_MAX_CONCURRENT_OPERATIONS",
        ),
        (
            &["--max-concurrent-operations", "many"],
            "max-concurrent-operations",
            "BULWARK_MAX_CONCURRENT_OPERATIONS",
        ),
        (
            &["--csi-driver-name", "Driver Bulwark"],
            "csi-driver-name",
            "BULWARK_CSI_DRIVER_NAME",
        ),
        (&["--context", ""], "context", "BULWARK_KUBE_CONTEXT"),
        (
            &["--csi-endpoint", "tcp://0.0.0.0:10000"],
            "csi-endpoint",
            "BULWARK_CSI_ENDPOINT",
        ),
        (
            &["--csi-endpoint", "csi/csi.sock"],
            "csi-endpoint",
            "BULWARK_CSI_ENDPOINT",
        ),
    ];
    for (args, flag, env) in cases {
        let error = controller(args).expect_err(&format!("{args:?} is refused"));
        assert_eq!((error.flag, error.env), (*flag, *env), "{args:?}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("--{flag}")) && message.contains(env),
            "{message}"
        );
    }
}

#[test]
fn agent_settings() {
    let config = agent(&["--node-name", "worker-1", "--log-format", "json"]).expect("valid");
    assert_eq!(config.node_name, "worker-1");
    assert_eq!(config.data_dir.to_str(), Some("/var/lib/bulwark"));
    assert_eq!(config.mount_dir.to_str(), Some("/var/lib/bulwark/mnt"));
    assert!(config.backup_workers >= 1);
    let config = agent(&[
        "--node-name",
        "kind-worker.local",
        "--data-dir",
        "/data",
        "--mount-dir",
        "/run/bulwark",
        "--backup-workers",
        "4",
    ])
    .expect("valid");
    assert_eq!(config.mount_dir.to_str(), Some("/run/bulwark"));
    assert_eq!(config.backup_workers, 4);
    let cases: &[(&[&str], &str)] = &[
        (&[], "node-name"),
        (&["--node-name", "Worker_1"], "node-name"),
        (
            &["--node-name", "w", "--data-dir", "relative/dir"],
            "data-dir",
        ),
        (&["--node-name", "w", "--mount-dir", "mnt"], "mount-dir"),
        (
            &["--node-name", "w", "--backup-workers", "0"],
            "backup-workers",
        ),
    ];
    for (args, flag) in cases {
        let error = agent(args).expect_err(&format!("{args:?} is refused"));
        assert_eq!(error.flag, *flag, "{args:?}: {error}");
    }
}
