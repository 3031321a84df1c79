//! The `vpoller` command line.

pub mod agent_cmd;
pub mod call;
pub mod collect;
pub mod method_args;
pub mod methods_cmd;
pub mod secret;
pub mod target;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vpoller",
    version,
    about = "A vSphere API proxy for monitoring systems"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter;
    /// VPOLLER_LOG overrides it
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,

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
    /// List or check the method scripts
    #[command(subcommand)]
    Methods(methods_cmd::MethodsCommand),
}

/// Runs a parsed command. `Ok(false)` means it ran but did not succeed
/// (exit status 1 with nothing more to say); errors are printed by the caller.
pub async fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Collect(args) => collect::run(args).await.map(|()| true),
        Command::Call(args) => call::run(*args).await,
        Command::Methods(command) => methods_cmd::run(command),
        Command::Agent(command) => agent_cmd::run(command).await,
    }
}
