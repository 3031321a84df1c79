//! `vpoller worker`: runs requests for a proxy, many at once, with one
//! vSphere session per agent shared by all of them (see [`super::broker`]
//! for the protocol). A proxy that goes silent is reconnected to, so a
//! restarted proxy is found again.

use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::broker::{BYE, HEARTBEAT, READY, REPLY, REQUEST};
use super::config::Config;
use super::dispatch::Dispatcher;
use super::zmq::{Management, serve_management};
use crate::agents::RegistryAgents;
use crate::methods::MethodDirs;

struct WorkerStatus {
    dispatcher: Arc<Dispatcher>,
    agents: Arc<RegistryAgents>,
    config: Config,
    capacity: usize,
}

impl Management for WorkerStatus {
    fn title(&self) -> &str {
        "vPoller Worker"
    }

    fn status(&self) -> Value {
        let (requests, sessions) = super::daemon::activity(&self.dispatcher, &self.agents);
        json!({
            "status": "running",
            "hostname": super::daemon::hostname(),
            "proxy": self.config.worker_proxy,
            "mgmt": self.config.worker_mgmt,
            "db": self.config.db,
            "concurrency": self.capacity,
            "uptime_seconds": self.dispatcher.started.elapsed().as_secs(),
            "requests": requests,
            "methods": self.dispatcher.host().catalog().methods.len(),
            "sessions": sessions,
        })
    }

    fn reload(&self) -> Value {
        let catalog = self.dispatcher.host().reload();
        json!({"methods": catalog.methods.len(), "method_problems": catalog.problems, "agents_error": self.agents.refresh().err()})
    }
}

fn message(parts: Vec<Bytes>) -> Option<ZmqMessage> {
    ZmqMessage::try_from(parts).ok()
}

async fn connect(endpoint: &str, capacity: usize) -> Option<DealerSocket> {
    let mut socket = DealerSocket::new();
    match tokio::time::timeout(Duration::from_secs(2), socket.connect(endpoint)).await {
        Ok(Ok(())) => {}
        _ => return None,
    }
    let ready = message(vec![
        Bytes::from_static(READY),
        Bytes::from(capacity.to_string()),
    ])?;
    socket.send(ready).await.ok()?;
    Some(socket)
}

/// Runs until SIGTERM, SIGINT or `shutdown`; then finishes what it holds
/// and logs out.
pub async fn run(config: Config, dirs: MethodDirs) -> Result<(), String> {
    let (agents, dispatcher) = super::daemon::method_service(&config, dirs)?;
    let capacity = match config.worker_concurrency {
        0 => 64 * std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let (stop, mut stopped) = watch::channel(false);
    super::daemon::stop_on_signals(stop.clone());
    let status = Arc::new(WorkerStatus {
        dispatcher: dispatcher.clone(),
        agents: agents.clone(),
        config: config.clone(),
        capacity,
    });
    let mgmt_endpoint = config.worker_mgmt.clone();
    let mgmt_stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = serve_management(&mgmt_endpoint, status, mgmt_stop).await {
            tracing::error!("{e}");
        }
    });

    let (replies, mut outbox) = mpsc::channel::<ZmqMessage>(1024);
    let mut work = JoinSet::new();
    let heartbeat = config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat);
    'connection: while !*stopped.borrow() {
        let Some(mut socket) = connect(&config.worker_proxy, capacity).await else {
            tokio::select! {
                _ = tokio::time::sleep(heartbeat) => continue,
                _ = stopped.changed() => break,
            }
        };
        tracing::info!(proxy = %config.worker_proxy, capacity, "connected to the proxy");
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                received = socket.recv() => {
                    let Ok(m) = received else { continue 'connection };
                    heard = Instant::now();
                    let parts = m.into_vec();
                    if parts.first().is_some_and(|v| v.as_ref() == REQUEST)
                        && let (Some(client), Some(body)) = (parts.get(1).cloned(), parts.get(2).cloned())
                    {
                        let (dispatcher, replies) = (dispatcher.clone(), replies.clone());
                        work.spawn(async move {
                            let reply = dispatcher.handle(&body).await;
                            if let Some(m) = message(vec![Bytes::from_static(REPLY), client, Bytes::from(reply)]) {
                                let _ = replies.send(m).await;
                            }
                        });
                    }
                }
                Some(reply) = outbox.recv() => {
                    if socket.send(reply).await.is_err() {
                        continue 'connection;
                    }
                }
                Some(_) = work.join_next(), if !work.is_empty() => {}
                _ = tick.tick() => {
                    if heard.elapsed() > heartbeat * 3 {
                        tracing::warn!("the proxy went silent; reconnecting");
                        continue 'connection;
                    }
                    if let Some(m) = message(vec![Bytes::from_static(HEARTBEAT)]) {
                        let _ = socket.send(m).await;
                    }
                }
                _ = stopped.changed() => {
                    // Finish and send what is held, then say goodbye.
                    let grace = tokio::time::sleep(config.grace);
                    tokio::pin!(grace);
                    while !work.is_empty() {
                        tokio::select! {
                            Some(_) = work.join_next() => {}
                            Some(reply) = outbox.recv() => { let _ = socket.send(reply).await; }
                            _ = &mut grace => break,
                        }
                    }
                    while let Ok(reply) = outbox.try_recv() {
                        let _ = socket.send(reply).await;
                    }
                    if let Some(m) = message(vec![Bytes::from_static(BYE)]) {
                        let _ = socket.send(m).await;
                    }
                    break 'connection;
                }
            }
        }
    }
    agents.logout_all().await;
    tracing::info!("worker stopped");
    Ok(())
}
