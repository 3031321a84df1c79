//! vpoller: a vSphere API proxy for monitoring systems.
//!
//! Requests come in (one-shot CLI, or the daemon's ZeroMQ transport), are
//! dispatched to a Lua method, and the method reads vSphere through one core
//! API, [`vsphere`], which owns sessions, views, property collection, and the
//! SOAP wire.

#![forbid(unsafe_code)]

pub mod agents;
pub mod cli;
pub mod methods;
pub mod server;
pub mod vsphere;
