#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

use vpoller::cli::{self, Cli};

/// jemalloc returns freed memory to the system on a timer (see
/// .cargo/config.toml); glibc's malloc kept a large request's memory for
/// good, so the process looked like it leaked.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::agent_cmd::command_first(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    let (level, json) = logging_for(&cli);
    init_logging(&level, json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vpoller: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a runtime worker rather than the main thread: a request task that
    // a service loop spawns then starts on the worker that spawned it,
    // without waking another thread (about 20 us per request on 2 cores).
    let outcome = runtime.block_on(async {
        tokio::spawn(cli::run(cli))
            .await
            .unwrap_or_else(|e| Err(format!("the command stopped: {e}")))
    });
    drop(runtime);
    vpoller::methods::embedded::remove_extracted();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("vpoller: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, json: bool) {
    let filter = EnvFilter::try_from_env("VPOLLER_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The daemon logs at its configuration's level and format unless the
/// command line says otherwise; everything else logs warnings.
fn logging_for(cli: &Cli) -> (String, bool) {
    let service = match &cli.command {
        cli::Command::Daemon(a) => Some((a, cli::service_cmd::Role::Daemon)),
        cli::Command::Proxy(a) => Some((a, cli::service_cmd::Role::Proxy)),
        cli::Command::Worker(a) => Some((a, cli::service_cmd::Role::Worker)),
        _ => None,
    };
    if let Some((args, role)) = service
        && args.action == cli::service_cmd::Action::Start
        && let Ok((config, _)) = args.config(role)
    {
        let level = cli.log_level.clone().unwrap_or(config.log_level);
        return (level, cli.log_json || config.log_json);
    }
    (
        cli.log_level.clone().unwrap_or_else(|| "warn".into()),
        cli.log_json,
    )
}
