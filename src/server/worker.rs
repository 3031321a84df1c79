//! `vpoller worker`: runs requests for a proxy, many at once, with one
//! vSphere session per agent shared by all of them (see [`super::broker`]
//! for the protocol). A proxy that goes silent is reconnected to, so a
//! restarted proxy is found again.

use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::broker::{BYE, HEARTBEAT, READY, REPLY, REQUEST};
use super::config::Config;
use super::dispatch::Dispatcher;
use super::wire::{CLIENT_LIMITS, CLOSE_LINGER, Management, spawn_management};
use super::zsocket::{Kind, ZSocket};
use crate::agents::RegistryAgents;
use crate::methods::MethodDirs;

struct WorkerStatus {
    dispatcher: Arc<Dispatcher>,
    agents: Arc<RegistryAgents>,
    config: Config,
    capacity: usize,
    nats: Option<Arc<super::nats::NatsStats>>,
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
            "nats": self.nats.as_ref().map(|n| n.to_json()),
        })
    }

    fn reload(&self) -> Value {
        let catalog = self.dispatcher.host().reload();
        json!({"methods": catalog.methods.len(), "method_problems": catalog.problems, "agents_error": self.agents.refresh().err()})
    }
}

/// Connects to the proxy and says how many requests this worker takes.
/// libzmq connects in the background: a proxy that is not up yet is found
/// when it comes, and a silent one makes the caller start again.
fn connect(endpoint: &str, capacity: usize) -> Result<ZSocket, String> {
    let socket = ZSocket::connect(Kind::Dealer, endpoint, CLIENT_LIMITS)?;
    socket.send(vec![
        Bytes::from_static(READY),
        Bytes::from(capacity.to_string()),
    ]);
    Ok(socket)
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
    let nats = (!config.nats.url.is_empty()).then(|| Arc::new(super::nats::NatsStats::default()));
    let status = Arc::new(WorkerStatus {
        dispatcher: dispatcher.clone(),
        agents: agents.clone(),
        config: config.clone(),
        capacity,
        nats: nats.clone(),
    });
    spawn_management(config.worker_mgmt.clone(), status, stop.clone());
    let backend = super::http::backend(&config, &dispatcher, &agents, nats.clone())?;
    let web = super::http::start(&config, backend, false, stopped.clone()).await?;

    if let Some(stats) = &nats {
        super::nats::worker::serve_worker(
            &config,
            capacity,
            dispatcher.clone(),
            agents.clone(),
            stats.clone(),
            stopped.clone(),
        )
        .await?;
    }
    let mut work = JoinSet::new();
    while nats.is_none() && !*stopped.borrow() {
        if serve_proxy(&config, capacity, &dispatcher, &mut work, &mut stopped).await
            == Connection::Stopped
        {
            break;
        }
    }
    for task in web {
        let _ = task.await;
    }
    agents.logout_all().await;
    tracing::info!("worker stopped");
    Ok(())
}

#[derive(PartialEq, Eq)]
enum Connection {
    /// The proxy went away or silent: connect again.
    Lost,
    /// Told to stop: what was held is finished and answered.
    Stopped,
}

/// One connection to the proxy: requests in, replies and heartbeats out,
/// until the proxy is lost or the worker is told to stop.
async fn serve_proxy(
    config: &Config,
    capacity: usize,
    dispatcher: &Arc<Dispatcher>,
    work: &mut JoinSet<()>,
    stopped: &mut watch::Receiver<bool>,
) -> Connection {
    let heartbeat = config.heartbeat;
    let mut socket = match connect(&config.worker_proxy, capacity) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot connect to the proxy {}: {e}", config.worker_proxy);
            tokio::select! {
                _ = tokio::time::sleep(heartbeat) => return Connection::Lost,
                _ = stopped.changed() => return Connection::Stopped,
            }
        }
    };
    tracing::info!(proxy = %config.worker_proxy, capacity, "connecting to the proxy");
    let mut tick = tokio::time::interval(heartbeat);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            received = socket.recv() => {
                let Some(parts) = received else { return Connection::Lost };
                heard = Instant::now();
                if parts.first().is_some_and(|v| v.as_ref() == REQUEST)
                    && let (Some(client), Some(body)) = (parts.get(1).cloned(), parts.get(2).cloned())
                {
                    let (dispatcher, send) = (dispatcher.clone(), socket.sender());
                    work.spawn(async move {
                        let reply = dispatcher.handle(&body).await;
                        send.send(vec![Bytes::from_static(REPLY), client, Bytes::from(reply)]);
                    });
                }
            }
            Some(_) = work.join_next(), if !work.is_empty() => {}
            _ = tick.tick() => {
                if heard.elapsed() > heartbeat * 3 {
                    tracing::warn!("the proxy went silent; reconnecting");
                    socket.close(Duration::ZERO).await;
                    return Connection::Lost;
                }
                socket.send(vec![Bytes::from_static(HEARTBEAT)]);
            }
            _ = stopped.changed() => {
                // Finish and send what is held, then say goodbye.
                let finished = tokio::time::timeout(config.grace, async {
                    while work.join_next().await.is_some() {}
                })
                .await;
                if finished.is_err() {
                    tracing::warn!(abandoned = work.len(), "grace period over; abandoning requests in flight");
                    work.abort_all();
                }
                socket.send(vec![Bytes::from_static(BYE)]);
                socket.close(CLOSE_LINGER).await;
                return Connection::Stopped;
            }
        }
    }
}
