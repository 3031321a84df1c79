//! The `vpoller` command line.

pub mod agent_cmd;
pub mod call;
pub mod collect;
pub mod generate;
pub mod method_args;
pub mod methods_cmd;
pub mod request;
pub mod secret;
pub mod service_cmd;
pub mod target;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vpoller",
    version,
    about = "A vSphere API proxy for monitoring systems"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter
    /// [default: warn; the daemon's comes from its configuration];
    /// VPOLLER_LOG overrides it
    #[arg(long, global = true)]
    pub log_level: Option<String>,

    /// Log as JSON lines
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print properties of vSphere objects as JSON
    Collect(collect::CollectArgs),
    /// Run one method against a vSphere host and print the reply
    Call(Box<call::CallArgs>),
    /// Manage the vSphere hosts vpoller polls
    #[command(subcommand)]
    Agent(agent_cmd::AgentCommand),
    /// Run the service: vPoller's wire protocol on ZeroMQ, methods run here
    Daemon(Box<service_cmd::DaemonArgs>),
    /// Run a proxy: clients on the frontend, workers on the backend
    Proxy(Box<service_cmd::DaemonArgs>),
    /// Run a worker for a proxy
    Worker(Box<service_cmd::DaemonArgs>),
    /// Send one request to a vpoller (or vPoller) proxy, like vpoller-client
    Client(Box<service_cmd::ClientArgs>),
    /// List or check the method scripts
    #[command(subcommand)]
    Methods(methods_cmd::MethodsCommand),
    /// Shell completions and man pages
    #[command(subcommand)]
    Generate(generate::GenerateCommand),
}

/// Runs a parsed command. `Ok(false)` means it ran but did not succeed
/// (exit status 1 with nothing more to say); errors are printed by the caller.
pub async fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Collect(args) => collect::run(args).await.map(|()| true),
        Command::Call(args) => call::run(*args).await,
        Command::Methods(command) => methods_cmd::run(command),
        Command::Generate(command) => generate::run(command),
        Command::Agent(command) => agent_cmd::run(command).await,
        Command::Client(args) => service_cmd::client(*args).await,
        Command::Daemon(args) => service_cmd::service(service_cmd::Role::Daemon, &args).await,
        Command::Proxy(args) => service_cmd::service(service_cmd::Role::Proxy, &args).await,
        Command::Worker(args) => service_cmd::service(service_cmd::Role::Worker, &args).await,
    }
}

/// A `--timeout`-style flag in seconds: positive, finite, and at most a
/// year, so that adding it to a clock cannot overflow.
pub fn positive_seconds(flag: &str, value: f64) -> Result<std::time::Duration, String> {
    const YEAR: f64 = 366.0 * 24.0 * 3600.0;
    if !(value.is_finite() && value > 0.0 && value <= YEAR) {
        return Err(format!(
            "{flag} {value} must be a positive number of seconds, at most a year"
        ));
    }
    std::time::Duration::try_from_secs_f64(value).map_err(|e| format!("{flag} {value}: {e}"))
}
