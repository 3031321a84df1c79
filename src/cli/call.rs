//! `vpoller call`: one method straight against vSphere, no daemon.

use clap::Args;
use serde_json::Value;
use std::sync::Arc;

use super::agent_cmd::RegistryArgs;
use super::method_args::MethodArgs;
use super::request::{Guest, RequestArgs};
use super::target::ConnectArgs;
use crate::agents::{DirectAgent, RegistryAgents};
use crate::methods::{Agents, MethodHost};

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The method, e.g. vm.get
    pub method: String,

    /// A registered agent to call (see `vpoller agent`)
    #[arg(
        long = "hostname",
        short = 'V',
        value_name = "AGENT",
        required_unless_present = "url"
    )]
    pub hostname: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Or: a vSphere host to call directly, `host`, `host:port`, or an SDK URL
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "hostname",
        requires = "user"
    )]
    pub url: Option<String>,

    /// User name to log in with (with --url)
    #[arg(long, short = 'u', value_name = "USER", requires = "url")]
    pub user: Option<String>,

    #[command(flatten)]
    pub connect: ConnectArgs,

    #[command(flatten)]
    pub fields: RequestArgs,

    #[command(flatten)]
    pub methods: MethodArgs,
}

impl CallArgs {
    pub fn request(&self, hostname: &str) -> Value {
        let guest = Guest {
            username: None,
            password: None,
        };
        self.fields.request(&self.method, hostname, guest)
    }
}

/// Where a `vpoller call` sends its request: a host given on the command
/// line, or a registered agent.
enum Target {
    Direct(Arc<DirectAgent>),
    Registry(Arc<RegistryAgents>),
}

impl Target {
    fn agents(&self) -> Arc<dyn Agents> {
        match self {
            Target::Direct(a) => a.clone(),
            Target::Registry(r) => r.clone(),
        }
    }

    async fn logout(&self) {
        match self {
            Target::Direct(a) => {
                if let Some(session) = a.connected()
                    && let Err(e) = session.shutdown().await
                {
                    tracing::debug!("logout: {e}");
                }
            }
            Target::Registry(r) => r.logout_all().await,
        }
    }
}

/// Runs the method and prints the reply envelope; `Ok(false)` when the
/// reply says the call failed.
pub async fn run(args: CallArgs) -> Result<bool, String> {
    let (target, hostname) = match (&args.url, &args.hostname) {
        (Some(url), _) => {
            let user = args.user.clone().unwrap_or_default();
            let (endpoint, credentials) = args.connect.login_for(url, &user)?;
            let agent = DirectAgent::new(url.clone(), endpoint, credentials);
            (Target::Direct(Arc::new(agent)), url.clone())
        }
        (None, Some(agent)) => {
            let deadline = args.connect.deadline()?;
            let registry =
                RegistryAgents::open(&args.registry.db, &args.registry.key_file, deadline)?;
            (Target::Registry(Arc::new(registry)), agent.clone())
        }
        (None, None) => return Err("give an agent with -V AGENT, or a host with --url".into()),
    };
    let host = MethodHost::new(args.methods.dirs(), args.methods.limits()?, target.agents());
    let reply = host.handle(args.request(&hostname)).await;
    print_reply(&reply.wire());
    target.logout().await;
    Ok(reply.success)
}

/// Prints a reply; a closed pipe (`| head`) is not an error worth a panic.
fn print_reply(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}
