//! vPoller's wire over ZeroMQ (libzmq, through [`super::zsocket`]): the
//! client frontend, the management socket, and the client side.
//!
//! Clients are REQ sockets sending one JSON frame; the frontend is a ROUTER
//! that sees `[identity, "", request]` and answers `[identity, "", reply]`.
//! Everything past the frame goes to an [`Answerer`], so another
//! transport needs nothing but its own version of this file.

use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::dispatch::MAX_REQUEST_BYTES;
use super::route::Answerer;
use super::zsocket::{Frames, Kind, Limits, ZSocket};

/// Requests worked on at once by one frontend. Past this, the frontend stops
/// reading until one finishes, so a flood queues in ZeroMQ rather than in
/// memory as Lua states.
pub const MAX_IN_FLIGHT: usize = 1024;

/// What a client may send: frames up to four times the request limit are
/// read and answered with vPoller's error; a larger frame drops the client
/// before it is read.
pub const CLIENT_LIMITS: Limits = Limits {
    max_frame: 4 * MAX_REQUEST_BYTES,
    max_frames: 8,
};

/// What a management client may send.
pub const MANAGEMENT_LIMITS: Limits = Limits {
    max_frame: 64 << 10,
    max_frames: 4,
};

/// Replies can be large (a discover of a big inventory): what a reply may
/// carry between our own processes.
pub const REPLY_LIMITS: Limits = Limits {
    max_frame: 256 << 20,
    max_frames: 8,
};

/// How long a closing socket waits for libzmq to write out its replies.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Who asked, as a ROUTER saw it: REQ clients put an empty delimiter
/// before the body, DEALER clients do not. The reply goes back the same way.
#[derive(Clone)]
pub struct Envelope {
    pub identity: Bytes,
    pub delimited: bool,
}

impl Envelope {
    /// Splits `[identity, "", body]` or `[identity, body]`.
    pub fn open(frames: Frames) -> Option<(Envelope, Bytes)> {
        let mut frames = frames.into_iter();
        let identity = frames.next()?;
        let first = frames.next().unwrap_or_default();
        let delimited = first.is_empty();
        let body = if delimited {
            frames.next().unwrap_or_default()
        } else {
            first
        };
        Some((
            Envelope {
                identity,
                delimited,
            },
            body,
        ))
    }

    pub fn reply(&self, body: Bytes) -> Frames {
        let mut out = Vec::with_capacity(3);
        out.push(self.identity.clone());
        if self.delimited {
            out.push(Bytes::new());
        }
        out.push(body);
        out
    }
}

