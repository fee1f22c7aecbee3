//! From raw arguments to typed, validated configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crd_types::common::{CompressionMethod, parse_go_duration, parse_quantity_bytes};

use crate::args::{self, AgentArgs, CommonArgs, ControllerArgs, Setting};
use crate::{
    AgentConfig, ClusterConfig, CommonConfig, ConfigError, ControllerConfig, LeaseConfig, LogFormat,
};

fn invalid(setting: Setting, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag: setting.flag,
        env: setting.env,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace or Lease name.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a node name.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn dns_label(setting: Setting, value: &str) -> Result<String, ConfigError> {
    if is_dns_label(value) {
        Ok(value.to_owned())
    } else {
        Err(invalid(
            setting,
            value,
            "must be a Kubernetes name: lowercase letters, digits and '-', at most 63 characters",
        ))
    }
}

fn duration(setting: Setting, value: &str, min: Duration) -> Result<Duration, ConfigError> {
    match parse_go_duration(value) {
        Some(d) if d >= min => Ok(d),
        Some(_) => Err(invalid(setting, value, format!("must be at least {min:?}"))),
        None => Err(invalid(
            setting,
            value,
            "must be a duration such as 30s, 5m or 1h30m",
        )),
    }
}

fn count(setting: Setting, value: &str, max: u32) -> Result<u32, ConfigError> {
    match value.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            setting,
            value,
            format!("must be a whole number from 1 to {max}"),
        )),
    }
}

fn common(args: &CommonArgs) -> Result<CommonConfig, ConfigError> {
    let http_addr: SocketAddr = args.http_addr.parse().map_err(|_| {
        invalid(
            args::HTTP_ADDR,
            &args.http_addr,
            "must be an address and port such as 0.0.0.0:8080 or 127.0.0.1:9090",
        )
    })?;
    let log_format = match args.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        "auto" if std::io::IsTerminal::is_terminal(&std::io::stderr()) => LogFormat::Text,
        "auto" => LogFormat::Json,
        other => {
            return Err(invalid(
                args::LOG_FORMAT,
                other,
                "must be text, json or auto",
            ));
        }
    };
    if args.log_filter.trim().is_empty() {
        return Err(invalid(
            args::LOG_FILTER,
            &args.log_filter,
            "must name a level such as info or debug",
        ));
    }
    if let Some(context) = &args.context
        && context.is_empty()
    {
        return Err(invalid(
            args::CONTEXT,
            context,
            "must not be empty when given",
        ));
    }
    Ok(CommonConfig {
        cluster: ClusterConfig {
            kubeconfig: args
                .kubeconfig
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            context: args.context.clone(),
        },
        namespace: dns_label(args::NAMESPACE, &args.namespace)?,
        http_addr,
        log_format,
        log_filter: args.log_filter.clone(),
    })
}

