//! Logs: human text on a terminal, one JSON object per line in a container.

use config::{CommonConfig, LogFormat};
use tracing_subscriber::EnvFilter;

pub fn init(config: &CommonConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_filter).map_err(|e| {
        anyhow::anyhow!(
            "invalid --log-filter (env RUST_LOG) {:?}: {e}",
            config.log_filter
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
