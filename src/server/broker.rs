//! `vpoller proxy`: clients on a ROUTER frontend, workers on a ROUTER
//! backend, and requests handed to workers that have room for them (the
//! load-balancing broker pattern), not round-robin.
//!
//! Between proxy and workers (ours, not vPoller's; clients never see it):
//!
//! | from   | frames                          | meaning |
//! |--------|---------------------------------|---------|
//! | worker | `READY`, capacity               | I can run this many requests at once |
//! | worker | `HEARTBEAT`                     | still here |
//! | worker | `REPLY`, client, body           | the reply to a request; one slot free again |
//! | worker | `BYE`                           | leaving; send me nothing more |
//! | proxy  | `REQUEST`, client, body         | run this |
//! | proxy  | `HEARTBEAT`                     | still here |
//!
//! A worker silent for three heartbeat intervals is dead: it gets no more
//! work, and every request it held is answered with an error, never left
//! to time out in silence. A request that has waited in the queue longer
//! than its client would wait is dropped with a log line.

use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use zeromq::{RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::config::Config;
use super::zmq::{Management, bindable, serve_management};

pub const READY: &[u8] = b"READY";
pub const HEARTBEAT: &[u8] = b"HEARTBEAT";
pub const REQUEST: &[u8] = b"REQUEST";
pub const REPLY: &[u8] = b"REPLY";
pub const BYE: &[u8] = b"BYE";

const WORKER_LOST: &str = "The worker handling this request stopped before replying";

struct Client {
    identity: Bytes,
    delimited: bool,
}

struct Pending {
    client: Client,
    body: Bytes,
    since: Instant,
}

struct Worker {
    capacity: usize,
    in_flight: HashMap<Bytes, Client>,
    last_seen: Instant,
    last_given: Instant,
    served: u64,
}

#[derive(Default)]
struct BrokerState {
    workers: HashMap<Bytes, Worker>,
    queue: VecDeque<Pending>,
    done: u64,
    dropped: u64,
    lost: u64,
}

impl BrokerState {
    /// The worker with the most free slots (the longest idle among equals).
    fn pick(&self) -> Option<Bytes> {
        self.workers
            .iter()
            .filter(|(_, w)| w.in_flight.len() < w.capacity)
            .max_by_key(|(_, w)| {
                (
                    w.capacity - w.in_flight.len(),
                    std::cmp::Reverse(w.last_given),
                )
            })
            .map(|(id, _)| id.clone())
    }
}

struct ProxyStatus {
    state: Arc<Mutex<BrokerState>>,
    config: Config,
    started: Instant,
}

impl Management for ProxyStatus {
    fn title(&self) -> &str {
        "vPoller Proxy"
    }

    fn status(&self) -> Value {
        let Ok(state) = self.state.lock() else {
            return json!({"status": "running"});
        };
        let workers: Vec<Value> = state
            .workers
            .values()
            .map(|w| {
                json!({"capacity": w.capacity, "in_flight": w.in_flight.len(), "served": w.served,
                             "last_seen_ms": w.last_seen.elapsed().as_millis() as u64})
            })
            .collect();
        json!({
            "status": "running",
            "hostname": super::daemon::hostname(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "frontend": self.config.proxy_frontend,
            "backend": self.config.proxy_backend,
            "mgmt": self.config.proxy_mgmt,
            "workers_connected": workers.len(),
            "workers": workers,
            "requests": {
                "queued": state.queue.len(),
                "in_flight": state.workers.values().map(|w| w.in_flight.len()).sum::<usize>(),
                "done": state.done,
                "dropped_expired": state.dropped,
                "lost_with_a_worker": state.lost,
            },
        })
    }

    fn reload(&self) -> Value {
        json!({"note": "the proxy runs no methods; reload its workers"})
    }
}

fn frames(parts: Vec<Bytes>) -> Option<ZmqMessage> {
    ZmqMessage::try_from(parts).ok()
}

fn client_reply(client: &Client, body: Bytes) -> Option<ZmqMessage> {
    let mut out = vec![client.identity.clone()];
    if client.delimited {
        out.push(Bytes::new());
    }
    out.push(body);
    frames(out)
}

/// Runs the proxy until SIGTERM, SIGINT or `shutdown`.
pub async fn run(config: Config) -> Result<(), String> {
    let mut frontend = RouterSocket::new();
    frontend
        .bind(&bindable(&config.proxy_frontend))
        .await
        .map_err(|e| format!("cannot bind the frontend {}: {e}", config.proxy_frontend))?;
    let mut backend = RouterSocket::new();
    backend
        .bind(&bindable(&config.proxy_backend))
        .await
        .map_err(|e| format!("cannot bind the backend {}: {e}", config.proxy_backend))?;
    tracing::info!(frontend = %config.proxy_frontend, backend = %config.proxy_backend, "proxy running");

    let state = Arc::new(Mutex::new(BrokerState::default()));
    let (stop, mut stopped) = watch::channel(false);
    super::daemon::stop_on_signals(stop.clone());
    let status = Arc::new(ProxyStatus {
        state: state.clone(),
        config: config.clone(),
        started: Instant::now(),
    });
    let mgmt_endpoint = config.proxy_mgmt.clone();
    let mgmt_stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_management(&mgmt_endpoint, status, mgmt_stop).await {
            tracing::error!("{e}");
        }
    });

    let heartbeat = config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat);
    loop {
        let mut to_clients: Vec<ZmqMessage> = Vec::new();
        let mut to_workers: Vec<ZmqMessage> = Vec::new();
        tokio::select! {
            received = frontend.recv() => {
                let Ok(message) = received else { continue };
                let parts = message.into_vec();
                let Some((identity, rest)) = parts.split_first() else { continue };
                let delimited = rest.first().is_some_and(|f| f.is_empty());
                let body = if delimited { rest.get(1) } else { rest.first() }.cloned().unwrap_or_default();
                if let Ok(mut s) = state.lock() {
                    s.queue.push_back(Pending {
                        client: Client { identity: identity.clone(), delimited },
                        body,
                        since: Instant::now(),
                    });
                }
            }
            received = backend.recv() => {
                let Ok(message) = received else { continue };
                let parts = message.into_vec();
                if let Ok(mut s) = state.lock() {
                    from_worker(&mut s, parts, &mut to_clients);
                }
            }
            _ = tick.tick() => {
                if let Ok(mut s) = state.lock() {
                    housekeeping(&mut s, heartbeat, config.request_timeout, &mut to_clients, &mut to_workers);
                }
            }
            _ = stopped.changed() => break,
        }
        if let Ok(mut s) = state.lock() {
            while !s.queue.is_empty() {
                let Some(worker) = s.pick() else { break };
                let Some(p) = s.queue.pop_front() else { break };
                if let Some(m) = frames(vec![
                    worker.clone(),
                    Bytes::from_static(REQUEST),
                    p.client.identity.clone(),
                    p.body,
                ]) {
                    to_workers.push(m);
                }
                if let Some(w) = s.workers.get_mut(&worker) {
                    w.last_given = Instant::now();
                    w.in_flight.insert(p.client.identity.clone(), p.client);
                }
            }
        }
        for m in to_workers {
            if let Err(e) = backend.send(m).await {
                tracing::warn!("cannot send to a worker: {e}");
            }
        }
        for m in to_clients {
            if let Err(e) = frontend.send(m).await {
                tracing::debug!("cannot send to a client: {e}");
            }
        }
    }
    tracing::info!("proxy stopped");
    Ok(())
}

