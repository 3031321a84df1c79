//! `vpoller call`: one method straight against vSphere, no daemon.

use clap::Args;
use serde_json::{Value, json};
use std::sync::Arc;

use super::method_args::MethodArgs;
use super::target::ConnectArgs;
use crate::agents::DirectAgent;
use crate::methods::MethodHost;

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The method, e.g. vm.get
    pub method: String,

    /// vSphere host to call: `host`, `host:port`, or an SDK URL
    #[arg(long, value_name = "URL", required = true)]
    pub url: Option<String>,

    /// User name to log in with
    #[arg(long, short = 'u', value_name = "USER", required = true)]
    pub user: Option<String>,

    /// The request's `hostname` [default: the --url as given]
    #[arg(long, short = 'V', value_name = "AGENT")]
    pub hostname: Option<String>,

    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Object name (for datastores, the datastore URL)
    #[arg(long, short = 'n')]
    pub name: Option<String>,

    /// Comma-separated property paths
    #[arg(long, short = 'p', value_delimiter = ',')]
    pub properties: Option<Vec<String>>,

    /// Key, e.g. a guest disk path for vm.disk.get
    #[arg(long, short = 'k')]
    pub key: Option<String>,

    /// Performance counter name, group.name.unit.rollup
    #[arg(long, short = 'c')]
    pub counter: Option<String>,

    /// Performance counter instance
    #[arg(long, short = 'i')]
    pub instance: Option<String>,

    /// Number of performance samples
    #[arg(long, short = 's')]
    pub max_sample: Option<String>,

    /// Historical performance interval name, e.g. "Past day"
    #[arg(long, short = 'T')]
    pub perf_interval: Option<String>,

    /// Output helper, e.g. vpoller.helpers.zabbix
    #[arg(long, short = 'H')]
    pub helper: Option<String>,

    #[command(flatten)]
    pub methods: MethodArgs,
}

impl CallArgs {
    /// The request as vpoller-client builds it: all twelve keys, null where
    /// not given.
    pub fn request(&self, hostname: &str) -> Value {
        json!({
            "method": self.method,
            "hostname": hostname,
            "name": self.name,
            "username": null,
            "password": null,
            "key": self.key,
            "properties": self.properties,
            "counter-name": self.counter,
            "instance": self.instance,
            "max-sample": self.max_sample,
            "perf-interval": self.perf_interval,
            "helper": self.helper,
        })
    }
}

/// Runs the method and prints the reply envelope; `Ok(false)` when the
/// reply says the call failed.
pub async fn run(args: CallArgs) -> Result<bool, String> {
    let url = args.url.clone().unwrap_or_default();
    let user = args.user.clone().unwrap_or_default();
    let (endpoint, credentials) = args.connect.login_for(&url, &user)?;
    let hostname = args.hostname.clone().unwrap_or_else(|| url.clone());
    let agent = Arc::new(DirectAgent::new(hostname.clone(), endpoint, credentials));
    let host = MethodHost::new(
        args.methods.dirs(),
        args.methods.limits()?,
        agent.clone(),
        tokio::runtime::Handle::current(),
    )?;
    let reply = host.handle(args.request(&hostname)).await;
    println!("{}", reply.to_json());
    if let Some(session) = agent.connected()
        && let Err(e) = session.logout().await
    {
        tracing::debug!("logout: {e}");
    }
    Ok(reply.success)
}
