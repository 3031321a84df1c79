//! vPoller's wire over ZeroMQ (the pure-Rust `zeromq` crate): the client
//! frontend, the management socket, and the client side.
//!
//! Clients are REQ sockets sending one JSON frame; the frontend is a ROUTER
//! that sees `[identity, "", request]` and answers `[identity, "", reply]`.
//! Everything past the frame goes through [`Dispatcher`], so another
//! transport needs nothing but its own version of this file.

use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zeromq::{RepSocket, ReqSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::dispatch::Dispatcher;

/// Requests worked on at once by one frontend. Past this, the frontend stops
/// reading until one finishes, so a flood queues in ZeroMQ rather than in
/// memory as Lua states.
pub const MAX_IN_FLIGHT: usize = 1024;

/// `tcp://*:10123` as vPoller writes it; the crate wants an address.
pub fn bindable(endpoint: &str) -> String {
    endpoint.replace("://*:", "://0.0.0.0:")
}

fn message(frames: Vec<Bytes>) -> Option<ZmqMessage> {
    ZmqMessage::try_from(frames).ok()
}

/// Serves client requests on a ROUTER socket until `stop` turns true, then
/// finishes the requests in flight (within `grace`) and returns.
pub async fn serve_frontend(
    endpoint: &str,
    dispatcher: Arc<Dispatcher>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), String> {
    let mut socket = RouterSocket::new();
    socket
        .bind(&bindable(endpoint))
        .await
        .map_err(|e| format!("cannot bind the frontend {endpoint}: {e}"))?;
    tracing::info!("serving requests on {endpoint}");
    let (send, mut recv) = socket.split();
    // Each request's task sends its own reply: no hand-over to a sender task.
    let send = Arc::new(tokio::sync::Mutex::new(send));
    let mut work = JoinSet::new();
    loop {
        tokio::select! {
            received = recv.recv(), if work.len() < MAX_IN_FLIGHT => {
                let frames = match received {
                    Ok(m) => m.into_vec(),
                    Err(e) => {
                        tracing::warn!("frontend receive failed: {e}");
                        continue;
                    }
                };
                // [identity, "", body] from REQ; [identity, body] from DEALER.
                let Some((identity, rest)) = frames.split_first() else { continue };
                let delimited = rest.first().is_some_and(|f| f.is_empty());
                let body = if delimited { rest.get(1) } else { rest.first() }.cloned().unwrap_or_default();
                let (identity, dispatcher, send) = (identity.clone(), dispatcher.clone(), send.clone());
                work.spawn(async move {
                    let reply = dispatcher.handle(&body).await;
                    let mut out = vec![identity];
                    if delimited {
                        out.push(Bytes::new());
                    }
                    out.push(Bytes::from(reply));
                    if let Some(m) = message(out)
                        && let Err(e) = send.lock().await.send(m).await
                    {
                        tracing::warn!("cannot send a reply: {e}");
                    }
                });
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(recv);
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
    let mut socket = RepSocket::new();
    socket
        .bind(&bindable(endpoint))
        .await
        .map_err(|e| format!("cannot bind the management socket {endpoint}: {e}"))?;
    let mut stopping = stop.subscribe();
    loop {
        let received = tokio::select! {
            r = socket.recv() => r,
            _ = stopping.changed() => return Ok(()),
        };
        let Ok(request) = received else { continue };
        let frame = request.into_vec().pop().unwrap_or_default();
        let (reply, shutdown) = management_reply(&frame, management.as_ref());
        if let Some(m) = message(vec![Bytes::from(reply.to_string())]) {
            let _ = socket.send(m).await;
        }
        if shutdown {
            let _ = stop.send(true);
            return Ok(());
        }
    }
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
        let tried = tokio::time::timeout(timeout, async {
            let mut socket = ReqSocket::new();
            socket.connect(endpoint).await.map_err(|e| e.to_string())?;
            socket
                .send(ZmqMessage::from(body.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            let reply = socket.recv().await.map_err(|e| e.to_string())?;
            let frame = reply.into_vec().pop().unwrap_or_default();
            Ok::<String, String>(String::from_utf8_lossy(&frame).into_owned())
        })
        .await;
        match tried {
            Ok(Ok(reply)) => return reply,
            Ok(Err(e)) => {
                tracing::debug!(attempt, "request to {endpoint} failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => tracing::debug!(attempt, "no reply from {endpoint} within {timeout:?}"),
        }
    }
    json!({"success": 1, "msg": "Did not receive response, aborting..."}).to_string()
}
