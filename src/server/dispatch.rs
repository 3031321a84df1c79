//! From a request frame to a reply frame, whatever carried it.
//!
//! This is the whole interface between a transport and the method layer:
//! bytes in, text out, exactly one reply per request. The checks and their
//! messages are vPoller's (its worker's `process_client_msg`).

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::methods::{MethodHost, Reply};

/// Frames larger than this are refused unread.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Counters for `status`.
#[derive(Default)]
pub struct Stats {
    pub in_flight: AtomicU64,
    pub done: AtomicU64,
    pub errors_by_method: Mutex<BTreeMap<String, u64>>,
}

pub struct Dispatcher {
    host: Arc<MethodHost>,
    pub stats: Stats,
    pub metrics: super::metrics::RequestMetrics,
    pub started: Instant,
}

impl Dispatcher {
    pub fn new(host: Arc<MethodHost>) -> Dispatcher {
        Dispatcher {
            host,
            stats: Stats::default(),
            metrics: super::metrics::RequestMetrics::default(),
            started: Instant::now(),
        }
    }

    pub fn host(&self) -> &Arc<MethodHost> {
        &self.host
    }

    /// Handles one request frame and returns the reply frame.
    pub async fn handle(&self, frame: &[u8]) -> String {
        self.handle_reply(frame).await.wire()
    }

    /// As [`handle`](Self::handle), the reply before it is written out.
    pub async fn handle_reply(&self, frame: &[u8]) -> Reply {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (method, agent, reply) = self.reply(frame).await;
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        if !reply.success
            && let Ok(mut errors) = self.stats.errors_by_method.lock()
        {
            *errors
                .entry(method.clone().unwrap_or_else(|| "(none)".into()))
                .or_default() += 1;
        }
        let catalog = self.host.catalog();
        let label = super::metrics::method_label(|m| catalog.get(m).is_some(), method.as_deref());
        self.metrics.observe(label, &reply, started.elapsed());
        tracing::debug!(
            method = method.as_deref().unwrap_or("-"),
            agent = agent.as_deref().unwrap_or("-"),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            success = reply.success,
            "request"
        );
        reply
    }

    async fn reply(&self, frame: &[u8]) -> (Option<String>, Option<String>, Reply) {
        if frame.len() > MAX_REQUEST_BYTES {
            return (None, None, oversize());
        }
        let Ok(request) = serde_json::from_slice::<Value>(frame) else {
            return (None, None, invalid_message(frame));
        };
        if !request.is_object() {
            return (
                None,
                None,
                Reply::refusal(format!(
                    "Expected a JSON message, received <class '{}'>",
                    python_type(&request)
                )),
            );
        }
        let text = |k: &str| request.get(k).and_then(Value::as_str).map(str::to_string);
        let (method, agent) = (text("method"), text("hostname"));
        let reply = self.host.handle(request).await;
        (method, agent, reply)
    }
}

/// What a frame over [`MAX_REQUEST_BYTES`] gets, unread.
pub fn oversize() -> Reply {
    Reply::refusal("Invalid message received")
}

/// What a frame that names no agent gets, from a process that cannot run it
/// (a proxy forwarding by agent): vPoller's messages for it.
pub fn refusal_of(frame: &[u8]) -> Reply {
    match serde_json::from_slice::<Value>(frame) {
        Ok(Value::Object(_)) => Reply::refusal("Unknown or missing agent name"),
        Ok(other) => Reply::refusal(format!(
            "Expected a JSON message, received <class '{}'>",
            python_type(&other)
        )),
        Err(_) => invalid_message(frame),
    }
}

/// vPoller's answer to a frame that is not JSON. A C client that can still
/// be recognised by the helper it named gets the NUL it reads up to.
fn invalid_message(frame: &[u8]) -> Reply {
    let reply = Reply::refusal("Invalid message received");
    let names = |helper: &[u8]| frame.windows(helper.len()).any(|w| w == helper);
    let raw = if names(b"vpoller.helpers.czabbix") {
        Some(format!("{}\0", reply.msg))
    } else if names(b"vpoller.helpers.cclient") {
        Some(format!(
            "{}\0",
            crate::methods::pyjson::dumps(&reply.to_json(), None)
        ))
    } else {
        None
    };
    Reply { raw, ..reply }
}

/// The name Python gives a decoded JSON value's type, as vPoller's message
/// shows it.
fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_frame_from_a_c_client_still_ends_in_a_nul() {
        let czabbix =
            br#"{"method": "vm.get", "name": "a"b", "helper": "vpoller.helpers.czabbix"}"#;
        assert_eq!(
            invalid_message(czabbix).wire(),
            "Invalid message received\0"
        );
        let cclient = br#"{"method": "about", "helper": "vpoller.helpers.cclient", "#;
        assert_eq!(
            invalid_message(cclient).wire(),
            "{\"success\": 1, \"msg\": \"Invalid message received\"}\0"
        );
        assert_eq!(
            invalid_message(b"garbage").wire(),
            r#"{"success":1,"msg":"Invalid message received"}"#
        );
        assert_eq!(python_type(&serde_json::json!(1.5)), "float");
        assert_eq!(python_type(&serde_json::json!(null)), "NoneType");
    }
}
