//! vSphere agents: the hosts vpoller polls, by the name clients use.
//!
//! [`store`] is the SQLite registry (passwords sealed with [`secret_key`]);
//! [`registry::RegistryAgents`] serves it to the method host, and
//! [`DirectAgent`] is one host given on the command line.

use std::future::Future;
use std::pin::Pin;

use crate::vsphere::{Client, Error};

mod direct;
pub mod registry;
pub mod secret_key;
pub mod store;

pub use direct::DirectAgent;
pub use registry::RegistryAgents;
pub use store::{AgentChanges, AgentRecord, Store};

/// Where the registry and its key live unless told otherwise.
pub const DEFAULT_DB: &str = "/var/lib/vpoller/agents.db";
pub const DEFAULT_KEY_FILE: &str = "/etc/vpoller/agents.key";

/// Resolves a request's `hostname` to a vSphere session.
pub trait Agents: Send + Sync + 'static {
    /// Whether `hostname` names an agent that may be used (the registry's
    /// answer, without logging in).
    fn check(&self, hostname: &str) -> Result<(), String>;

    /// The shared client for `hostname`, logging in if needed.
    fn session<'a>(
        &'a self,
        hostname: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Client, Error>> + Send + 'a>>;
}
