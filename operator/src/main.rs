//! `bulwark`: the Bulwark operator. `run` is the leader-elected controller, `agent` the node
//! agent, `crd` prints the CRDs, `rbac` the RBAC manifests, `backup` works on a backup store without a cluster.

use clap::{Parser, Subcommand};
use config::{AgentArgs, AgentConfig, CommonArgs, ControllerArgs, ControllerConfig};
use operator::{cli, run, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "bulwark",
    version,
    about = "Snapshots, backups and DR for Kubernetes block volumes"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (one leader-elected replica acts).
    Run(ControllerArgs),
    /// Run the node agent: the data work for the volumes on this node.
    Agent(AgentArgs),
    /// Print every CRD as YAML.
    Crd,
    /// Print the ServiceAccounts, Roles and bindings as YAML.
    Rbac,
    /// Work on a backup store directly, without a cluster.
    #[command(subcommand)]
    Backup(cli::backup::BackupCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bulwark: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bulwark: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let config = ControllerConfig::from_args(&cli.common, &args)?;
            telemetry::init(&config.common)?;
            run::controller(config).await
        }
        Command::Agent(args) => {
            let config = AgentConfig::from_args(&cli.common, &args)?;
            telemetry::init(&config.common)?;
            run::agent(config).await
        }
        Command::Crd => cli::crd::print(),
        Command::Rbac => cli::rbac::print(),
        Command::Backup(command) => cli::backup::run(command).await,
    }
}
