//! The long-running service: vPoller's wire protocol over ZeroMQ.
//!
//! A request frame flows transport ([`zmq`]) → [`dispatch::Dispatcher`] →
//! method host → reply frame. [`daemon`] runs it all in one process.

pub mod broker;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod worker;
pub mod zmq;
