//! The long-running service: vPoller's wire protocol over ZeroMQ.
//!
//! A request frame flows transport ([`wire`], over [`zsocket`]) → [`dispatch::Dispatcher`] →
//! method host → reply frame. [`daemon`] runs it all in one process.

pub mod broker;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod route;
pub mod wire;
pub mod worker;
pub mod zsocket;
