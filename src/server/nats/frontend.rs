//! `vpoller proxy --nats` and `vpoller daemon --nats`: vPoller's ZeroMQ
//! frontend, and the HTTP one when `[http] listen` is set, for clients;
//! each request forwarded to its agent's workers over NATS. Such a process
//! runs no methods and needs no registry, so several can run side by side.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

use super::forward::Forwarder;
use super::{NatsStats, connect};
use crate::server::config::Config;
use crate::server::route::Answerer;
use crate::server::wire::{Management, serve_frontend, spawn_management};

struct FrontendStatus {
    title: &'static str,
    stats: Arc<NatsStats>,
    config: Config,
    started: Instant,
}

impl Management for FrontendStatus {
    fn title(&self) -> &str {
        self.title
    }

    fn status(&self) -> Value {
        json!({
            "status": "running",
            "hostname": crate::server::daemon::hostname(),
            "pid": std::process::id(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "frontend": self.config.proxy_frontend,
            "mgmt": self.config.proxy_mgmt,
            "request_timeout_seconds": self.config.request_timeout.as_secs_f64(),
            "nats": self.stats.to_json(),
        })
    }

    fn reload(&self) -> Value {
        json!({"note": "this process forwards to NATS and runs no methods; reload its workers"})
    }
}

/// Runs until SIGTERM, SIGINT or `shutdown`; then answers the requests it
/// has forwarded (within `grace`) and exits.
pub async fn run(config: Config, title: &'static str) -> Result<(), String> {
    let (stop, stopped) = watch::channel(false);
    crate::server::daemon::stop_on_signals(stop.clone());
    let stats = Arc::new(NatsStats::default());
    let client = connect(&config.nats, title).await?;
    stats.connected(&client, &config.nats.url);
    let forwarder = Forwarder::start(client, stats.clone(), config.request_timeout).await?;
    let status = Arc::new(FrontendStatus {
        title,
        stats: stats.clone(),
        config: config.clone(),
        started: Instant::now(),
    });
    spawn_management(config.proxy_mgmt.clone(), status, stop.clone());
    let answerer = Answerer::Nats(forwarder);
    let backend = crate::server::http::forwarding_backend(&config, answerer.clone(), stats)?;
    let web = crate::server::http::start(&config, backend, true, stopped.clone()).await?;
    tracing::info!(frontend = %config.proxy_frontend, nats = %config.nats.url, "forwarding to NATS");
    let served = serve_frontend(&config.proxy_frontend, answerer, stopped, config.grace).await;
    let _ = stop.send(true);
    for task in web {
        let _ = task.await;
    }
    tracing::info!("stopped");
    served
}
