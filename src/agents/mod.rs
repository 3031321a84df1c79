//! vSphere agents: the hosts vpoller polls, by the name clients use.
//!
//! [`store`] is the SQLite registry (passwords sealed with [`secret_key`]);
//! [`registry::RegistryAgents`] serves it to the method host, and
//! [`DirectAgent`] is one host given on the command line.

mod direct;
pub mod registry;
pub mod secret_key;
pub mod store;

pub use direct::DirectAgent;
pub use registry::RegistryAgents;
pub use store::{AgentChanges, AgentRecord, Store};
