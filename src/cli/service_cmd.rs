//! `vpoller daemon`, `vpoller client`: the service and its client.

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

use super::request::{Guest, RequestArgs};
use crate::methods::MethodDirs;
use crate::server::config::Config;
use crate::server::wire;

/// Where vPoller keeps its configuration.
pub const DEFAULT_CONFIG: &str = "/etc/vpoller/vpoller.conf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Run the service (the default)
    Start,
    /// Ask a running service for its status
    Status,
    /// Ask a running service to stop
    Stop,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[arg(value_enum, default_value = "start")]
    pub action: Action,

    /// Configuration file [default: /etc/vpoller/vpoller.conf, if it exists]
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Management endpoint of the running service (status, stop)
    #[arg(short = 'e', long = "endpoint", value_name = "ENDPOINT")]
    pub endpoint: Option<String>,

    /// Frontend endpoint for clients (overrides [proxy] frontend)
    #[arg(long, value_name = "ENDPOINT")]
    pub frontend: Option<String>,

    /// Management endpoint (overrides [proxy] mgmt, or [worker] mgmt for a worker)
    #[arg(long, value_name = "ENDPOINT")]
    pub mgmt: Option<String>,

    /// Backend endpoint for workers (proxy; overrides [proxy] backend)
    #[arg(long, value_name = "ENDPOINT")]
    pub backend: Option<String>,

    /// The proxy's backend to connect to (worker; overrides [worker] proxy)
    #[arg(long, value_name = "ENDPOINT")]
    pub proxy: Option<String>,

    /// Requests a worker runs at once (worker; overrides [worker] concurrency)
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Agent database (overrides [worker] db)
    #[arg(short = 'd', long = "db", value_name = "DB")]
    pub db: Option<PathBuf>,

    /// Key file of the agent database (overrides [worker] key-file)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// An admin method directory (repeatable; overrides [worker] methods-dir)
    #[arg(long = "methods-dir", value_name = "DIR")]
    pub methods_dirs: Vec<PathBuf>,

    /// NATS servers, comma-separated (overrides [nats] url): a worker
    /// answers its agents' subjects; a proxy or daemon runs no methods and
    /// forwards every request to them
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,

    /// Log as JSON lines (overrides [log] format)
    #[arg(long)]
    pub json_logs: bool,
}

impl DaemonArgs {
    /// The configuration: the file, then the flags over it.
    pub fn config(&self, role: Role) -> Result<(Config, Vec<String>), String> {
        let path = match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()),
        };
        let loaded = Config::load(path.as_deref())?;
        let mut config = loaded.config;
        if let Some(v) = &self.frontend {
            config.proxy_frontend = v.clone();
        }
        if let Some(v) = &self.mgmt {
            match role {
                Role::Worker => config.worker_mgmt = v.clone(),
                _ => config.proxy_mgmt = v.clone(),
            }
        }
        if let Some(v) = &self.backend {
            config.proxy_backend = v.clone();
        }
        if let Some(v) = &self.proxy {
            config.worker_proxy = v.clone();
        }
        if let Some(v) = self.concurrency {
            config.worker_concurrency = v;
        }
        if let Some(v) = &self.db {
            config.db = v.clone();
        }
        if let Some(v) = &self.key_file {
            config.key_file = v.clone();
        }
        if !self.methods_dirs.is_empty() {
            config.methods_dirs = self.methods_dirs.clone();
        }
        if let Some(url) = &self.nats {
            config.nats.url = url.clone();
        }
        config.log_json |= self.json_logs;
        Ok((config, loaded.warnings))
    }
}

/// Which service a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Daemon,
    Proxy,
    Worker,
}

/// Runs a service, or asks a running one for its status or to stop.
pub async fn service(role: Role, args: &DaemonArgs) -> Result<bool, String> {
    let (config, warnings) = args.config(role)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    if args.action != Action::Start {
        let default = match role {
            Role::Worker => config.worker_mgmt.clone(),
            _ => config.proxy_mgmt.clone(),
        };
        let endpoint = args.endpoint.clone().unwrap_or(default);
        return manage(&endpoint, args.action).await;
    }
    let dirs = method_dirs(&config);
    match role {
        Role::Daemon => crate::server::daemon::run(config, dirs).await,
        Role::Proxy => crate::server::broker::run(config).await,
        Role::Worker => crate::server::worker::run(config, dirs).await,
    }
    .map(|()| true)
}

pub fn method_dirs(config: &Config) -> MethodDirs {
    super::method_args::method_dirs(config.builtin_methods.clone(), &config.methods_dirs)
}

/// status/stop over the management socket; prints the reply.
pub async fn manage(endpoint: &str, action: Action) -> Result<bool, String> {
    let method = match action {
        Action::Status => "status",
        Action::Stop => "shutdown",
        Action::Start => return Err("start is not a management request".into()),
    };
    let reply = wire::request(
        endpoint,
        &json!({"method": method}).to_string(),
        Duration::from_secs(3),
        1,
    )
    .await;
    println!("{reply}");
    Ok(serde_json::from_str::<Value>(&reply).is_ok_and(|r| r["success"] == 0))
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Method to call
    #[arg(short = 'm', long = "method")]
    pub method: String,
    /// vSphere host (agent) to call
    #[arg(short = 'V', long = "vsphere-host")]
    pub vsphere_host: String,
    /// Number of attempts
    #[arg(short = 'r', long = "retries", default_value_t = 3)]
    pub retries: u32,
    /// Timeout of each attempt, in milliseconds
    #[arg(short = 't', long = "timeout", default_value_t = 10000)]
    pub timeout: u64,
    /// Endpoint of the proxy or daemon
    #[arg(
        short = 'e',
        long = "endpoint",
        default_value = "tcp://localhost:10123"
    )]
    pub endpoint: String,
    /// Guest OS user name (vm.process.get)
    #[arg(short = 'U', long = "guest-username")]
    pub guest_username: Option<String>,
    /// Guest OS password (vm.process.get; it shows in the process list, as with vpoller-client)
    #[arg(short = 'P', long = "guest-password")]
    pub guest_password: Option<String>,
    #[command(flatten)]
    pub fields: RequestArgs,
}

impl ClientArgs {
    pub fn request(&self) -> Value {
        let guest = Guest {
            username: self.guest_username.as_deref(),
            password: self.guest_password.as_deref(),
        };
        self.fields.request(&self.method, &self.vsphere_host, guest)
    }
}

/// Sends the request and prints the reply; the exit status says whether
/// the reply reports success (a helper's plain output counts as success).
pub async fn client(args: ClientArgs) -> Result<bool, String> {
    let reply = wire::request(
        &args.endpoint,
        &args.request().to_string(),
        Duration::from_millis(args.timeout.max(1)),
        args.retries,
    )
    .await;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{reply}").and_then(|()| out.flush());
    }
    Ok(
        match serde_json::from_str::<Value>(reply.trim_end_matches('\0')) {
            Ok(v) if v.get("success").is_some() => v["success"] == 0,
            _ => true,
        },
    )
}