pub(crate) fn controller(
    common_args: &CommonArgs,
    args: &ControllerArgs,
) -> Result<ControllerConfig, ConfigError> {
    let common = common(common_args)?;
    let lease = LeaseConfig {
        name: dns_label(args::LEASE_NAME, &args.lease_name)?,
        duration: duration(
            args::LEASE_DURATION,
            &args.lease_duration,
            Duration::from_secs(2),
        )?,
        grace: duration(args::LEASE_GRACE, &args.lease_grace, Duration::ZERO)?,
    };
    if lease.grace >= lease.duration {
        return Err(invalid(
            args::LEASE_GRACE,
            &args.lease_grace,
            format!(
                "must be shorter than --lease-duration ({:?})",
                lease.duration
            ),
        ));
    }
    let default_backup_target = match args.default_backup_target.as_str() {
        "" => None,
        url => {
            crd_types::backup_target::validate_target_url(url).map_err(|errors| {
                let reasons: Vec<_> = errors.0.into_iter().map(|e| e.message).collect();
                invalid(args::DEFAULT_BACKUP_TARGET, url, reasons.join("; "))
            })?;
            Some(url.to_owned())
        }
    };
    let default_compression = match args.default_backup_compression.as_str() {
        "none" => CompressionMethod::None,
        "lz4" => CompressionMethod::Lz4,
        "gzip" => CompressionMethod::Gzip,
        other => {
            return Err(invalid(
                args::DEFAULT_COMPRESSION,
                other,
                "must be none, lz4 or gzip",
            ));
        }
    };
    let default_block_size = parse_quantity_bytes(&args.default_backup_block_size)
        .filter(|b| *b == 2 << 20 || *b == 16 << 20)
        .ok_or_else(|| {
            invalid(
                args::DEFAULT_BLOCK_SIZE,
                &args.default_backup_block_size,
                "must be 2Mi or 16Mi",
            )
        })?;
    check_csi_driver_name(&args.csi_driver_name)?;
    let csi_socket = csi_socket(args.csi_endpoint.as_deref())?;
    Ok(ControllerConfig {
        common,
        install_crds: args.install_crds,
        lease,
        default_backup_target,
        poll_interval: duration(
            args::POLL_INTERVAL,
            &args.poll_interval,
            Duration::from_secs(1),
        )?,
        dr_poll_interval: duration(
            args::DR_POLL_INTERVAL,
            &args.dr_poll_interval,
            Duration::from_secs(1),
        )?,
        max_concurrent_operations: count(
            args::MAX_CONCURRENT,
            &args.max_concurrent_operations,
            1000,
        )?,
        default_compression,
        default_block_size,
        allow_recurring_job_while_volume_detached: args.allow_recurring_job_while_volume_detached,
        csi_driver_name: args.csi_driver_name.clone(),
        csi_socket,
    })
}

/// The socket path of a CSI endpoint: `unix:///csi/csi.sock` or `/csi/csi.sock`.
fn csi_socket(endpoint: Option<&str>) -> Result<Option<std::path::PathBuf>, ConfigError> {
    endpoint
        .map(|endpoint| {
            let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
            if path.len() > 1 && path.starts_with('/') {
                Ok(std::path::PathBuf::from(path))
            } else {
                Err(invalid(
                    args::CSI_ENDPOINT,
                    endpoint,
                    "must be a unix socket as unix:///<absolute path> (the sidecars' --csi-address)",
                ))
            }
        })
        .transpose()
}

fn check_csi_driver_name(name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !is_dns_subdomain(name) {
        return Err(invalid(
            args::CSI_DRIVER_NAME,
            name,
            "must be a DNS name such as driver.bulwark.io",
        ));
    }
    Ok(name.to_owned())
}

fn absolute_dir(setting: Setting, path: &Path) -> Result<std::path::PathBuf, ConfigError> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Err(invalid(
            setting,
            &path.display().to_string(),
            "must be an absolute path",
        ))
    }
}

pub(crate) fn agent(
    common_args: &CommonArgs,
    args: &AgentArgs,
) -> Result<AgentConfig, ConfigError> {
    let common = common(common_args)?;
    let node_name = match args.node_name.as_deref() {
        Some(name) if is_dns_subdomain(name) => name.to_owned(),
        Some(name) => {
            return Err(invalid(
                args::NODE_NAME,
                name,
                "must be the Kubernetes node's name (lowercase DNS name)",
            ));
        }
        None => {
            return Err(invalid(
                args::NODE_NAME,
                "",
                "is required: the DaemonSet passes spec.nodeName; set it when running by hand",
            ));
        }
    };
    let data_dir = absolute_dir(args::DATA_DIR, &args.data_dir)?;
    let mount_dir = match &args.mount_dir {
        Some(dir) => absolute_dir(args::MOUNT_DIR, dir)?,
        None => data_dir.join("mnt"),
    };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let backup_workers = match &args.backup_workers {
        Some(value) => count(args::BACKUP_WORKERS, value, 256)?,
        None => cpus,
    };
    Ok(AgentConfig {
        common,
        node_name,
        data_dir,
        mount_dir,
        max_concurrent_operations: count(
            args::MAX_CONCURRENT,
            &args.max_concurrent_operations,
            64,
        )?,
        backup_workers,
        csi_socket: csi_socket(args.csi_endpoint.as_deref())?,
        csi_driver_name: check_csi_driver_name(&args.csi_driver_name)?,
    })
}
