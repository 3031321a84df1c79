//! The vSphere core: everything vpoller says to vCenter and ESXi hosts.
//!
//! It knows nothing of Lua or transports. The flow of one call:
//! [`session::Session`] (the shared login) encodes arguments with
//! [`xml::encode`], posts them through [`soap::Transport`] (deadline, TLS from
//! [`tls`]) and decodes the reply with [`xml::decode`], typed by the vim25
//! [`schema`]. [`view`] and [`collector`] build the inventory queries on top.
//! Faults come back as [`fault::Error`] values.

pub mod collector;
pub mod fault;
pub mod guard;
pub mod inventory;
pub mod moref;
pub mod performance;
pub mod schema;
pub mod session;
pub mod soap;
pub mod tls;
pub mod view;
pub mod xml;

pub use collector::ObjectContent;
pub use fault::{Error, ErrorKind, Fault, FaultKind};
pub use guard::{GuardOptions, Guards};
pub use moref::MoRef;
pub use session::{Credentials, Password, Session, SessionOptions};
pub use soap::Endpoint;
pub use tls::TlsMode;
