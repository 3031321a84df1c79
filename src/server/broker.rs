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

use super::config::Config;
use super::wire::{
    CLIENT_LIMITS, CLOSE_LINGER, Envelope, Management, REPLY_LIMITS, spawn_management,
};
use super::zsocket::{Frames, Kind, ZSocket};

pub const READY: &[u8] = b"READY";
pub const HEARTBEAT: &[u8] = b"HEARTBEAT";
pub const REQUEST: &[u8] = b"REQUEST";
pub const REPLY: &[u8] = b"REPLY";
pub const BYE: &[u8] = b"BYE";

const WORKER_LOST: &str = "The worker handling this request stopped before replying";
const STOPPING: &str = "The proxy is stopping; the request was not run";

struct Pending {
    client: Envelope,
    body: Bytes,
    since: Instant,
}

struct Worker {
    capacity: usize,
    in_flight: HashMap<Bytes, Envelope>,
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

/// Runs the proxy until SIGTERM, SIGINT or `shutdown`; then takes no new
/// requests, delivers the replies of those the workers hold (within
/// `grace`), and exits.
pub async fn run(config: Config) -> Result<(), String> {
    if !config.nats.url.is_empty() {
        return super::nats::frontend::run(config, "vPoller Proxy").await;
    }
    let mut frontend = ZSocket::bind(Kind::Router, &config.proxy_frontend, CLIENT_LIMITS)
        .map_err(|e| format!("cannot bind the frontend {}: {e}", config.proxy_frontend))?;
    let mut backend = ZSocket::bind(Kind::Router, &config.proxy_backend, REPLY_LIMITS)
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
    spawn_management(config.proxy_mgmt.clone(), status.clone(), stop.clone());
    let web = super::http::start(
        &config,
        super::http::proxy_backend(&config, status)?,
        false,
        stopped.clone(),
    )
    .await?;

    let heartbeat = config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            received = frontend.recv() => {
                let Some(frames) = received else { break };
                let Some((client, body)) = Envelope::open(frames) else { continue };
                if let Ok(mut s) = state.lock() {
                    s.queue.push_back(Pending { client, body, since: Instant::now() });
                }
            }
            received = backend.recv() => {
                let Some(frames) = received else { break };
                if let Ok(mut s) = state.lock() {
                    from_worker(&mut s, frames, &frontend);
                }
            }
            _ = tick.tick() => {
                if let Ok(mut s) = state.lock() {
                    housekeeping(&mut s, heartbeat, config.request_timeout, &frontend, &backend);
                }
            }
            _ = stopped.changed() => break,
        }
        if let Ok(mut s) = state.lock() {
            hand_out(&mut s, &backend);
        }
    }
    drain(&state, &mut frontend, &mut backend, config.grace).await;
    frontend.close(CLOSE_LINGER).await;
    backend.close(Duration::ZERO).await;
    let _ = stop.send(true);
    for task in web {
        let _ = task.await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// Gives queued requests to workers with free slots.
fn hand_out(s: &mut BrokerState, backend: &ZSocket) {
    while !s.queue.is_empty() {
        let Some(worker) = s.pick() else { break };
        let Some(p) = s.queue.pop_front() else { break };
        backend.send(vec![
            worker.clone(),
            Bytes::from_static(REQUEST),
            p.client.identity.clone(),
            p.body,
        ]);
        if let Some(w) = s.workers.get_mut(&worker) {
            w.last_given = Instant::now();
            w.in_flight.insert(p.client.identity.clone(), p.client);
        }
    }
}

/// On the way out: nothing new is read from clients, requests still queued
/// are told the proxy is stopping, and the replies of requests the workers
/// hold are passed on as they come, until none is held or `grace` is over.
async fn drain(
    state: &Mutex<BrokerState>,
    frontend: &mut ZSocket,
    backend: &mut ZSocket,
    grace: Duration,
) {
    let held = |state: &Mutex<BrokerState>| {
        state
            .lock()
            .map(|s| s.workers.values().map(|w| w.in_flight.len()).sum::<usize>())
            .unwrap_or(0)
    };
    if let Ok(mut s) = state.lock() {
        let stopping = Bytes::from(json!({"success": 1, "msg": STOPPING}).to_string());
        for p in std::mem::take(&mut s.queue) {
            frontend.send(p.client.reply(stopping.clone()));
        }
    }
    tracing::info!(
        held = held(state),
        "stopping: delivering the replies workers hold"
    );
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    while held(state) > 0 {
        tokio::select! {
            received = backend.recv() => {
                let Some(frames) = received else { break };
                if let Ok(mut s) = state.lock() {
                    from_worker(&mut s, frames, frontend);
                }
            }
            _ = &mut deadline => {
                tracing::warn!(abandoned = held(state), "grace period over; abandoning requests in flight");
                break;
            }
        }
    }
}

fn from_worker(s: &mut BrokerState, parts: Frames, frontend: &ZSocket) {
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
                if let Some(c) = w.in_flight.remove(client) {
                    frontend.send(c.reply(body.clone()));
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
                fail_held(s, w, frontend);
            }
        }
        _ => tracing::debug!("unknown message from a worker"),
    }
}

/// Answers every request a lost worker held.
fn fail_held(s: &mut BrokerState, worker: Worker, frontend: &ZSocket) {
    let error = Bytes::from(json!({"success": 1, "msg": WORKER_LOST}).to_string());
    for client in worker.in_flight.into_values() {
        s.lost += 1;
        frontend.send(client.reply(error.clone()));
    }
}

fn housekeeping(
    s: &mut BrokerState,
    heartbeat: Duration,
    request_timeout: Duration,
    frontend: &ZSocket,
    backend: &ZSocket,
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
            fail_held(s, w, frontend);
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
        backend.send(vec![id.clone(), Bytes::from_static(HEARTBEAT)]);
    }
}
