//! `vpoller daemon`: the frontend and the method host in one process.

use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::watch;

use super::config::Config;
use super::dispatch::Dispatcher;
use super::route::Answerer;
use super::wire::{Management, serve_frontend, serve_management};
use crate::agents::RegistryAgents;
use crate::methods::{MethodDirs, MethodHost};
use crate::vsphere::SessionOptions;

struct DaemonStatus {
    dispatcher: Arc<Dispatcher>,
    agents: Arc<RegistryAgents>,
    config: Config,
}

impl Management for DaemonStatus {
    fn title(&self) -> &str {
        "vpoller daemon"
    }

    fn status(&self) -> Value {
        let catalog = self.dispatcher.host().catalog();
        let (requests, sessions) = activity(&self.dispatcher, &self.agents);
        json!({
            "status": "running",
            "hostname": hostname(),
            "pid": std::process::id(),
            "uptime_seconds": self.dispatcher.started.elapsed().as_secs(),
            "frontend": self.config.proxy_frontend,
            "mgmt": self.config.proxy_mgmt,
            "db": self.config.db,
            "workers": 1,
            "requests": requests,
            "methods": catalog.methods.len(),
            "method_problems": catalog.problems,
            "catalog_generation": catalog.generation,
            "sessions": sessions,
        })
    }

    fn reload(&self) -> Value {
        let catalog = self.dispatcher.host().reload();
        let agents = self.agents.refresh().err();
        json!({"methods": catalog.methods.len(), "method_problems": catalog.problems, "agents_error": agents})
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Stops on SIGTERM or SIGINT.
pub fn stop_on_signals(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot listen for signals");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        let _ = stop.send(true);
    });
}

/// What a process that runs methods needs: the agents of the registry and
/// a dispatcher over a watched method host.
pub(crate) fn method_service(
    config: &Config,
    dirs: MethodDirs,
) -> Result<(Arc<RegistryAgents>, Arc<Dispatcher>), String> {
    let options = SessionOptions {
        index_ttl: config.index_ttl,
        perf: config.perf.clone(),
        mirror: config.mirror.clone(),
        ..SessionOptions::default()
    };
    let agents = Arc::new(
        RegistryAgents::open(&config.db, &config.key_file, config.vsphere_timeout)?
            .with_options(options)
            .with_guard_options(config.guards.clone()),
    );
    agents.keep_current()?;
    let host = MethodHost::new(dirs.clone(), config.limits.clone(), agents.clone());
    if host.catalog().methods.is_empty() {
        return Err(dirs.nothing_loaded());
    }
    host.watch()?;
    Ok((agents, Arc::new(Dispatcher::new(host))))
}

/// The request counters and vSphere sessions, for `status`.
pub(crate) fn activity(dispatcher: &Dispatcher, agents: &RegistryAgents) -> (Value, Value) {
    use std::sync::atomic::Ordering;
    let stats = &dispatcher.stats;
    let requests = json!({
        "in_flight": stats.in_flight.load(Ordering::Relaxed),
        "done": stats.done.load(Ordering::Relaxed),
        "errors_by_method": stats.errors_by_method.lock().map(|e| e.clone()).unwrap_or_default(),
    });
    let sessions: Vec<Value> = agents
        .sessions()
        .into_iter()
        .map(|(hostname, s)| {
            json!({
                "hostname": hostname,
                "logged_in": s.session().is_logged_in(),
                "logins": s.session().logins(),
                "soap_calls": s.session().calls(),
                "request_soap_calls": s.request_calls(),
                "perf": s.perf_stats(),
                "mirror": s.mirror_status(),
            })
        })
        .collect();
    (requests, Value::Array(sessions))
}

/// Runs until SIGTERM, SIGINT or a `shutdown` on the management socket;
/// then finishes the requests in flight and logs out of every session.
/// With `[nats] url` it runs no methods: its frontends forward to NATS.
pub async fn run(config: Config, dirs: MethodDirs) -> Result<(), String> {
    if !config.nats.url.is_empty() {
        return super::nats::frontend::run(config, "vpoller daemon").await;
    }
    let (agents, dispatcher) = method_service(&config, dirs)?;
    let (stop, stopped) = watch::channel(false);
    stop_on_signals(stop.clone());
    let status = Arc::new(DaemonStatus {
        dispatcher: dispatcher.clone(),
        agents: agents.clone(),
        config: config.clone(),
    });
    super::wire::reload_on_hangup(status.clone());
    let backend = super::http::backend(&config, &dispatcher, &agents, None)?;
    let web = super::http::start(&config, backend, true, stopped.clone()).await?;
    let mgmt_endpoint = config.proxy_mgmt.clone();
    let mgmt_stop = stop.clone();
    let mgmt =
        tokio::spawn(async move { serve_management(&mgmt_endpoint, status, mgmt_stop).await });
    let served = serve_frontend(
        &config.proxy_frontend,
        Answerer::Here(dispatcher),
        stopped,
        config.grace,
    )
    .await;
    let _ = stop.send(true);
    if let Ok(Err(e)) = mgmt.await {
        tracing::error!("{e}");
    }
    for task in web {
        let _ = task.await;
    }
    agents.logout_all().await;
    tracing::info!("stopped");
    served
}
