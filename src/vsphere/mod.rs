//! The vSphere core: everything vpoller says to vCenter and ESXi hosts.
//!
//! It knows nothing of Lua or transports. [`client::Client`] is one
//! vCenter as the rest of vpoller sees it, and owns what is kept per
//! vCenter. Beneath it, each concern is one module over the session, and
//! none of them is imported by the session:
//!
//! - [`session`]: the shared login, single-flight re-login, logout;
//! - [`guard`]: remembered login failures and the circuit breaker;
//! - [`view`]: container views (shared) and list views;
//! - [`collector`]: property collection, paging, discovery;
//! - [`inventory`]: the name index;
//! - [`performance`]: the perf counter table;
//! - [`perf_query`]: performance samples, batched and cached.
//!
//! The session encodes arguments with [`xml::encode`], posts them through
//! [`soap::Transport`] (a deadline per call, TLS from [`tls`]) and decodes
//! the reply with [`xml::decode`], typed by the vim25 [`schema`]. Faults
//! come back as [`fault::Error`] values with an [`ErrorKind`].

pub mod client;
pub mod collector;
pub mod fault;
pub mod guard;
pub mod inventory;
pub mod mirror;
pub mod moref;
pub mod perf_query;
pub mod performance;
pub mod schema;
pub mod session;
pub mod single_flight;
pub mod soap;
pub mod tls;
pub mod view;
pub mod xml;

pub use client::Client;
pub use collector::ObjectContent;
pub use fault::{Error, ErrorKind, Fault, FaultKind};
pub use guard::{GuardOptions, Guards};
pub use moref::MoRef;
pub use session::{Credentials, Password, Session, SessionOptions};
pub use soap::Endpoint;
pub use tls::TlsMode;