/// Serves client requests on a ROUTER socket until `stop` turns true, then
/// finishes the requests in flight (within `grace`) and returns.
pub async fn serve_frontend(
    endpoint: &str,
    answerer: Answerer,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), String> {
    let mut socket = ZSocket::bind(Kind::Router, endpoint, CLIENT_LIMITS)
        .map_err(|e| format!("cannot bind the frontend {endpoint}: {e}"))?;
    tracing::info!("serving requests on {endpoint}");
    let mut work = JoinSet::new();
    loop {
        tokio::select! {
            received = socket.recv(), if work.len() < MAX_IN_FLIGHT => {
                let Some(frames) = received else { break };
                let Some((envelope, body)) = Envelope::open(frames) else { continue };
                let (answerer, send) = (answerer.clone(), socket.sender());
                work.spawn(async move {
                    let answer = answerer.answer(body).await;
                    send.send(envelope.reply(answer.body));
                });
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    tracing::info!(
        in_flight = work.len(),
        "stopping: finishing the requests in flight"
    );
    let finished =
        tokio::time::timeout(grace, async { while work.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            abandoned = work.len(),
            "grace period over; abandoning requests in flight"
        );
        work.abort_all();
    }
    socket.close(CLOSE_LINGER).await;
    Ok(())
}

/// What the management socket can be asked.
pub trait Management: Send + Sync {
    fn status(&self) -> Value;
    fn reload(&self) -> Value;
    /// Name used in messages, e.g. "vPoller Proxy" or "vpoller daemon".
    fn title(&self) -> &str;
}

/// Serves `status`, `reload` and `shutdown` on a REP socket. `shutdown`
/// flips `stop`, which every part of the process watches.
pub async fn serve_management(
    endpoint: &str,
    management: Arc<dyn Management>,
    stop: watch::Sender<bool>,
) -> Result<(), String> {
    let mut socket = ZSocket::bind(Kind::Rep, endpoint, MANAGEMENT_LIMITS)
        .map_err(|e| format!("cannot bind the management socket {endpoint}: {e}"))?;
    let mut stopping = stop.subscribe();
    loop {
        let received = tokio::select! {
            r = socket.recv() => r,
            _ = stopping.changed() => break,
        };
        let Some(request) = received else { break };
        let frame = request.into_iter().last().unwrap_or_default();
        let (reply, shutdown) = management_reply(&frame, management.as_ref());
        socket.send(vec![Bytes::from(reply.to_string())]);
        if shutdown {
            let _ = stop.send(true);
            break;
        }
    }
    socket.close(CLOSE_LINGER).await;
    Ok(())
}

/// SIGHUP does what the management socket's `reload` does (systemd's
/// `ExecReload`), for as long as the process runs.
pub fn reload_on_hangup(management: Arc<dyn Management>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while hangups.recv().await.is_some() {
            let outcome = management.reload();
            tracing::info!(%outcome, "SIGHUP: reloaded");
        }
    });
}

/// Serves the management socket in a task of its own; a failure to bind is
/// logged (the service goes on without it).
pub fn spawn_management(
    endpoint: String,
    management: Arc<dyn Management>,
    stop: watch::Sender<bool>,
) {
    reload_on_hangup(management.clone());
    tokio::spawn(async move {
        if let Err(e) = serve_management(&endpoint, management, stop).await {
            tracing::error!("{e}");
        }
    });
}

fn management_reply(frame: &[u8], management: &dyn Management) -> (Value, bool) {
    let Ok(request) = serde_json::from_slice::<Value>(frame) else {
        return (
            json!({"success": 1, "msg": "Invalid message received"}),
            false,
        );
    };
    match request.get("method").and_then(Value::as_str) {
        None => (json!({"success": 1, "msg": "Missing method name"}), false),
        Some("status") => (
            json!({"success": 0, "msg": format!("{} status", management.title()), "result": management.status()}),
            false,
        ),
        Some("reload") => (
            json!({"success": 0, "msg": "Reloaded methods and agents", "result": management.reload()}),
            false,
        ),
        Some("shutdown") => (
            json!({"success": 0, "msg": "Shutdown time has arrived"}),
            true,
        ),
        Some(_) => (
            json!({"success": 1, "msg": "Unknown method name received"}),
            false,
        ),
    }
}

/// One request and its reply over a REQ socket, vpoller-client style: each
/// attempt gets a fresh socket and `timeout`; after `attempts` silent tries
/// the answer is vPoller's "Did not receive response".
pub async fn request(endpoint: &str, body: &str, timeout: Duration, attempts: u32) -> String {
    for attempt in 1..=attempts.max(1) {
        let mut socket = match ZSocket::connect(Kind::Req, endpoint, REPLY_LIMITS) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(attempt, "cannot connect to {endpoint}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        socket.send(vec![Bytes::from(body.to_string())]);
        let tried = tokio::time::timeout(timeout, socket.recv()).await;
        socket.close(Duration::ZERO).await;
        match tried {
            Ok(Some(reply)) => {
                let frame = reply.into_iter().last().unwrap_or_default();
                return String::from_utf8_lossy(&frame).into_owned();
            }
            Ok(None) => tracing::debug!(attempt, "the socket to {endpoint} closed"),
            Err(_) => tracing::debug!(attempt, "no reply from {endpoint} within {timeout:?}"),
        }
    }
    json!({"success": 1, "msg": NO_RESPONSE}).to_string()
}

/// vPoller's client's message when no reply came in time; Zabbix items and
/// scripts know it.
pub const NO_RESPONSE: &str = "Did not receive response, aborting...";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Quiet;

    impl Management for Quiet {
        fn status(&self) -> Value {
            json!({"status": "running"})
        }
        fn reload(&self) -> Value {
            json!({})
        }
        fn title(&self) -> &str {
            "test"
        }
    }

    proptest! {
        #[test]
        fn any_management_frame_gets_an_envelope(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
            let (reply, _) = management_reply(&frame, &Quiet);
            prop_assert!(reply["success"] == 0 || reply["success"] == 1);
            prop_assert!(reply["msg"].is_string());
        }

        #[test]
        fn only_shutdown_stops(method in "[a-z]{0,10}") {
            let frame = json!({"method": method}).to_string();
            let (_, stops) = management_reply(frame.as_bytes(), &Quiet);
            prop_assert_eq!(stops, method == "shutdown");
        }
    }

    #[test]
    fn envelopes_come_back_the_way_they_came() {
        let from_req = vec![
            Bytes::from_static(b"id"),
            Bytes::new(),
            Bytes::from_static(b"{}"),
        ];
        let (envelope, body) = Envelope::open(from_req.clone()).expect("opens");
        assert_eq!(&body[..], b"{}");
        assert_eq!(envelope.reply(body), from_req);
        let from_dealer = vec![Bytes::from_static(b"id"), Bytes::from_static(b"{}")];
        let (envelope, body) = Envelope::open(from_dealer.clone()).expect("opens");
        assert_eq!(envelope.reply(body), from_dealer);
        assert!(Envelope::open(Vec::new()).is_none());
    }
}
