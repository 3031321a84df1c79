//! The `vpoller` command line.

pub mod collect;
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
}

/// Runs a parsed command; the error is printed by the caller.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Collect(args) => collect::run(args).await,
    }
}