fn from_worker(s: &mut BrokerState, parts: Vec<Bytes>, to_clients: &mut Vec<ZmqMessage>) {
    let Some((worker, rest)) = parts.split_first() else {
        return;
    };
    let verb = rest.first().map(|b| b.as_ref()).unwrap_or_default();
    let now = Instant::now();
    match verb {
        v if v == READY => {
            let capacity = rest
                .get(1)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            tracing::info!(capacity, "a worker is ready");
            let entry = s.workers.entry(worker.clone()).or_insert(Worker {
                capacity,
                in_flight: HashMap::new(),
                last_seen: now,
                last_given: now,
                served: 0,
            });
            entry.capacity = capacity;
            entry.last_seen = now;
        }
        v if v == REPLY => {
            let (Some(client), Some(body)) = (rest.get(1), rest.get(2)) else {
                return;
            };
            if let Some(w) = s.workers.get_mut(worker) {
                w.last_seen = now;
                w.served += 1;
                if let Some(c) = w.in_flight.remove(client)
                    && let Some(m) = client_reply(&c, body.clone())
                {
                    to_clients.push(m);
                    s.done += 1;
                }
            }
        }
        v if v == HEARTBEAT => {
            if let Some(w) = s.workers.get_mut(worker) {
                w.last_seen = now;
            }
        }
        v if v == BYE => {
            if let Some(w) = s.workers.remove(worker) {
                fail_held(s, w, to_clients);
            }
        }
        _ => tracing::debug!("unknown message from a worker"),
    }
}

/// Answers every request a lost worker held.
fn fail_held(s: &mut BrokerState, worker: Worker, to_clients: &mut Vec<ZmqMessage>) {
    let error = Bytes::from(json!({"success": 1, "msg": WORKER_LOST}).to_string());
    for client in worker.in_flight.into_values() {
        s.lost += 1;
        if let Some(m) = client_reply(&client, error.clone()) {
            to_clients.push(m);
        }
    }
}

fn housekeeping(
    s: &mut BrokerState,
    heartbeat: Duration,
    request_timeout: Duration,
    to_clients: &mut Vec<ZmqMessage>,
    to_workers: &mut Vec<ZmqMessage>,
) {
    let dead: Vec<Bytes> = s
        .workers
        .iter()
        .filter(|(_, w)| w.last_seen.elapsed() > heartbeat * 3)
        .map(|(id, _)| id.clone())
        .collect();
    for id in dead {
        if let Some(w) = s.workers.remove(&id) {
            tracing::warn!(
                held = w.in_flight.len(),
                "a worker stopped answering; its requests get an error"
            );
            fail_held(s, w, to_clients);
        }
    }
    let before = s.queue.len();
    s.queue.retain(|p| p.since.elapsed() < request_timeout);
    let expired = before - s.queue.len();
    if expired > 0 {
        s.dropped += expired as u64;
        tracing::warn!(
            expired,
            "dropped requests that waited longer than their clients would"
        );
    }
    for id in s.workers.keys() {
        if let Some(m) = frames(vec![id.clone(), Bytes::from_static(HEARTBEAT)]) {
            to_workers.push(m);
        }
    }
}
